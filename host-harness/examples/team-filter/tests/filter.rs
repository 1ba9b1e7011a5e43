//! The team's filter, built for wasm32-wasip1, run in the Switchyard harness:
//! `cargo build --release --target wasm32-wasip1 && cargo test`.

use std::path::PathBuf;
use switchyard_harness::{Harness, Request};

fn wasm() -> PathBuf {
    // Cargo's target folder: this crate's own, or the one CARGO_TARGET_DIR names.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = target.join("wasm32-wasip1/release/team_filter.wasm");
    assert!(
        p.exists(),
        "{} missing: cargo build --release --target wasm32-wasip1",
        p.display()
    );
    p
}

#[test]
fn admin_needs_the_team_token() {
    let mut h = Harness::new();
    h.filter(wasm(), "").unwrap();

    let ex = h.send(Request::get("/admin/users"));
    assert_eq!(ex.status(), Some(403));
    assert!(!ex.reached_upstream());
    assert_eq!(ex.response_header("x-team").as_deref(), Some("platform"));

    let ex = h.send(Request::get("/admin/users").header("x-team-token", "letmein"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.upstream_header("x-team").as_deref(), Some("platform"));
}

#[test]
fn other_paths_pass_with_the_team_header() {
    let mut h = Harness::new();
    h.filter(wasm(), "").unwrap();
    let ex = h.send(Request::get("/reviews/1"));
    assert!(ex.reached_upstream());
    assert_eq!(ex.upstream_header("x-team").as_deref(), Some("platform"));
}
