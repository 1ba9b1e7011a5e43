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
use switchyard_harness::{FilterSpec, Harness};

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
    /// Run a scenario file and check its expectations.
    Run {
        scenario: PathBuf,
        /// Use this one filter instead of the scenario's chain.
        #[arg(long)]
        filter: Option<PathBuf>,
        /// The configuration for --filter (a file; JSON or text).
        #[arg(long, requires = "filter")]
        config: Option<PathBuf>,
        /// Print one JSON object per request with everything observed.
        #[arg(long)]
        json: bool,
        /// Run it through real Envoy instead ($ENVOY, else `envoy` on the PATH).
        #[arg(long)]
        envoy: bool,
    },
    /// Run a scenario in the harness and in real Envoy and report every difference.
    Diff { scenario: PathBuf },
    /// Send many requests through a filter and report the outcome distribution.
    Replay {
        #[arg(long)]
        filter: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Requests as JSONL (`{"headers": {...}, "body": "..."}` per line); otherwise generated.
        #[arg(long)]
        requests: Option<PathBuf>,
        /// How many requests to generate (GET / with x-user-id: user-N).
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Group outcomes by this header of the request as the upstream received it (else by status).
        #[arg(long)]
        by: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            scenario,
            filter,
            config,
            json,
            envoy,
        } => run(scenario, filter, config, json, envoy),
        Command::Diff { scenario } => diff(scenario),
        Command::Replay {
            filter,
            config,
            requests,
            count,
            by,
        } => replay(filter, config, requests, count, by),
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
) -> ExitCode {
    let loaded = Scenario::load(&path).and_then(|mut s| {
        if let Some(f) = filter {
            s.with_single_filter(f, read_config(config)?);
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
        println!("DIFF  {d}");
    }
    println!(
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
            println!("{v}");
        } else if fails.is_empty() {
            println!("PASS  {}", entry.name);
        } else {
            println!("FAIL  {}", entry.name);
            for f in &fails {
                println!("        {f}");
            }
        }
        failed += usize::from(!fails.is_empty());
    }
    if !json {
        println!("{} passed, {failed} failed", observations.len() - failed);
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
    if let Err(e) = h.add_filter(FilterSpec::new(&filter).config(config)) {
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
    println!(
        "{:<30} {:>8} {:>7}",
        by.as_deref().unwrap_or("status"),
        "requests",
        "share"
    );
    for (k, v) in &outcomes {
        println!("{k:<30} {v:>8} {:>6.2}%", *v as f64 * 100.0 / n as f64);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} requests in {secs:.2} s ({:.0} requests/s)",
        entries.len(),
        entries.len() as f64 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}
