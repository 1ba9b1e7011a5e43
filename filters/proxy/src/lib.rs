//! Switchyard's proxy-wasm adapter: maps host callbacks to the policy core.
//!
//! Host calls go through [`host`], which never panics: the SDK's own wrappers
//! `panic!` on statuses they do not expect, and a panic traps the VM and
//! takes down every plugin sharing it.

pub mod host;
pub mod router;

/// A fresh random number for per-request choices (seeded from WASI `random_get`).
pub(crate) fn random_u64() -> u64 {
    fastrand::u64(..)
}
