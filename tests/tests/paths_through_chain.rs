//! The tests of `paths.rs` again, each filter replaced by `switchyard.wasm`
//! with its policy as the only section (`through_chain()` tells the two
//! apart by the running binary's name).

#[path = "paths.rs"]
mod paths;
