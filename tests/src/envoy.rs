//! A real Envoy process for one test: started from a [`Bootstrap`] on ports
//! the OS picks, waited on until ready, killed on drop.

use crate::bootstrap::Bootstrap;
use crate::paths::{envoy_binary, envoy_executable, project_root};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    /// Worker threads (`--concurrency`).
    pub workers: u32,
    pub admin_port: u16,
    /// The first listener's port.
    pub port: u16,
}

const START_TIMEOUT: Duration = Duration::from_secs(60);

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
        Self::launch(
            bootstrap,
            Command::new(envoy_binary()),
            START_TIMEOUT,
            CONCURRENCY,
        )
    }

    /// Starts Envoy with `workers` worker threads (each with its own VMs),
    /// as a gateway runs one per core.
    pub fn start_with_workers(bootstrap: &Bootstrap, workers: u32) -> Self {
        Self::launch(
            bootstrap,
            Command::new(envoy_binary()),
            START_TIMEOUT,
            workers,
        )
        .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"))
    }

    /// Root contexts each Wasm filter has here: one per worker and the main
    /// thread's (see [`ROOT_CONTEXTS`]).
    pub fn root_contexts(&self) -> u64 {
        u64::from(self.workers) + 1
    }

    /// Starts the Envoy executable under `wrapper` (e.g. `valgrind
    /// --tool=callgrind`), which may make it many times slower to start;
    /// [`Envoy::pid`] is then the wrapper's, which for valgrind is Envoy's.
    pub fn start_under(bootstrap: &Bootstrap, wrapper: &[&str], timeout: Duration) -> Self {
        let (program, args) = wrapper.split_first().expect("a wrapper command");
        let mut command = Command::new(program);
        command.args(args).arg(envoy_executable());
        Self::launch(bootstrap, command, timeout, CONCURRENCY)
            .unwrap_or_else(|log| panic!("Envoy did not start under {program}:\n{log}"))
    }

    fn launch(
        bootstrap: &Bootstrap,
        mut command: Command,
        start_timeout: Duration,
        workers: u32,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bootstrap.json");
        bootstrap.for_this_run().write(&config);
        let admin_file = dir.path().join("admin-address");
        let log = dir.path().join("envoy.log");
        let child = command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &workers.to_string()])
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .args(["--component-log-level", "wasm:info"])
            // Log lines reach the file within 100 ms, for tests that read it.
            .args(["--file-flush-interval-msec", "100"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-path")
            .arg(&log)
            .current_dir(project_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", command.get_program()))?;
        let mut envoy = Self {
            child,
            dir,
            workers,
            admin_port: 0,
            port: 0,
        };
        let deadline = Instant::now() + start_timeout;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("Envoy exited with {status}:\n{}", envoy.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy not ready after {start_timeout:?}:\n{}",
                    envoy.logs()
                ));
            }
            if envoy.admin_port == 0 {
                envoy.admin_port = read_admin_port(&admin_file).unwrap_or(0);
            }
            if envoy.admin_port != 0 && envoy.admin_get("/ready").is_some_and(|(s, _)| s == 200) {
                envoy.port = envoy
                    .listener_port()
                    .ok_or_else(|| format!("no listener port:\n{}", envoy.logs()))?;
                return Ok(envoy);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `envoy --mode validate` on a bootstrap file (from the project root).
    pub fn validate(config: &Path) -> Result<String, String> {
        let out = Command::new(envoy_binary())
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

    /// The working folder of this run (bootstrap, log; a profiler's output).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Envoy process id (for resident-memory readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Envoy's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
            Ok(r) => Some((r.status(), r.into_string().ok()?)),
            Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
            Err(_) => None,
        }
    }

    fn listener_port(&self) -> Option<u16> {
        let (_, body) = self.admin_get("/listeners?format=json")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let port = v.pointer("/listener_statuses/0/local_address/socket_address/port_value")?;
        u16::try_from(port.as_u64()?).ok()
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

fn read_admin_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().rsplit(':').next()?.parse().ok()
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
