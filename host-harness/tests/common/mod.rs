//! Paths of the modules `make build` produces, and the switch that runs the
//! single-filter tests through `switchyard.wasm`.
#![allow(dead_code)] // Each test binary uses its own part.

use std::path::PathBuf;

pub fn built(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/wasm32-wasip1/release/{name}.wasm"));
    assert!(p.exists(), "{} missing: run `make build`", p.display());
    p
}

/// True in a `<test>_through_chain` target (see Cargo.toml), as for the
/// Envoy tests.
pub use switchyard_tests::bootstrap::through_chain;

/// The module and configuration that run policy `filter` (`auth`,
/// `router`, `timeouts`, `shadow`) with `config`: the single filter,
/// or `switchyard.wasm` with `config` as its only section.
pub fn policy(filter: &str, config: &str) -> (PathBuf, String) {
    if !through_chain() {
        return (built(filter), config.to_owned());
    }
    // A filter and its chain section share the policy's name.
    (built("switchyard"), format!("{{\"{filter}\": {config}}}"))
}

/// `Harness::filter` for a policy, honouring [`through_chain`].
pub trait FilterPolicy {
    fn filter_policy(
        &mut self,
        filter: &str,
        config: &str,
    ) -> Result<&mut switchyard_harness::Harness, switchyard_harness::HarnessError>;
}

impl FilterPolicy for switchyard_harness::Harness {
    fn filter_policy(
        &mut self,
        filter: &str,
        config: &str,
    ) -> Result<&mut switchyard_harness::Harness, switchyard_harness::HarnessError> {
        let (wasm, config) = policy(filter, config);
        self.filter(wasm, &config)
    }
}
