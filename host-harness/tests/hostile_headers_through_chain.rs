//! The tests of `hostile_headers.rs` again, each filter replaced by `switchyard.wasm`
//! with its policy as the only section (`through_chain()` tells the two
//! apart by the running binary's name).

#[path = "hostile_headers.rs"]
mod hostile_headers;
