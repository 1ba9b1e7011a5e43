//! `harness`: run Proxy-Wasm filters offline.
//!
//! `harness run SCENARIO.yaml [--filter F.wasm] [--config C.json] [--json]`
//! exits 0 when every expectation holds, 1 when any fails, 2 when the
//! filter or scenario cannot be loaded. `harness replay` sends many requests
//! through a filter and reports the distribution of outcomes.

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_harness::scenario::{Observation, RequestEntry, Scenario};
use switchyard_harness::{impact, ClockStart, FilterSpec, Harness};

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
        /// Run it through real Envoy instead ($ENVOY, else .venv/bin/envoy here or above, else `envoy` on the PATH); Envoy keeps its wall clock.
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
    /// Send many requests through one filter and report the distribution of outcomes, or with
    /// --against, which requests a configuration change changes.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The filter (.wasm), relative to the working directory.
    #[arg(long, value_name = "WASM")]
    filter: PathBuf,
    /// Its configuration (with --against: the new one): a file holding JSON or text [default: none].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The configuration to compare with (the one in service now): every request runs under both
    /// and the requests whose outcome changes are reported.
    #[arg(long, value_name = "FILE")]
    against: Option<PathBuf>,
    /// Requests, one JSON object per line: a scenario's request entry, or a line of Envoy's JSON
    /// access log in the format of envoy-config/fragments/access-log.yaml [default: generated].
    #[arg(long, value_name = "FILE")]
    requests: Option<PathBuf>,
    /// How many requests to generate when --requests is not given (GET / with x-user-id: user-N).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    count: usize,
    /// Group outcomes by this header of the request as the upstream received it [default: by status].
    #[arg(long, value_name = "HEADER", conflicts_with = "against")]
    by: Option<String>,
    /// With --against: print one JSON object per changed request (index, headers, before, after)
    /// and then the summary as JSON, instead of tables.
    #[arg(long)]
    json: bool,
    /// With --against: the header that carries the version.
    #[arg(long, value_name = "HEADER", default_value = "x-version")]
    version_header: String,
    /// With --against: the header that carries the verified identity.
    #[arg(long, value_name = "HEADER", default_value = "end-user")]
    identity_header: String,
    /// Where the virtual clock starts: `now`, `default` or an RFC 3339 instant.
    #[arg(long, value_name = "WHEN", default_value = "default")]
    clock_start: ClockStart,
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
        Command::Replay(args) => replay(args),
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

fn config_bytes(path: Option<PathBuf>) -> Result<Vec<u8>, String> {
    Ok(match read_config(path)? {
        Value::Null => Vec::new(),
        Value::String(s) => s.into_bytes(),
        v => v.to_string().into_bytes(),
    })
}

fn replay(args: ReplayArgs) -> ExitCode {
    let ReplayArgs {
        filter,
        config,
        against,
        requests,
        count,
        by,
        json,
        version_header,
        identity_header,
        clock_start,
    } = args;
    let config = match config_bytes(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::from(2);
        }
    };
    let entries: Vec<RequestEntry> = match &requests {
        Some(p) => match impact::read_requests(&from_cwd(p.clone())) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("harness: {e}");
                return ExitCode::from(2);
            }
        },
        None => (0..count)
            .map(|i| {
                serde_json::from_value(
                    serde_json::json!({"headers": {"x-user-id": format!("user-{i}")}}),
                )
                .expect("valid entry")
            })
            .collect(),
    };
    if let Some(old) = against {
        let old = match config_bytes(Some(old)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("harness: {e}");
                return ExitCode::from(2);
            }
        };
        let fields = impact::Fields {
            version_header: version_header.to_ascii_lowercase(),
            identity_header: identity_header.to_ascii_lowercase(),
        };
        return against_report(
            &from_cwd(filter),
            &old,
            &config,
            &entries,
            &fields,
            clock_start,
            json,
        );
    }
    let mut h = Harness::new();
    h.set_trace(false);
    let added = h
        .start_clock(clock_start)
        .and_then(|()| h.add_filter(FilterSpec::new(from_cwd(filter)).config(config)));
    if let Err(e) = added {
        eprintln!("harness: {e}");
        return ExitCode::from(2);
    }
    let bar = progress_bar(entries.len());
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

fn progress_bar(len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} requests, {per_sec}, eta {eta}",
        )
        .expect("template"),
    );
    bar
}

/// `replay --against`: which requests the new configuration changes, and how.
fn against_report(
    filter: &std::path::Path,
    old: &[u8],
    new: &[u8],
    entries: &[RequestEntry],
    fields: &impact::Fields,
    clock: ClockStart,
    json: bool,
) -> ExitCode {
    let bar = progress_bar(entries.len());
    let report = impact::compare(filter, old, new, entries, fields, clock, || bar.inc(1));
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        for c in &report.changes {
            out!("{}", serde_json::to_string(c).unwrap_or_default());
        }
        let summary = serde_json::json!({
            "requests": report.requests,
            "changed": report.changes.len(),
            "changed_fields": report.changed_fields,
            "by_rule": report.by_rule.iter()
                .map(|((b, a), n)| serde_json::json!({"before": b, "after": a, "requests": n}))
                .collect::<Vec<_>>(),
            "distribution": report.distribution.iter()
                .map(|(field, values)| (field.to_string(), serde_json::Value::Object(values.iter()
                    .map(|(v, (b, a))| (v.clone(), serde_json::json!({"before": b, "after": a})))
                    .collect())))
                .collect::<serde_json::Map<_, _>>(),
        });
        out!("{summary}");
        return ExitCode::SUCCESS;
    }
    let n = report.requests.max(1);
    out!(
        "{} requests, {} change outcome ({:.2}%)",
        report.requests,
        report.changes.len(),
        report.changes.len() as f64 * 100.0 / n as f64
    );
    if report.changes.is_empty() {
        return ExitCode::SUCCESS;
    }
    let fields: Vec<String> = report
        .changed_fields
        .iter()
        .map(|(f, c)| format!("{f} {c}"))
        .collect();
    out!("changed: {}", fields.join(", "));
    for (field, values) in &report.distribution {
        if !report.changed_fields.contains_key(field) {
            continue;
        }
        out!("");
        out!("{field:<30} {:>8} {:>8}", "before", "after");
        for (v, (b, a)) in values {
            out!("{v:<30} {b:>8} {a:>8}");
        }
    }
    out!("");
    out!(
        "{:<8} rule before -> rule after (the counters each request moved)",
        "requests"
    );
    let mut groups: Vec<_> = report.by_rule.iter().collect();
    groups.sort_by(|x, y| y.1.cmp(x.1));
    for ((b, a), count) in groups {
        out!("{count:<8} {b} -> {a}");
    }
    ExitCode::SUCCESS
}
