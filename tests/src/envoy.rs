//! A real Envoy process for one test: started from a [`Bootstrap`] on ports
//! the OS picks, waited on until ready, killed on drop.

use crate::bootstrap::Bootstrap;
use crate::paths::project_root;
use envoy_launcher::{envoy_binary, Launch};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A test's Envoy: [`envoy_launcher::Envoy`] (ports, log, admin; killed on
/// drop) started from a [`Bootstrap`] in the project root, plus what tests
/// read from it.
pub struct Envoy(envoy_launcher::Envoy);

impl std::ops::Deref for Envoy {
    type Target = envoy_launcher::Envoy;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Worker threads every test Envoy runs.
pub const CONCURRENCY: u32 = 1;

/// Root contexts (and so VMs) each Wasm filter has in a test Envoy: Envoy
/// configures a plugin on the main thread first (how a bad configuration
/// stops start-up) and keeps that root running, then one per worker.
pub const ROOT_CONTEXTS: u64 = CONCURRENCY as u64 + 1;

impl Envoy {
    /// Starts Envoy and waits until it is ready; panics with Envoy's log if it is not.
    pub fn start(bootstrap: &Bootstrap) -> Self {
        Self::try_start(bootstrap).unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"))
    }

    /// Starts Envoy; `Err(log)` when it exits or never becomes ready.
    pub fn try_start(bootstrap: &Bootstrap) -> Result<Self, String> {
        Self::launch(bootstrap, Launch::new().workers(CONCURRENCY))
    }

    /// Starts Envoy with `workers` worker threads (each with its own VMs),
    /// as a gateway runs one per core.
    pub fn start_with_workers(bootstrap: &Bootstrap, workers: u32) -> Self {
        Self::launch(bootstrap, Launch::new().workers(workers))
            .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"))
    }

    /// Root contexts each Wasm filter has here: one per worker and the main
    /// thread's (see [`ROOT_CONTEXTS`]).
    pub fn root_contexts(&self) -> u64 {
        u64::from(self.workers) + 1
    }

    /// Starts the Envoy executable under `wrapper` (e.g. `valgrind
    /// --tool=callgrind`), which may make it many times slower to start.
    pub fn start_under(bootstrap: &Bootstrap, wrapper: &[&str], timeout: Duration) -> Self {
        let launch = Launch::new().workers(CONCURRENCY).under(wrapper);
        Self::launch(bootstrap, launch.start_timeout(timeout))
            .unwrap_or_else(|log| panic!("Envoy did not start under {wrapper:?}:\n{log}"))
    }

    fn launch(bootstrap: &Bootstrap, launch: Launch) -> Result<Self, String> {
        launch
            .current_dir(&project_root())
            .start(&bootstrap.for_this_run().to_json())
            .map(Self)
    }

    /// Runs `envoy --mode validate` on a bootstrap file (from the project root).
    pub fn validate(config: &Path) -> Result<String, String> {
        let out = Command::new(envoy_binary()?)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(config)
            .current_dir(project_root())
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Every counter and gauge from `/stats`, by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let (_, body) = self.admin_get("/stats?format=json").expect("admin /stats");
        let v: serde_json::Value = serde_json::from_str(&body).expect("stats json");
        v["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s["value"].as_u64()?)))
            .collect()
    }

    /// A counter by name (`wasmcustom.` prefix added for Wasm metrics by Envoy).
    pub fn counter(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// Waits until counter `name` reaches `at_least`; panics with Envoy's
    /// log after `limit`. For readiness that Envoy's `/ready` cannot tell
    /// (a filter's key sets loaded) and for work that ends after the
    /// client's answer (mirrors, comparisons).
    pub fn wait_for_counter(&self, name: &str, at_least: u64, limit: Duration) {
        let start = Instant::now();
        loop {
            let value = self.counter(name);
            if value >= at_least {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{name} is {value}, not {at_least}, after {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every root context of the auth filter holds provider
    /// `provider`'s remote key set (one fetched it, the others adopted it
    /// from shared data), so that no request waits for keys.
    pub fn wait_for_key_sets(&self, provider: &str) {
        self.wait_for_counter(
            &format!("wasmcustom.switchyard.auth.{provider}.jwks_ready"),
            self.root_contexts(),
            Duration::from_secs(20),
        );
    }
}

/// A process's resident memory (`VmRSS`, KiB), for the benchmark and the soak.
pub fn resident_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
