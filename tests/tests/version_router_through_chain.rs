//! The tests of `version_router.rs` again, each filter replaced by `switchyard.wasm`
//! with its policy as the only section (`through_chain()` tells the two
//! apart by the running binary's name).

#[path = "version_router.rs"]
mod version_router;
