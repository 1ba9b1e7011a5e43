//! Switchyard's proxy-wasm adapter: maps host callbacks to the policy core.
//!
//! Host calls go through [`host`], which never panics: the SDK's own wrappers
//! `panic!` on statuses they do not expect, and a panic traps the VM and
//! takes down every plugin sharing it.

pub mod auth;
pub mod host;
pub mod router;

thread_local! {
    static SPLIT_DRAW: std::cell::Cell<u64> = std::cell::Cell::new(fastrand::u64(..));
}

/// The next draw for a per-request (non-sticky) split: a golden-ratio Weyl
/// sequence from a random start per VM. Unlike independent random numbers,
/// it is equidistributed, so a 90/10 split holds within a request or two of
/// 90/10 over any window, not only on average.
pub(crate) fn next_split_draw() -> u64 {
    SPLIT_DRAW.with(|s| {
        let next = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(next);
        next
    })
}
