//! One Envoy process: started from a bootstrap, waited on until ready, its
//! log kept, killed on drop.

use crate::binary::{envoy_binary, envoy_executable};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to start Envoy; [`Launch::start`] starts it.
#[derive(Debug, Clone)]
pub struct Launch {
    workers: u32,
    component_log_level: String,
    start_timeout: Duration,
    current_dir: Option<PathBuf>,
    wrapper: Vec<OsString>,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            workers: 1,
            component_log_level: "wasm:info".into(),
            start_timeout: Duration::from_secs(60),
            current_dir: None,
            wrapper: Vec::new(),
        }
    }
}

impl Launch {
    /// One worker, Wasm logs at `info` (everything else at `warn`), 60 s to
    /// become ready, [`envoy_binary`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Worker threads (`--concurrency`), each with its own Wasm VMs.
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// `--component-log-level`, e.g. `wasm:trace` to see every host call.
    pub fn component_log_level(mut self, level: &str) -> Self {
        self.component_log_level = level.to_owned();
        self
    }

    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The folder Envoy runs in, against which the bootstrap's relative
    /// paths (Wasm modules, certificates) are read.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.current_dir = Some(dir.to_owned());
        self
    }

    /// Runs [`envoy_executable`] under `wrapper` (e.g. `valgrind
    /// --tool=callgrind`); [`Envoy::pid`] is then the wrapper's, which for
    /// valgrind is Envoy's. Give it a longer [`Launch::start_timeout`].
    pub fn under(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(OsString::from).collect();
        self
    }

    /// Starts Envoy on `bootstrap` (JSON or YAML text) and waits until it is
    /// ready; `Err` carries Envoy's log when it exits or is not ready in time.
    pub fn start(self, bootstrap: &str) -> Result<Envoy, String> {
        let mut command = match self.wrapper.split_first() {
            None => Command::new(envoy_binary()?),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(envoy_executable()?);
                c
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("switchyard-envoy-")
            .tempdir()
            .map_err(|e| format!("no scratch folder for Envoy: {e}"))?;
        let config = dir.path().join("bootstrap.json");
        let admin_file = dir.path().join("admin-address");
        std::fs::write(&config, bootstrap).map_err(|e| format!("write bootstrap: {e}"))?;
        command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &self.workers.to_string()])
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .args(["--component-log-level", &self.component_log_level])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cwd) = &self.current_dir {
            command.current_dir(cwd);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|stderr| {
            let sink = log.clone();
            std::thread::spawn(move || keep_log(stderr, &sink))
        });
        let mut envoy = Envoy {
            child,
            dir,
            log,
            reader,
            workers: self.workers,
            admin_port: 0,
            port: 0,
        };
        let deadline = Instant::now() + self.start_timeout;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                // The last lines may still be in the pipe.
                if let Some(reader) = envoy.reader.take() {
                    let _ = reader.join();
                }
                return Err(format!("Envoy exited with {status}:\n{}", envoy.logs()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy not ready after {:?}:\n{}",
                    self.start_timeout,
                    envoy.logs()
                ));
            }
            if envoy.admin_port == 0 {
                envoy.admin_port = read_admin_port(&admin_file).unwrap_or(0);
            }
            if envoy.admin_port != 0 && envoy.admin_get("/ready").is_some_and(|(s, _)| s == 200) {
                envoy.port = envoy
                    .listener_port()
                    .ok_or_else(|| format!("Envoy has no listener:\n{}", envoy.logs()))?;
                return Ok(envoy);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Appends each line Envoy writes to `sink`. Bytes that are not UTF-8 (a
/// filter may log what a client sent) are replaced, never a reason to stop
/// reading: Envoy would block on a full pipe.
fn keep_log(stderr: impl std::io::Read, sink: &Mutex<String>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&text);
                    if !text.ends_with('\n') {
                        log.push('\n');
                    }
                }
            }
        }
    }
}

/// The admin port Envoy wrote to `--admin-address-path` (`127.0.0.1:PORT`).
fn read_admin_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().rsplit(':').next()?.parse().ok()
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Worker threads (`--concurrency`).
    pub workers: u32,
    pub admin_port: u16,
    /// The first listener's port.
    pub port: u16,
}

impl Envoy {
    /// Envoy's log so far.
    pub fn logs(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How long the log is now: a mark to read what comes after it with
    /// [`Envoy::logs_since`].
    pub fn log_len(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or_default()
    }

    /// The log written since `mark` (an earlier [`Envoy::log_len`]).
    pub fn logs_since(&self, mark: usize) -> String {
        self.log
            .lock()
            .map(|l| l.get(mark..).unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// A GET on the admin interface: status and body, `None` when it does
    /// not answer within 5 s.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
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

    /// This run's folder (bootstrap, admin address; a profiler's output).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id (of the wrapper, when started [`Launch::under`] one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<listener port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_utf8_is_kept_and_reading_goes_on() {
        let sink = Mutex::new(String::new());
        keep_log(&b"first \xff line\nsecond\nlast"[..], &sink);
        assert_eq!(
            sink.into_inner().unwrap(),
            "first \u{fffd} line\nsecond\nlast\n"
        );
    }
}
