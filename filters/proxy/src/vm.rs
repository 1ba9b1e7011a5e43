//! The module's side of the proxy-wasm ABI 0.2.1: the callbacks the host
//! enters, dispatched to the chain's roots and streams.
//!
//! Why not the SDK's dispatcher: it exports every callback, and Envoy enters
//! each one a module exports (context create, request and response headers,
//! each body chunk, log, done, delete), about 1.4k instructions apiece per
//! request (`make bench`: the floor module with every callback exported is
//! 9.5k over the one with two), while a module that lacks a callback is
//! never entered for it.
//! Each filter crate exports only what its policies use, with
//! [`export_filter!`](crate::export_filter).

use crate::chain::{ChainRoot, ChainStream};
use crate::streams::StreamTable;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// What a stream callback tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue = 0,
    /// Stop here; the policy resumes the stream or has answered it.
    Pause = 1,
}

/// Context ids are small sequential integers: hashing them is not needed.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

pub(crate) type ById<T> = HashMap<u32, T, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct Vm {
    /// Every root of this VM (one per plugin configured on it), by context id.
    roots: ById<Rc<RefCell<ChainRoot>>>,
    /// Live streams, by context id, from create to delete. A stream is out
    /// of its slot (`None`) while one of its callbacks runs: a callback is
    /// a lookup, not a removal and an insertion (0.2k fewer instructions a
    /// request in Envoy's V8, `make bench`).
    streams: StreamTable<Option<ChainStream>>,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::default();
}

fn root(id: u32) -> Option<Rc<RefCell<ChainRoot>>> {
    VM.with(|vm| vm.borrow().roots.get(&id).cloned())
}

/// Room left after every value the host writes: the request's header map
/// gets the chain's writes appended in place (the identity, the version,
/// the timeout headers) without growing, which cost a copy of the whole map.
const RETURN_SLACK: usize = 192;

/// The capacity of a buffer the host wrote `size` bytes into.
pub(crate) fn returned_capacity(size: usize) -> usize {
    size.saturating_add(RETURN_SLACK)
}

/// `proxy_on_memory_allocate`: host-written values become `Vec`s that
/// `host` takes ownership of (with [`returned_capacity`]).
pub fn allocate(size: usize) -> *mut u8 {
    let mut buf = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(returned_capacity(size)));
    buf.as_mut_ptr()
}

/// `proxy_on_context_create`: a root (`parent` 0) or a stream of root `parent`.
pub fn on_context_create(id: u32, parent: u32, new_root: fn() -> ChainRoot) {
    if parent == 0 {
        VM.with(|vm| {
            vm.borrow_mut()
                .roots
                .entry(id)
                .or_insert_with(|| Rc::new(RefCell::new(new_root())));
        });
        return;
    }
    let Some(root) = root(parent) else { return };
    let stream = match root.try_borrow() {
        Ok(root) => root.create_stream(id),
        Err(_) => return,
    };
    VM.with(|vm| vm.borrow_mut().streams.insert(id, Some(stream)));
}

/// `proxy_on_configure`: compiles the plugin's configuration; false rejects it.
pub fn on_configure(id: u32, new_root: fn() -> ChainRoot) -> bool {
    on_context_create(id, 0, new_root);
    let Some(root) = root(id) else { return false };
    let Ok(mut root) = root.try_borrow_mut() else {
        return false;
    };
    let configured = root.on_configure();
    crate::request::forget();
    configured
}

pub fn on_tick(id: u32) {
    if let Some(root) = root(id) {
        if let Ok(mut root) = root.try_borrow_mut() {
            root.on_tick();
        }
        crate::request::forget();
    }
}

/// Runs `call` on stream `id`, taken out of its slot meanwhile: a policy
/// may call the host (a local reply re-enters the response callbacks), and
/// nothing it does can reach this stream's state twice. An unknown stream
/// (created before its root was configured, or already deleted) or one
/// whose callback is running passes untouched.
fn with_stream(id: u32, call: impl FnOnce(&mut ChainStream) -> Action) -> Action {
    let taken = VM.with(|vm| vm.borrow_mut().streams.get_mut(id).and_then(Option::take));
    let Some(mut stream) = taken else {
        return Action::Continue;
    };
    crate::claims::enter(id);
    let action = call(&mut stream);
    crate::request::forget();
    let deleted = VM.with(|vm| match vm.borrow_mut().streams.get_mut(id) {
        Some(slot) => {
            *slot = Some(stream);
            None
        }
        None => Some(stream),
    });
    // Deleted while its callback ran: it ends here, as `on_delete` ends it
    // (its policies let go: a parked stream is unparked, claims forgotten).
    if let Some(mut stream) = deleted {
        finish(id, &mut stream);
    }
    action
}

/// The header count and end-of-stream flag are not needed: every policy
/// reads the map itself and decides on headers alone.
pub fn on_request_headers(id: u32, _num_headers: usize, _end_of_stream: bool) -> Action {
    with_stream(id, |s| s.on_request_headers())
}

pub fn on_response_headers(id: u32, num_headers: usize, end_of_stream: bool) -> Action {
    with_stream(id, |s| s.on_response_headers(num_headers, end_of_stream))
}

/// Envoy enters a module's body callback for every response once it is
/// exported (compare mode needs it), so a response no stream reads passes
/// without its stream being looked up (`make bench`: 0.65k instructions a
/// response for the chain, 0.4k for `shadow.wasm`).
pub fn on_response_body(id: u32, body_size: usize, end_of_stream: bool) -> Action {
    if !ResponseBodyWanted::by_any() {
        return Action::Continue;
    }
    with_stream(id, |s| s.on_response_body(body_size, end_of_stream))
}

pub fn on_response_trailers(id: u32, num_trailers: usize) -> Action {
    if !ResponseBodyWanted::by_any() {
        return Action::Continue;
    }
    with_stream(id, |s| s.on_response_trailers(num_trailers))
}

thread_local! {
    static RESPONSE_READERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Held by a stream policy while it reads its response's body and trailers
/// (shadow's compare mode, from the request until the response is in): the
/// body and trailer callbacks reach the streams only while one is held in
/// this VM. Dropping it lets go, whatever path the stream ends by.
pub(crate) struct ResponseBodyWanted(());

impl ResponseBodyWanted {
    pub(crate) fn new() -> Self {
        RESPONSE_READERS.with(|n| n.set(n.get() + 1));
        Self(())
    }

    fn by_any() -> bool {
        RESPONSE_READERS.with(|n| n.get() > 0)
    }
}

impl Drop for ResponseBodyWanted {
    fn drop(&mut self) {
        RESPONSE_READERS.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// An HTTP call's answer, to the root or stream that sent it.
pub fn on_http_call_response(
    id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    num_trailers: usize,
) {
    if let Some(root) = root(id) {
        if let Ok(mut root) = root.try_borrow_mut() {
            root.on_http_call_response(token, num_headers, body_size);
        }
        crate::request::forget();
        return;
    }
    with_stream(id, |s| {
        s.on_http_call_response(token, num_headers, body_size, num_trailers);
        Action::Continue
    });
}

/// `proxy_on_delete`: the stream is gone; its policies let go of it.
pub fn on_delete(id: u32) {
    let stream = VM.with(|vm| {
        let mut vm = vm.borrow_mut();
        if vm.roots.remove(&id).is_some() {
            // What its streams counted reaches the host before it goes.
            crate::counter_batch::flush();
            return None;
        }
        vm.streams.remove(id).flatten()
    });
    if let Some(mut stream) = stream {
        finish(id, &mut stream);
    }
}

/// The stream's policies let go of it; nothing calls it again.
fn finish(id: u32, stream: &mut ChainStream) {
    crate::claims::enter(id);
    stream.on_done();
    crate::request::forget();
    crate::claims::forget_stream(id);
}

/// Exports the ABI marker, the allocator, configure, context create and
/// delete, and the stream and root callbacks named, e.g.
/// `export_filter!(router::filter; request_headers, response_headers);`.
/// Envoy enters only what a module exports, so a filter names just the
/// callbacks its policies implement.
#[macro_export]
macro_rules! export_filter {
    ($new_root:path; $($callback:ident),* $(,)?) => {
        #[no_mangle]
        pub extern "C" fn proxy_abi_version_0_2_1() {}

        #[no_mangle]
        pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
            $crate::vm::allocate(size)
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
            $crate::vm::on_context_create(id, parent, $new_root)
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_configure(id: u32, _size: usize) -> u32 {
            u32::from($crate::vm::on_configure(id, $new_root))
        }

        #[no_mangle]
        pub extern "C" fn proxy_on_delete(id: u32) {
            $crate::vm::on_delete(id)
        }

        $( $crate::export_filter!(@callback $callback); )*
    };
    (@callback request_headers) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_request_headers(id: u32, n: usize, eos: u32) -> u32 {
            $crate::vm::on_request_headers(id, n, eos != 0) as u32
        }
    };
    (@callback response_headers) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_response_headers(id: u32, n: usize, eos: u32) -> u32 {
            $crate::vm::on_response_headers(id, n, eos != 0) as u32
        }
    };
    (@callback response_body) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_response_body(id: u32, size: usize, eos: u32) -> u32 {
            $crate::vm::on_response_body(id, size, eos != 0) as u32
        }
    };
    (@callback response_trailers) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_response_trailers(id: u32, n: usize) -> u32 {
            $crate::vm::on_response_trailers(id, n) as u32
        }
    };
    (@callback http_call_response) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_http_call_response(
            id: u32,
            token: u32,
            headers: usize,
            body: usize,
            trailers: usize,
        ) {
            $crate::vm::on_http_call_response(id, token, headers, body, trailers)
        }
    };
    (@callback tick) => {
        #[no_mangle]
        pub extern "C" fn proxy_on_tick(id: u32) {
            $crate::vm::on_tick(id)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::ResponseBodyWanted;

    #[test]
    fn bodies_reach_streams_while_any_reader_holds_on() {
        assert!(!ResponseBodyWanted::by_any());
        let first = ResponseBodyWanted::new();
        let second = ResponseBodyWanted::new();
        drop(first);
        assert!(ResponseBodyWanted::by_any(), "one reader still recording");
        let mut pair = Some((7u64, second));
        pair.take();
        assert!(!ResponseBodyWanted::by_any(), "the last reader let go");
    }
}
