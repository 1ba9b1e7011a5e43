//! `harness`: run Proxy-Wasm filters offline.
//!
//! `harness run SCENARIO.yaml [--filter F.wasm] [--config C.json] [--json]`
//! exits 0 when every expectation holds, 1 when any fails, 2 when the
//! filter or scenario cannot be loaded. `harness replay` sends many requests
//! through a filter and reports the distribution of outcomes.

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_harness::scenario::{Observation, RequestEntry, Scenario};
use switchyard_harness::{ClockStart, FilterSpec, Harness};

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Run Proxy-Wasm filters offline, the way Envoy runs them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario file and check its expectations (exit 0: all hold, 1: some fail, 2: cannot load).
    Run {
        /// The scenario (YAML or JSON); `wasm` paths inside it are relative to its folder.
        scenario: PathBuf,
        /// Use this one filter (a .wasm, relative to the working directory) instead of the scenario's chain.
        #[arg(long, value_name = "WASM")]
        filter: Option<PathBuf>,
        /// The configuration for --filter: a file (relative to the working directory) holding JSON or text [default: none].
        #[arg(long, value_name = "FILE", requires = "filter")]
        config: Option<PathBuf>,
        /// Print one JSON object per request with everything observed, instead of PASS/FAIL lines.
        #[arg(long)]
        json: bool,
        /// Run it through real Envoy instead ($ENVOY, else `envoy` on the PATH); Envoy keeps its wall clock.
        #[arg(long)]
        envoy: bool,
        /// Where the virtual clock starts: `now`, `default` or an RFC 3339 instant [default: the scenario's `clock_start`, else 2026-01-01T00:00:00Z].
        #[arg(long, value_name = "WHEN")]
        clock_start: Option<ClockStart>,
    },
    /// Run a scenario in the harness and in real Envoy and report every difference (exit 1 if any).
    Diff {
        /// The scenario (YAML or JSON); `wasm` paths inside it are relative to its folder.
        scenario: PathBuf,
    },
    /// Send many requests through one filter and report the distribution of outcomes.
    Replay {
        /// The filter (.wasm), relative to the working directory.
        #[arg(long, value_name = "WASM")]
        filter: PathBuf,
        /// Its configuration: a file holding JSON or text [default: none].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Requests as JSONL, one `{"headers": {...}, "body": "..."}` per line, as a scenario's requests [default: generated].
        #[arg(long, value_name = "FILE")]
        requests: Option<PathBuf>,
        /// How many requests to generate when --requests is not given (GET / with x-user-id: user-N).
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        count: usize,
        /// Group outcomes by this header of the request as the upstream received it [default: by status].
        #[arg(long, value_name = "HEADER")]
        by: Option<String>,
        /// Where the virtual clock starts: `now`, `default` or an RFC 3339 instant.
        #[arg(long, value_name = "WHEN", default_value = "default")]
        clock_start: ClockStart,
    },
}

/// `println!` that ends the program quietly when stdout is closed
/// (`harness run --json | head`), as command-line tools do.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("harness: cannot write the output: {e}");
            std::process::exit(2);
        }
    }};
}

/// Command-line paths are relative to where the user stands; only paths
/// written inside a scenario are relative to the scenario's folder.
fn from_cwd(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::env::current_dir().map_or(path.clone(), |cwd| cwd.join(path))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            scenario,
            filter,
            config,
            json,
            envoy,
            clock_start,
        } => run(scenario, filter, config, json, envoy, clock_start),
        Command::Diff { scenario } => diff(scenario),
        Command::Replay {
            filter,
            config,
            requests,
            count,
            by,
            clock_start,
        } => replay(filter, config, requests, count, by, clock_start),
    }
}

fn read_config(path: Option<PathBuf>) -> Result<Value, String> {
    let Some(p) = path else {
        return Ok(Value::Null);
    };
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn run(
    path: PathBuf,
    filter: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
    envoy: bool,
    clock_start: Option<ClockStart>,
) -> ExitCode {
    let loaded = Scenario::load(&path).and_then(|mut s| {
        if let Some(f) = filter {
            s.with_single_filter(from_cwd(f), read_config(config)?);
        }
        if let Some(start) = clock_start {
            s.clock_start = start;
        }
        Ok(s)
    });
    let scenario = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("harness: cannot load scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let observations = if envoy {
        switchyard_harness::envoy::run(&scenario)
    } else {
        scenario.run_in_harness().map_err(|e| e.to_string())
    };
    match observations {
        Ok(o) => report(&scenario, &o, json),
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::from(2)
        }
    }
}

fn diff(path: PathBuf) -> ExitCode {
    let scenario = match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("harness: cannot load scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let both = scenario
        .run_in_harness()
        .map_err(|e| e.to_string())
        .and_then(|h| Ok((h, switchyard_harness::envoy::run(&scenario)?)));
    let (harness, envoy) = match both {
        Ok(b) => b,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::from(2);
        }
    };
    let differences = switchyard_harness::envoy::differences(&harness, &envoy);
    for d in &differences {
        out!("DIFF  {d}");
    }
    out!(
        "{} requests, {} differences (ignoring {})",
        harness.len(),
        differences.len(),
        switchyard_harness::envoy::VOLATILE_HEADERS.join(", ")
    );
    if differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints each request's result; the exit code says whether all held.
fn report(scenario: &Scenario, observations: &[Observation], json: bool) -> ExitCode {
    let mut failed = 0;
    for (entry, obs) in scenario.requests.iter().zip(observations) {
        let fails = obs.check(&entry.expect);
        if json {
            let mut v = serde_json::to_value(obs).unwrap_or_default();
            v["failures"] = fails.clone().into();
            out!("{v}");
        } else if fails.is_empty() {
            out!("PASS  {}", entry.name);
        } else {
            out!("FAIL  {}", entry.name);
            for f in &fails {
                out!("        {f}");
            }
        }
        failed += usize::from(!fails.is_empty());
    }
    if !json {
        out!("{} passed, {failed} failed", observations.len() - failed);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn replay(
    filter: PathBuf,
    config: Option<PathBuf>,
    requests: Option<PathBuf>,
    count: usize,
    by: Option<String>,
    clock_start: ClockStart,
) -> ExitCode {
    let config = match read_config(config) {
        Ok(Value::Null) => Vec::new(),
        Ok(Value::String(s)) => s.into_bytes(),
        Ok(v) => v.to_string().into_bytes(),
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::from(2);
        }
    };
    let entries: Vec<RequestEntry> = match &requests {
        Some(p) => {
            let file = match std::fs::File::open(p) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("harness: {}: {e}", p.display());
                    return ExitCode::from(2);
                }
            };
            let mut out = Vec::new();
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.unwrap_or_default();
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str(&line) {
                    Ok(e) => out.push(e),
                    Err(e) => {
                        eprintln!("harness: {}:{}: {e}", p.display(), i + 1);
                        return ExitCode::from(2);
                    }
                }
            }
            out
        }
        None => (0..count)
            .map(|i| {
                serde_json::from_value(
                    serde_json::json!({"headers": {"x-user-id": format!("user-{i}")}}),
                )
                .expect("valid entry")
            })
            .collect(),
    };
    let mut h = Harness::new();
    h.set_trace(false);
    let added = h
        .start_clock(clock_start)
        .and_then(|()| h.add_filter(FilterSpec::new(from_cwd(filter)).config(config)));
    if let Err(e) = added {
        eprintln!("harness: {e}");
        return ExitCode::from(2);
    }
    let bar = indicatif::ProgressBar::new(entries.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} requests, {per_sec}, eta {eta}",
        )
        .expect("template"),
    );
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let started = std::time::Instant::now();
    for entry in &entries {
        let ex = h.send(Scenario::request(entry));
        let key = match &by {
            Some(name) => ex
                .upstream_header(&name.to_ascii_lowercase())
                .unwrap_or_else(|| {
                    if ex.reached_upstream() {
                        "(absent)".into()
                    } else {
                        format!("(not forwarded: {})", ex.status().unwrap_or(0))
                    }
                }),
            None => ex.status().map_or("(reset)".into(), |s| s.to_string()),
        };
        *outcomes.entry(key).or_default() += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = entries.len().max(1);
    out!(
        "{:<30} {:>8} {:>7}",
        by.as_deref().unwrap_or("status"),
        "requests",
        "share"
    );
    for (k, v) in &outcomes {
        out!("{k:<30} {v:>8} {:>6.2}%", *v as f64 * 100.0 / n as f64);
    }
    let secs = started.elapsed().as_secs_f64();
    out!(
        "{} requests in {secs:.2} s ({:.0} requests/s)",
        entries.len(),
        entries.len() as f64 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}
