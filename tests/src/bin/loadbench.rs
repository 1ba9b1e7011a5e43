//! `make bench`'s Envoy load benchmark: the same route table with no extra
//! filter, with each Switchyard filter, with `switchyard.wasm` (all four
//! sections), and with the filters a user would pick instead (a Lua router,
//! Envoy's native `jwt_authn`). One Envoy 1.40 (V8) per case, `--concurrency
//! 1`, all up at once; `wrk` loads them in turn, A B C … A B C …, so drift
//! hits every case alike. Writes `bench/results.json` and `bench/results.md`.
//!
//!   loadbench [--rounds N] [--seconds S] [--connections C] [--only case,case]

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_tests::tokens::{self, mint};
use switchyard_tests::{paths, Backend, Bootstrap, Envoy};

/// A benchmark case: its filters (before Envoy's router) and its requests.
struct Case {
    name: &'static str,
    what: &'static str,
    filters: Vec<Value>,
    load: Load,
}

enum Load {
    /// The same request every time, with these headers.
    Fixed(Vec<(String, String)>),
    /// A different bearer token on each request, from this pool.
    Tokens(Vec<String>),
}

fn wasm(name: &str, file: &str, config: Value) -> Value {
    json!({
        "name": format!("switchyard.{name}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name, "root_id": name, "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": paths::wasm(file).to_string_lossy()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string()
                }
            }
        }
    })
}

/// The router's decision (`end-user: jason` → v2, else v1) as a Lua filter.
fn lua_router() -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": r#"
function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  if headers:get("end-user") == "jason" then
    headers:replace("x-version", "v2")
  else
    headers:replace("x-version", "v1")
  end
  request_handle:clearRouteCache()
end
"#}
        }
    })
}

fn jwt_authn(cache: bool) -> Value {
    let mut provider = json!({
        "issuer": tokens::ISSUER,
        "audiences": [tokens::AUDIENCE],
        "local_jwks": {"inline_string": tokens::jwks().to_string()},
        "forward": true,
        "claim_to_headers": [{"header_name": "end-user", "claim_name": "sub"}]
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 1000});
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"corp": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "corp"}}]
        }
    })
}

fn router_config() -> Value {
    json!({"default_version": "v1", "routes": [
        {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"}]})
}

/// Auth with the test keys inline (no key-set fetch), the identity from `sub`.
fn auth_config(cache_entries: usize) -> Value {
    json!({
        "providers": [{"name": "corp", "jwt": {"issuer": tokens::ISSUER, "audiences": [tokens::AUDIENCE],
            "jwks": tokens::jwks(), "from": [{"header": "authorization", "prefix": "Bearer "}]}}],
        "rules": [{"match": {}, "require": ["corp"]}],
        "identity": {"header": "end-user", "from_claim": "sub"},
        "cache_entries": cache_entries
    })
}

fn timeouts_config() -> Value {
    json!({
        "rules": [{"name": "reviews-v2", "match": {"headers": {"x-version": {"exact": "v2"}}, "path": {"prefix": "/reviews"}},
                   "timeout_ms": 500, "retries": {"attempts": 2, "on": ["5xx", "reset"]}},
                  {"name": "default", "match": {}, "timeout_ms": 3000}],
        "deadline": {"inbound": ["grpc-timeout", "x-request-timeout-ms"], "propagate": "x-request-timeout-ms"},
        "faults": [{"name": "ratings-delay", "match": {"path": {"prefix": "/ratings"}}, "delay": {"fixed_ms": 2000, "percent": 100}}]
    })
}

/// Shadowing /reviews only: the load (/productpage) pays the decision, not a copy.
fn shadow_config() -> Value {
    json!({
        "rules": [{"name": "reviews-compare", "match": {"path": {"prefix": "/reviews"}}, "percent": 100.0,
                   "target_cluster": "v2", "mode": "compare"}],
        "compare": {"timeout_ms": 2000}
    })
}

fn cases() -> Vec<Case> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Valid for the whole run: claims() gives ten minutes; stretch to an hour.
    let claims = |sub: &str| {
        let mut c = tokens::claims(sub, now);
        c["exp"] = json!(now + 3600);
        c
    };
    let rs256 = format!("Bearer {}", mint("RS256", &claims("jason")));
    let pool = |alg: &str| -> Vec<String> {
        (0..2000)
            .map(|i| mint(alg, &claims(&format!("user-{i}"))))
            .collect()
    };
    let fixed = |h: &[(&str, &str)]| {
        Load::Fixed(
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let jason = || fixed(&[("end-user", "jason")]);
    vec![
        Case {
            name: "baseline",
            what: "route table only",
            filters: vec![],
            load: jason(),
        },
        Case {
            name: "version_router",
            what: "version_router.wasm: end-user: jason → v2",
            filters: vec![wasm("version_router", "version_router", router_config())],
            load: jason(),
        },
        Case {
            name: "lua_router",
            what: "peer: the same decision in an Envoy Lua filter",
            filters: vec![lua_router()],
            load: jason(),
        },
        Case {
            name: "timeouts",
            what: "timeouts.wasm: rule match, budget and retry headers",
            filters: vec![wasm("timeouts", "timeouts", timeouts_config())],
            load: jason(),
        },
        Case {
            name: "shadow",
            what: "shadow.wasm: decision only (request not shadowed)",
            filters: vec![wasm("shadow", "shadow", shadow_config())],
            load: jason(),
        },
        Case {
            name: "auth_rs256_cached",
            what: "auth.wasm: one RS256 token (verified once, then cached)",
            filters: vec![wasm("auth", "auth", auth_config(1024))],
            load: fixed(&[("authorization", &rs256)]),
        },
        Case {
            name: "jwt_authn_rs256_cached",
            what: "peer: Envoy jwt_authn, same token, jwt_cache_config on",
            filters: vec![jwt_authn(true)],
            load: fixed(&[("authorization", &rs256)]),
        },
        Case {
            name: "auth_rs256_uncached",
            what: "auth.wasm: 2,000 RS256 tokens in turn, cache of 16",
            filters: vec![wasm("auth", "auth", auth_config(16))],
            load: Load::Tokens(pool("RS256")),
        },
        Case {
            name: "jwt_authn_rs256_uncached",
            what: "peer: Envoy jwt_authn, same 2,000 tokens, no cache",
            filters: vec![jwt_authn(false)],
            load: Load::Tokens(pool("RS256")),
        },
        Case {
            name: "auth_hs256",
            what: "auth.wasm: 2,000 HS256 tokens in turn, cache of 16",
            filters: vec![wasm("auth", "auth", auth_config(16))],
            load: Load::Tokens(pool("HS256")),
        },
        Case {
            name: "jwt_authn_hs256",
            what: "peer: Envoy jwt_authn, same 2,000 HS256 tokens, no cache",
            filters: vec![jwt_authn(false)],
            load: Load::Tokens(pool("HS256")),
        },
        Case {
            name: "switchyard_chain",
            what: "switchyard.wasm: auth (RS256, cached) → router → timeouts → shadow",
            filters: vec![wasm(
                "switchyard",
                "switchyard",
                json!({"auth": auth_config(1024), "router": router_config(),
                       "timeouts": timeouts_config(), "shadow": shadow_config()}),
            )],
            load: fixed(&[("authorization", &rs256)]),
        },
    ]
}

/// One wrk run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn wrk(url: &str, load: &Load, seconds: u32, connections: u32, dir: &Path) -> Run {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    match load {
        Load::Fixed(headers) => {
            for (k, v) in headers {
                cmd.args(["-H", &format!("{k}: {v}")]);
            }
        }
        Load::Tokens(pool) => {
            let script = dir.join("tokens.lua");
            let list: Vec<String> = pool.iter().map(|t| format!("\"{t}\"")).collect();
            std::fs::write(
                &script,
                format!(
                    "local tokens = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #tokens + 1\n  return wrk.format(\"GET\", nil, {{[\"authorization\"] = \"Bearer \" .. tokens[i]}})\nend\n",
                    list.join(",")
                ),
            )
            .expect("write wrk script");
            cmd.arg("-s").arg(&script);
        }
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("run wrk (make bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).unwrap_or_else(|| panic!("unreadable wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Run> {
    let value_after = |label: &str| -> Option<&str> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))?
            .trim_start()
            .strip_prefix(label)
            .map(str::trim)
    };
    let duration_ms = |s: &str| -> Option<f64> {
        let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let non_2xx = value_after("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Run {
        rps: value_after("Requests/sec:")?.parse().ok()?,
        p50_ms: duration_ms(value_after("50%")?)?,
        p99_ms: duration_ms(value_after("99%")?)?,
        non_2xx,
    })
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let envoy = Command::new(paths::envoy_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": cores, "kernel": kernel.trim(), "envoy": envoy, "date": date})
}

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 3);
    let seconds = arg(&args, "--seconds", 5);
    let connections = arg(&args, "--connections", 16);
    let backend = Backend::fast("v1");
    let dir = tempfile::tempdir().expect("tempdir");
    // `--only a,b` times a subset (baseline first if given), e.g. to profile one.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_owned).collect());
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name)))
        .collect();
    assert!(!cases.is_empty(), "no case matches --only");
    eprintln!("starting {} Envoys (one per case)…", cases.len());
    let envoys: Vec<Envoy> = cases
        .iter()
        .map(|case| {
            let mut b = Bootstrap::load(&paths::envoy_config("version-router.yaml"));
            b.set_cluster_port("v1", backend.port)
                .set_cluster_port("v2", backend.port);
            let filters = b
                .0
                .pointer_mut(
                    "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
                )
                .and_then(Value::as_array_mut)
                .expect("http_filters");
            let router = filters.pop().expect("Envoy's router is last");
            *filters = case.filters.clone();
            filters.push(router);
            Envoy::start(&b)
        })
        .collect();
    // Each case answers correctly before it is timed.
    for (case, envoy) in cases.iter().zip(&envoys) {
        let warm = wrk(
            &envoy.url("/productpage"),
            &case.load,
            1,
            connections,
            dir.path(),
        );
        assert_eq!(warm.non_2xx, 0, "{}: non-2xx answers under load", case.name);
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    for round in 1..=rounds {
        for (i, (case, envoy)) in cases.iter().zip(&envoys).enumerate() {
            let run = wrk(
                &envoy.url("/productpage"),
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
    let baseline_rps = median(runs[0].iter().map(|r| r.rps).collect());
    let baseline_rss = rss_mb(envoys[0].pid());
    let results: Vec<Value> = cases
        .iter()
        .zip(&envoys)
        .zip(&runs)
        .map(|((case, envoy), runs)| {
            let rps = median(runs.iter().map(|r| r.rps).collect());
            let rss = rss_mb(envoy.pid());
            json!({
                "case": case.name,
                "what": case.what,
                "rps": rps.round(),
                "rps_runs": runs.iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
                "ratio_to_baseline": (rps / baseline_rps * 1000.0).round() / 1000.0,
                "p50_ms": (median(runs.iter().map(|r| r.p50_ms).collect()) * 100.0).round() / 100.0,
                "p99_ms": (median(runs.iter().map(|r| r.p99_ms).collect()) * 100.0).round() / 100.0,
                "rss_mb": (rss * 10.0).round() / 10.0,
                "rss_over_baseline_mb": ((rss - baseline_rss) * 10.0).round() / 10.0,
            })
        })
        .collect();
    let rps_of = |name: &str| {
        results
            .iter()
            .find(|r| r["case"] == name)
            .and_then(|r| r["rps"].as_f64())
            .unwrap_or(0.0)
    };
    let size = |name: &str| std::fs::metadata(paths::wasm(name)).map_or(0, |m| m.len());
    let ratio = |a: &str, b: &str| rps_of(a) / rps_of(b);
    let targets = [
        (
            "version_router ≥ 90% of baseline",
            ratio("version_router", "baseline"),
            0.90,
        ),
        (
            "switchyard chain ≥ 80% of baseline",
            ratio("switchyard_chain", "baseline"),
            0.80,
        ),
        (
            "version_router ≥ Lua router",
            ratio("version_router", "lua_router"),
            1.0,
        ),
        (
            "auth RS256 cached ≥ 90% of jwt_authn",
            ratio("auth_rs256_cached", "jwt_authn_rs256_cached"),
            0.90,
        ),
    ];
    let size_targets = [
        ("version_router", 300_000u64),
        ("auth", 700_000),
        ("timeouts", 300_000),
        ("shadow", 300_000),
        ("switchyard", 700_000),
    ];
    let report = json!({
        "machine": machine(),
        "settings": {"rounds": rounds, "seconds": seconds, "connections": connections,
                     "wrk_threads": 1, "envoy_concurrency": 1, "path": "/productpage"},
        "cases": results,
        "targets": targets.iter().map(|(what, actual, want)| json!({
            "target": what, "actual": (actual * 1000.0).round() / 1000.0, "met": actual >= want
        })).collect::<Vec<_>>(),
        "wasm_sizes": size_targets.iter().map(|(name, limit)| json!({
            "wasm": format!("{name}.wasm"), "bytes": size(name), "target_bytes": limit,
            "met": size(name) < *limit
        })).collect::<Vec<_>>(),
    });
    let out = paths::project_root().join("bench");
    std::fs::create_dir_all(&out).expect("bench/");
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report).unwrap() + "\n",
    )
    .expect("write results.json");
    let md = markdown(&report);
    std::fs::write(out.join("results.md"), &md).expect("write results.md");
    println!("{md}");
}

fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let mut s = format!(
        "Measured {} on {} ({} cores, Linux {}), {}; wrk 1 thread × {} connections, {} rounds × {} s per case, A B C … interleaved; medians.\n\n",
        m["date"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["kernel"].as_str().unwrap_or(""),
        m["envoy"].as_str().unwrap_or("").split_whitespace().nth(2).unwrap_or("envoy"),
        r["settings"]["connections"],
        r["settings"]["rounds"],
        r["settings"]["seconds"],
    );
    s.push_str("| case | what | req/s | vs baseline | p50 ms | p99 ms | RSS MB (Δ) |\n|---|---|---:|---:|---:|---:|---:|\n");
    for c in r["cases"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0}% | {} | {} | {} ({:+}) |\n",
            c["case"].as_str().unwrap_or(""),
            c["what"].as_str().unwrap_or(""),
            c["rps"],
            c["ratio_to_baseline"].as_f64().unwrap_or(0.0) * 100.0,
            c["p50_ms"],
            c["p99_ms"],
            c["rss_mb"],
            c["rss_over_baseline_mb"].as_f64().unwrap_or(0.0),
        ));
    }
    s.push_str("\n| target | actual | met |\n|---|---:|---|\n");
    for t in r["targets"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {:.1}% | {} |\n",
            t["target"].as_str().unwrap_or(""),
            t["actual"].as_f64().unwrap_or(0.0) * 100.0,
            if t["met"] == true { "yes" } else { "**no**" }
        ));
    }
    for w in r["wasm_sizes"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} < {} bytes | {} bytes | {} |\n",
            w["wasm"].as_str().unwrap_or(""),
            w["target_bytes"],
            w["bytes"],
            if w["met"] == true { "yes" } else { "**no**" }
        ));
    }
    s
}
