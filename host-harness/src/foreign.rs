//! Foreign functions the harness offers by name, as Envoy does.

use crate::abi::ForeignFunction;
use crate::vm::Host;

pub fn lookup(name: &str) -> Option<ForeignFunction> {
    match name {
        "clear_route_cache" => Some(clear_route_cache),
        _ => None,
    }
}

/// Envoy re-picks the route for the stream; the harness counts it so tests can assert it.
fn clear_route_cache(h: &mut Host, _args: &[u8]) -> Result<Vec<u8>, i32> {
    h.world.borrow_mut().route_cache_clears += 1;
    Ok(Vec::new())
}
