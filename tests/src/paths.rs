//! Where the project's artefacts live. A missing one is a set-up bug: the
//! message says which `make` target provides it.

use std::path::PathBuf;

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the project root")
        .to_path_buf()
}

/// A filter built by `make build`, e.g. `wasm("router")`;
/// `$SWITCHYARD_WASM_DIR` points at another build (to benchmark one against another).
pub fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_WASM_DIR")
        .map(|d| project_root().join(d))
        .unwrap_or_else(|| project_root().join("target/wasm32-wasip1/release"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

pub fn envoy_config(name: &str) -> PathBuf {
    project_root().join("envoy-config").join(name)
}
