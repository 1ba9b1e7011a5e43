//! Switchyard's policy core.
//!
//! Everything a Switchyard filter decides lives here: configuration types,
//! request matching and the decisions themselves. Nothing in this crate knows
//! about proxy-wasm, so it is unit-tested natively and can be embedded in any
//! host (the proxy-wasm adapter, the harness, a future JavaScript build).

pub mod auth;
pub mod bytes;
pub mod chain;
pub mod claims;
pub mod config;
pub mod headers;
pub mod json;
pub mod json_path;
pub mod matcher;
pub mod path;
pub mod router;
pub mod sampling;
pub mod shadow;
pub mod string_match;
pub mod ticks;
pub mod timeouts;

pub use config::ConfigError;
pub use headers::{HeaderList, RequestHeaders, WithClaims};
