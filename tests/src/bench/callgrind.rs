//! Instructions per request, counted by valgrind's callgrind around the
//! Envoy executable (V8's JIT code included, with `--smc-check=all-non-file`):
//! warm up, zero the counters, send N requests on one keep-alive
//! connection, dump. Unlike throughput on a shared machine, the count
//! repeats within a fraction of a percent between runs.

use super::{Case, Load, PATH};
use crate::{Bootstrap, Envoy};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Envoy under callgrind starts in tens of seconds (V8 compiles each module).
const START_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Count {
    /// On the worker thread, which serves every request (`--concurrency 1`).
    pub instructions_per_request: f64,
    /// On every thread, the main thread's timers included.
    pub all_threads_per_request: f64,
    pub requests: u32,
}

/// Counts `case`'s instructions per request in one Envoy of its own.
pub fn count(case: &Case, bootstrap: &Bootstrap, warmup: u32, requests: u32) -> Count {
    let Load::Fixed(headers) = &case.load else {
        panic!("{}: instruction counts take a fixed request", case.name);
    };
    let out = tempfile::tempdir().expect("tempdir");
    let out_file = format!("--callgrind-out-file={}/callgrind.%p", out.path().display());
    let envoy = Envoy::start_under(
        bootstrap,
        &[
            "valgrind",
            "--tool=callgrind",
            "--smc-check=all-non-file",
            "--dump-instr=no",
            "--collect-jumps=no",
            // One file per thread: the worker that serves the requests is
            // counted, not the main thread's timers (stats flushes), which
            // run by wall time and so drift with the machine's load.
            "--separate-threads=yes",
            &out_file,
        ],
        START_TIMEOUT,
    );
    // One agent: one keep-alive connection for every request.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .max_idle_connections(1)
        .build();
    let url = envoy.url(PATH);
    let send = |n: u32| {
        for i in 0..n {
            let mut req = agent.get(&url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let (status, response) = crate::send(req);
            let body = response.into_string().unwrap_or_default();
            assert_eq!(
                status,
                200,
                "{}: request {i} answered {status}: {body}\n{}",
                case.name,
                envoy.logs()
            );
        }
    };
    send(warmup);
    control(&envoy, "-z");
    send(requests);
    control(&envoy, "-d");
    let threads = read_threads(out.path(), envoy.pid());
    keep_profiles(out.path(), case, headers);
    let Some(worker) = threads.first() else {
        panic!(
            "{}: no callgrind dump in {}",
            case.name,
            out.path().display()
        );
    };
    Count {
        instructions_per_request: *worker as f64 / f64::from(requests),
        all_threads_per_request: threads.iter().sum::<u64>() as f64 / f64::from(requests),
        requests,
    }
}

/// With `SWITCHYARD_BENCH_PROFILES=DIR`, the case's callgrind files are kept
/// in `DIR/<case>/` for `callgrind_annotate` (where the instructions went:
/// V8's JIT code, which is the module's own work, is the object `???`),
/// with `case.json` (its filters and request headers) to replay the same
/// request in the harness under `perf`.
fn keep_profiles(from: &Path, case: &Case, headers: &[(String, String)]) {
    let Some(dir) = std::env::var_os("SWITCHYARD_BENCH_PROFILES") else {
        return;
    };
    let to = Path::new(&dir).join(case.name);
    let _ = std::fs::create_dir_all(&to);
    let described = serde_json::json!({"filters": case.filters, "path": PATH, "headers": headers});
    let _ = std::fs::write(to.join("case.json"), described.to_string());
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
    }
}

fn control(envoy: &Envoy, what: &str) {
    let status = Command::new("callgrind_control")
        .arg(what)
        .arg(envoy.pid().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run callgrind_control (make bench installs valgrind)");
    assert!(status.success(), "callgrind_control {what} failed");
}

/// Instructions in the last dump callgrind wrote for `pid`, per thread
/// (`callgrind.<pid>.<dump>-<thread>`), busiest first.
fn read_threads(dir: &Path, pid: u32) -> Vec<u64> {
    let prefix = format!("callgrind.{pid}.");
    let dumps: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (dump, _thread) = name.strip_prefix(&prefix)?.split_once('-')?;
            Some((dump.parse().ok()?, e.path()))
        })
        .collect();
    let Some(last) = dumps.iter().map(|d| d.0).max() else {
        return Vec::new();
    };
    let mut totals: Vec<u64> = dumps
        .iter()
        .filter(|d| d.0 == last)
        .filter_map(|d| {
            let text = std::fs::read_to_string(&d.1).ok()?;
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("totals:")
                        .or_else(|| l.strip_prefix("summary:"))
                })
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .collect();
    totals.sort_unstable_by(|a, b| b.cmp(a));
    totals
}
