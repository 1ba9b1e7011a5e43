//! `make bench`'s Envoy benchmark. Primary figure: instructions per request
//! (callgrind around the Envoy executable, one Envoy per case, each first
//! checked to answer 200), and each case's cost over its baseline in the same
//! run. Secondary: wrk throughput and latency, every case up at once and
//! loaded in turn, A B C … A B C …, so drift hits every case alike. Writes
//! `bench/results.json` and `bench/results.md`.
//!
//!   bench [--only case,case] [--requests N] [--warmup N] [--jobs J]
//!         [--no-load] [--rounds N] [--seconds S] [--connections C]

use serde_json::{json, Value};
use std::sync::Mutex;
use switchyard_tests::bench::{self, callgrind, wrk, Case, Load, PATH};
use switchyard_tests::{paths, Backend, Envoy};

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
        .unwrap_or(default)
}

/// Instructions per request over a case's baseline: the targets of issue 16.
/// Each with the floor module making the same host calls with no logic:
/// what is left over it is the filter's own code.
const TARGETS: &[(&str, Target)] = &[
    (
        "router",
        Target::AtMost(40_000.0, "lua_router", "floor_router_calls"),
    ),
    (
        "timeouts",
        Target::AtMost(40_000.0, "", "floor_timeouts_calls"),
    ),
    ("shadow", Target::AtMost(40_000.0, "", "")),
    (
        "auth_rs256_cached",
        Target::AtMost(40_000.0, "", "floor_auth_calls"),
    ),
    (
        "switchyard_chain",
        Target::AtMost(f64::INFINITY, "native_chain", "floor_chain_calls"),
    ),
    (
        "switchyard_chain_batched",
        Target::AtMost(f64::INFINITY, "native_chain", "floor_chain_calls"),
    ),
];

/// At most this many instructions over the baseline, and (when named) at
/// most the named peer's; the last name is the case making its host calls alone.
enum Target {
    AtMost(f64, &'static str, &'static str),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests = arg(&args, "--requests", 1000);
    let warmup = arg(&args, "--warmup", 300);
    let jobs = arg(&args, "--jobs", 2).max(1);
    let backend = Backend::fast("v1");
    let cases = bench::selected(bench::cases(), &args);
    assert!(!cases.is_empty(), "no case matches --only");

    let counted: Vec<&Case> = cases
        .iter()
        .filter(|c| matches!(c.load, Load::Fixed(_)))
        .collect();
    eprintln!(
        "counting instructions: {} cases, {warmup} warm-up + {requests} requests each, {jobs} at a time…",
        counted.len()
    );
    let counts: Mutex<Vec<(usize, f64)>> = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(case) = counted.get(i) else { break };
                let count = callgrind::count(
                    case,
                    &bench::bootstrap(case, backend.port),
                    warmup,
                    requests,
                );
                eprintln!(
                    "  {:<24} {:>9.0} instructions/request on the worker, {:>9.0} on every thread",
                    case.name, count.instructions_per_request, count.all_threads_per_request
                );
                counts
                    .lock()
                    .unwrap()
                    .push((i, count.instructions_per_request));
            });
        }
    });
    let mut counts = counts.into_inner().unwrap();
    counts.sort_by_key(|(i, _)| *i);
    let per_request = |name: &str| {
        counted
            .iter()
            .zip(&counts)
            .find(|(c, _)| c.name == name)
            .map(|(_, (_, n))| *n)
    };
    let instruction_rows: Vec<Value> = counted
        .iter()
        .zip(&counts)
        .map(|(case, (_, n))| {
            let over = per_request(case.baseline).map(|b| n - b);
            json!({
                "case": case.name, "what": case.what, "baseline": case.baseline,
                "instructions_per_request": n.round(),
                "over_baseline": over.map(f64::round),
            })
        })
        .collect();
    let over = |name: &str| -> Option<f64> {
        let case = counted.iter().find(|c| c.name == name)?;
        Some(per_request(name)? - per_request(case.baseline)?)
    };
    let targets: Vec<Value> = TARGETS
        .iter()
        .filter_map(|(name, Target::AtMost(limit, peer, calls))| {
            let actual = over(name)?;
            let calls_over = (!calls.is_empty()).then(|| over(calls)).flatten();
            let peer_over = (!peer.is_empty()).then(|| over(peer)).flatten();
            // A target against a peer that was not measured (`--only`) is not met.
            let met =
                actual <= *limit && (peer.is_empty() || peer_over.is_some_and(|p| actual <= p));
            let mut what = Vec::new();
            if limit.is_finite() {
                what.push(format!("≤ {}k", limit / 1000.0));
            }
            if !peer.is_empty() {
                what.push(format!("≤ {peer}"));
            }
            Some(json!({
                "case": name, "target": what.join(" and "), "over_baseline": actual.round(),
                "peer_over_baseline": peer_over.map(f64::round),
                "host_calls_over_baseline": calls_over.map(f64::round),
                "own_code": calls_over.map(|c| (actual - c).round()), "met": met
            }))
        })
        .collect();

    let load = if args.iter().any(|a| a == "--no-load") {
        Value::Null
    } else {
        load_run(&cases, &backend, &args)
    };

    let budget = |name: &str| size_budget(name);
    let size = |name: &str| std::fs::metadata(paths::wasm(name)).map_or(0, |m| m.len());
    let sizes: Vec<Value> = ["router", "auth", "timeouts", "shadow", "switchyard"]
        .iter()
        .map(|name| {
            json!({"wasm": format!("{name}.wasm"), "bytes": size(name), "budget_bytes": budget(name),
                   "met": budget(name).is_none_or(|b| size(name) <= b)})
        })
        .collect();
    let report = json!({
        "machine": bench::machine(),
        "instructions": {
            "settings": {"tool": "valgrind --tool=callgrind --smc-check=all-non-file",
                         "warmup": warmup, "requests": requests, "envoy_concurrency": 1,
                         "path": PATH, "connection": "one keep-alive connection"},
            "cases": instruction_rows,
            "targets": targets,
        },
        "load": load,
        "wasm_sizes": sizes,
    });
    let out = paths::project_root().join("bench");
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report).unwrap() + "\n",
    )
    .expect("write bench/results.json");
    let md = markdown(&report);
    std::fs::write(out.join("results.md"), &md).expect("write bench/results.md");
    println!("{md}");
}

/// A filter's size budget: `make` exports it; run alone, read the Makefile's line.
fn size_budget(name: &str) -> Option<u64> {
    let var = format!("BUDGET_{name}");
    if let Some(v) = std::env::var(&var).ok().and_then(|v| v.parse().ok()) {
        return Some(v);
    }
    let makefile = std::fs::read_to_string(paths::project_root().join("Makefile")).ok()?;
    makefile.lines().find_map(|l| {
        let rest = l.strip_prefix("export ")?.trim_start().strip_prefix(&var)?;
        rest.trim_start().strip_prefix(":=")?.trim().parse().ok()
    })
}

/// wrk against every case at once, rounds interleaved; medians.
fn load_run(cases: &[Case], backend: &Backend, args: &[String]) -> Value {
    let rounds = arg(args, "--rounds", 3);
    let seconds = arg(args, "--seconds", 5);
    let connections = arg(args, "--connections", 16);
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("load: starting {} Envoys (one per case)…", cases.len());
    let envoys: Vec<Envoy> = cases
        .iter()
        .map(|case| Envoy::start(&bench::bootstrap(case, backend.port)))
        .collect();
    for (case, envoy) in cases.iter().zip(&envoys) {
        let warm = wrk::run(&envoy.url(PATH), &case.load, 1, connections, dir.path());
        assert_eq!(warm.non_2xx, 0, "{}: non-2xx answers under load", case.name);
    }
    let mut runs: Vec<Vec<wrk::Run>> = vec![Vec::new(); cases.len()];
    for round in 1..=rounds {
        for (i, (case, envoy)) in cases.iter().zip(&envoys).enumerate() {
            let run = wrk::run(
                &envoy.url(PATH),
                &case.load,
                seconds,
                connections,
                dir.path(),
            );
            assert_eq!(run.non_2xx, 0, "{}: non-2xx answers under load", case.name);
            eprintln!(
                "round {round}/{rounds} {:<26} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
                case.name, run.rps, run.p50_ms, run.p99_ms
            );
            runs[i].push(run);
        }
    }
    let rps = |runs: &[wrk::Run]| wrk::median(runs.iter().map(|r| r.rps).collect());
    let baseline_rps = rps(&runs[0]);
    let baseline_rss = wrk::rss_mb(envoys[0].pid());
    let rows: Vec<Value> = cases
        .iter()
        .zip(&envoys)
        .zip(&runs)
        .map(|((case, envoy), runs)| {
            let rss = wrk::rss_mb(envoy.pid());
            json!({
                "case": case.name,
                "rps": rps(runs).round(),
                "rps_runs": runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
                "ratio_to_baseline": (rps(runs) / baseline_rps * 1000.0).round() / 1000.0,
                "p50_ms": (wrk::median(runs.iter().map(|r| r.p50_ms).collect()) * 100.0).round() / 100.0,
                "p99_ms": (wrk::median(runs.iter().map(|r| r.p99_ms).collect()) * 100.0).round() / 100.0,
                "rss_mb": (rss * 10.0).round() / 10.0,
                "rss_over_baseline_mb": ((rss - baseline_rss) * 10.0).round() / 10.0,
            })
        })
        .collect();
    json!({
        "settings": {"rounds": rounds, "seconds": seconds, "connections": connections,
                     "wrk_threads": 1, "envoy_concurrency": 1, "path": PATH},
        "cases": rows,
    })
}

fn thousands(v: &Value) -> String {
    v.as_f64()
        .map_or("–".into(), |n| format!("{:.1}k", n / 1000.0))
}

fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let i = &r["instructions"];
    let mut s = format!(
        "Measured {} at {} on {} ({} cores, Linux {}), Envoy {}.\n\n\
         **Instructions per request** (primary): Envoy's executable under `{}`, one Envoy per case \
         (`--concurrency 1`), {} warm-up requests, counters zeroed, then {} requests on one \
         keep-alive connection; the worker thread is counted (repeats within 0.3 % between runs).\n\n",
        m["date"].as_str().unwrap_or(""),
        m["commit"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["kernel"].as_str().unwrap_or(""),
        m["envoy"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .nth(2)
            .unwrap_or("envoy"),
        i["settings"]["tool"].as_str().unwrap_or(""),
        i["settings"]["warmup"],
        i["settings"]["requests"],
    );
    s.push_str("| case | what | instructions/request | over its baseline |\n|---|---|---:|---:|\n");
    for c in i["cases"].as_array().into_iter().flatten() {
        let over = if c["case"] == c["baseline"] {
            "(baseline)".to_owned()
        } else {
            format!(
                "+{} ({})",
                thousands(&c["over_baseline"]),
                c["baseline"].as_str().unwrap_or("")
            )
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            c["case"].as_str().unwrap_or(""),
            c["what"].as_str().unwrap_or(""),
            thousands(&c["instructions_per_request"]),
            over
        ));
    }
    s.push_str(
        "\n| target (instructions over baseline) | actual | peer | its host calls alone | its own code | met |\n|---|---:|---:|---:|---:|---|\n",
    );
    let plus = |v: &Value| {
        if v.is_null() {
            String::new()
        } else {
            format!("+{}", thousands(v))
        }
    };
    for t in i["targets"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} {} | +{} | {} | {} | {} | {} |\n",
            t["case"].as_str().unwrap_or(""),
            t["target"].as_str().unwrap_or(""),
            thousands(&t["over_baseline"]),
            plus(&t["peer_over_baseline"]),
            plus(&t["host_calls_over_baseline"]),
            plus(&t["own_code"]),
            if t["met"] == true { "yes" } else { "**no**" }
        ));
    }
    for w in r["wasm_sizes"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} ≤ {} bytes (size budget) | {} bytes | | | | {} |\n",
            w["wasm"].as_str().unwrap_or(""),
            w["budget_bytes"],
            w["bytes"],
            if w["met"] == true { "yes" } else { "**no**" }
        ));
    }
    let l = &r["load"];
    if l.is_object() {
        s.push_str(&format!(
            "\n**Throughput** (secondary: swings 30–100 % between identical runs here): wrk 1 thread × {} \
             connections, {} rounds × {} s per case, A B C … interleaved; medians.\n\n",
            l["settings"]["connections"], l["settings"]["rounds"], l["settings"]["seconds"],
        ));
        s.push_str("| case | req/s | vs baseline | p50 ms | p99 ms | RSS MB (Δ) |\n|---|---:|---:|---:|---:|---:|\n");
        for c in l["cases"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "| {} | {} | {:.0}% | {} | {} | {} ({:+}) |\n",
                c["case"].as_str().unwrap_or(""),
                c["rps"],
                c["ratio_to_baseline"].as_f64().unwrap_or(0.0) * 100.0,
                c["p50_ms"],
                c["p99_ms"],
                c["rss_mb"],
                c["rss_over_baseline_mb"].as_f64().unwrap_or(0.0),
            ));
        }
    }
    s
}
