//! The tests of `router.rs` again, each filter replaced by `switchyard.wasm`
//! with its policy as the only section (`through_chain()` tells the two
//! apart by the running binary's name).

#[path = "router.rs"]
mod router;
