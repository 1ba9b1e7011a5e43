//! Paths of the modules `make build` produces.
use std::path::PathBuf;

pub fn built(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/wasm32-wasip1/release/{name}.wasm"));
    assert!(p.exists(), "{} missing: run `make build`", p.display());
    p
}
