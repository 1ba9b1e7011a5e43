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
    pub instructions_per_request: f64,
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
    let total = read_total(out.path(), envoy.pid()).unwrap_or_else(|| {
        panic!(
            "{}: no callgrind dump in {}",
            case.name,
            out.path().display()
        )
    });
    Count {
        instructions_per_request: total as f64 / f64::from(requests),
        requests,
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

/// The `totals:` (or `summary:`) line of the last dump callgrind wrote for `pid`.
fn read_total(dir: &Path, pid: u32) -> Option<u64> {
    let prefix = format!("callgrind.{pid}.");
    let mut dumps: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    dumps.sort();
    let text = std::fs::read_to_string(&dumps.last()?.1).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
