//! `make demo`: real Envoy with `router.wasm` in front of two echo
//! backends (v1, v2), sample requests, and which version answered each; then
//! `auth.wasm` in front of the router, with a real JWKS server and real tokens;
//! then `timeouts.wasm` after the router: the lab's 0.5 s timeout, deadlines,
//! retries and faults, each request timed; last `shadow.wasm`: mirrored
//! traffic tagged and safe, and v1 compared with a v2 that differs.
//! Everything it starts is stopped when it returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::tokens::{self, mint};
use switchyard_tests::{get, paths, Backend, Bootstrap, Envoy, Reply};

/// A demo request: path, headers, and what it shows.
type Sample<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn main() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let config_path = paths::envoy_config("router.yaml");
    let mut bootstrap = Bootstrap::load(&config_path);
    bootstrap
        .set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    println!(
        "Starting Envoy {} with router.wasm",
        envoy_launcher::envoy_binary()
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
    );
    println!(
        "  bootstrap: {} (ports picked at random)",
        config_path.display()
    );
    let envoy = Envoy::start(&bootstrap);
    println!(
        "  listening on {}, backends v1 :{} and v2 :{}\n",
        envoy.url(""),
        v1.port,
        v2.port
    );
    let config = bootstrap.filter_config("switchyard.router");
    println!(
        "Routes (first match wins; default {}):",
        config["default_version"]
    );
    for route in config["routes"].as_array().into_iter().flatten() {
        println!("  {route}");
    }
    println!("  override: {}\n", config["override"]);

    let ask = |path: &str, headers: &[(&str, &str)]| -> String {
        let (status, resp) = get(&envoy.url(path), headers);
        format!("{status} {}", resp.header("x-echo-version").unwrap_or("-"))
    };

    println!("{:<60} answered by", "request");
    println!("{}", "-".repeat(72));
    let samples: &[Sample] = &[
        (
            "/productpage",
            &[("end-user", "jason")],
            "route jason-to-v2",
        ),
        (
            "/productpage",
            &[("config-version", "v2")],
            "route config-v2",
        ),
        (
            "/api/items",
            &[("cookie", "beta=1"), ("x-user-id", "u-1")],
            "route beta-cookie",
        ),
        (
            "/productpage",
            &[("x-user-id", "alice")],
            "canary: alice is sticky on v1",
        ),
        (
            "/productpage",
            &[("x-version", "v2"), ("x-user-id", "alice")],
            "spoofed x-version ignored",
        ),
        (
            "/productpage",
            &[("x-version-override", "v2")],
            "override v2 allowed",
        ),
        (
            "/productpage",
            &[("x-version-override", "v9"), ("x-user-id", "alice")],
            "override v9 not allowed",
        ),
    ];
    for (path, headers, what) in samples {
        let shown: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let line = format!("GET {path} {}", shown.join(", "));
        println!("{line:<60} {}   ({what})", ask(path, headers));
    }

    let n = 1000;
    let v2_before = v2.count();
    for _ in 0..n {
        ask("/productpage", &[]);
    }
    let on_v2 = v2.count() - v2_before;
    println!(
        "\nCanary split 90/10, {n} anonymous requests: v1 {}  v2 {on_v2}",
        n - on_v2
    );

    let mut moved = 0;
    let mut users_on_v2 = 0;
    for user in 0..200 {
        let id = format!("user-{user}");
        let first = ask("/productpage", &[("x-user-id", &id)]);
        users_on_v2 += usize::from(first.ends_with("v2"));
        moved += (0..4)
            .filter(|_| ask("/productpage", &[("x-user-id", &id)]) != first)
            .count();
    }
    println!("Sticky split, 200 users x 5 requests: {users_on_v2} users on v2, {moved} requests changed version");

    println!("\nEnvoy counters (/stats):");
    for (name, value) in envoy.stats() {
        if let Some(short) = name.strip_prefix("wasmcustom.switchyard.router.") {
            println!("  {short:<40} {value}");
        }
    }
    drop(envoy);
    auth_demo();
    timeouts_demo();
    shadow_demo();
    println!("\nStopping Envoy and the backends.");
}

/// auth.wasm before the router: only a verified identity reaches `end-user`.
fn auth_demo() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let jwks = tokens::public_jwks().to_string();
    let idp = Backend::serving(
        "idp",
        Arc::new(move |_| Reply::new(200, jwks.clone()).header("content-type", "application/json")),
    );
    let authz = Backend::serving(
        "authz",
        Arc::new(|r| match r.header("authorization") {
            Some("Token good") => Reply::new(200, "").header("end-user", "partner-7"),
            _ => Reply::new(403, "partner says no"),
        }),
    );
    let config_path = paths::envoy_config("auth.yaml");
    let mut bootstrap = Bootstrap::load(&config_path);
    bootstrap
        .set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_cluster_port("idp", idp.port)
        .set_cluster_port("authz", authz.port);
    println!("\nStarting Envoy with auth.wasm -> router.wasm");
    println!(
        "  bootstrap: {} (JWKS served by a real HTTP server)",
        config_path.display()
    );
    let envoy = Envoy::start(&bootstrap);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let jason = format!("Bearer {}", mint("RS256", &tokens::claims("jason", now)));
    let mut tester_claims = tokens::claims("kim", now);
    tester_claims["groups"] = serde_json::json!(["testers"]);
    let tester = format!("Bearer {}", mint("ES256", &tester_claims));
    let mut old = tokens::claims("jason", now);
    old["exp"] = serde_json::json!(now - 3600);
    let expired = format!("Bearer {}", mint("RS256", &old));
    let ask = |path: &str, headers: &[(&str, &str)]| -> String {
        let (status, resp) = get(&envoy.url(path), headers);
        let version = resp.header("x-echo-version").unwrap_or("-").to_owned();
        let body = resp.into_string().unwrap_or_default();
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|b| b["reason"].as_str().map(str::to_owned))
            .unwrap_or_default();
        format!("{status} {version} {reason}")
    };
    let samples: &[Sample] = &[
        (
            "/productpage",
            &[("end-user", "jason")],
            "the lab's header, no credential",
        ),
        (
            "/productpage",
            &[("authorization", &jason)],
            "RS256 token for jason -> v2",
        ),
        (
            "/productpage",
            &[("authorization", &tester)],
            "groups: [testers] claim -> v2",
        ),
        (
            "/productpage",
            &[("authorization", &expired)],
            "expired token",
        ),
        (
            "/productpage",
            &[("x-api-key", "ci-secret")],
            "API key: end-user ci-bot",
        ),
        (
            "/partner/x",
            &[("authorization", "Token good")],
            "external auth allows",
        ),
        (
            "/public/x",
            &[("end-user", "jason")],
            "anonymous path: header stripped",
        ),
    ];
    println!("\n{:<60} answer", "request");
    println!("{}", "-".repeat(72));
    for (path, headers, what) in samples {
        let shown: Vec<String> = headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", if v.len() > 24 { &v[..24] } else { v }))
            .collect();
        let line = format!("GET {path} {}", shown.join(", "));
        println!("{line:<60} {}  ({what})", ask(path, headers));
    }
    println!("\nEnvoy counters (/stats):");
    for (name, value) in envoy.stats() {
        if let Some(short) = name.strip_prefix("wasmcustom.switchyard.auth.") {
            if value > 0 {
                println!("  {short:<40} {value}");
            }
        }
    }
}

/// timeouts.wasm after the router: budgets, deadlines, retries and faults.
fn timeouts_demo() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let v1 = Backend::start("v1");
    // v2 fails the first request to /reviews/flaky, then recovers.
    let v2 = Backend::serving(
        "v2",
        Arc::new(move |r| {
            if r.path.ends_with("/flaky") && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::new(503, "warming up")
            } else {
                Reply::new(200, "ok").header("x-echo-version", "v2")
            }
        }),
    );
    let config_path = paths::envoy_config("timeouts.yaml");
    let mut bootstrap = Bootstrap::load(&config_path);
    bootstrap
        .set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    println!("\nStarting Envoy with router.wasm -> timeouts.wasm");
    println!("  bootstrap: {}", config_path.display());
    let envoy = Envoy::start(&bootstrap);
    let config = bootstrap.filter_config("switchyard.timeouts");
    for rule in config["rules"].as_array().into_iter().flatten() {
        println!("  rule  {rule}");
    }
    for fault in config["faults"].as_array().into_iter().flatten() {
        println!("  fault {fault}");
    }
    let samples: &[Sample] = &[
        (
            "/reviews/delay/2",
            &[("end-user", "jason")],
            "v2 reviews: 0.5 s budget, 2 s upstream",
        ),
        ("/reviews/delay/1", &[], "v1: default 3 s budget"),
        (
            "/reviews/delay/2",
            &[
                ("end-user", "jason"),
                ("x-envoy-upstream-rq-timeout-ms", "60000"),
            ],
            "client tries to raise its budget",
        ),
        (
            "/delay/2",
            &[("x-request-timeout-ms", "300")],
            "caller's 300 ms deadline",
        ),
        ("/", &[("grpc-timeout", "2m")], "exhausted deadline"),
        (
            "/reviews/flaky",
            &[("end-user", "jason")],
            "v2 fails once; retried",
        ),
        ("/ratings/1", &[], "2 s fault delay, then upstream"),
        ("/", &[("x-chaos", "abort")], "aimed abort"),
    ];
    println!("\n{:<60} answer", "request");
    println!("{}", "-".repeat(72));
    for (path, headers, what) in samples {
        let shown: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let line = format!("GET {path} {}", shown.join(", "));
        let t0 = Instant::now();
        let (status, resp) = get(&envoy.url(path), headers);
        let elapsed = t0.elapsed().as_millis();
        let body = resp.into_string().unwrap_or_default();
        let body = if body.starts_with('{') {
            ""
        } else {
            body.as_str()
        };
        println!("{line:<60} {status} in {elapsed:>4} ms {body}  ({what})");
    }
    println!("\nEnvoy counters (/stats):");
    for (name, value) in envoy.stats() {
        if let Some(short) = name.strip_prefix("wasmcustom.switchyard.timeouts.") {
            if value > 0 {
                println!("  {short:<40} {value}");
            }
        }
    }
    println!(
        "  {:<40} {}",
        "cluster.v2.upstream_rq_retry",
        envoy.counter("cluster.v2.upstream_rq_retry")
    );
}

/// shadow.wasm: mirror everything to v2, compare /reviews with a v2 that differs.
fn shadow_demo() {
    let review = |name: &'static str| -> switchyard_tests::Responder {
        Arc::new(move |r| {
            if r.path.starts_with("/reviews") {
                let body = serde_json::json!({"reviewer": name, "stars": 5});
                Reply::new(200, body.to_string()).header("content-type", "application/json")
            } else {
                Reply::new(200, "ok")
            }
        })
    };
    let v1 = Backend::serving("v1", review("alice"));
    let v2 = Backend::serving("v2", review("ALICE"));
    let config_path = paths::envoy_config("shadow.yaml");
    let mut bootstrap = Bootstrap::load(&config_path);
    bootstrap
        .set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    let mut config = bootstrap.filter_config("switchyard.shadow");
    config["rules"][0]["percent"] = serde_json::json!(100.0);
    bootstrap.set_filter_config("switchyard.shadow", &config);
    println!("\nStarting Envoy with shadow.wasm (mirror 100 % to v2; compare /reviews with v2)");
    println!(
        "  bootstrap: {} (mirror rule raised to 100 %)",
        config_path.display()
    );
    let envoy = Envoy::start(&bootstrap);
    for i in 0..5 {
        get(
            &envoy.url(&format!("/items/{i}")),
            &[("authorization", "Bearer secret")],
        );
    }
    let (status, _) = switchyard_tests::send(switchyard_tests::client().post(&envoy.url("/items")));
    println!(
        "  5 GETs and 1 POST ({status}) sent; v1 got {} requests",
        v1.count()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!(
        "  v2 got {} mirrored copies (the POST is never mirrored):",
        v2.count()
    );
    if let Some(seen) = v2.received().first() {
        println!(
            "    host: {}  x-shadow: {}  authorization: {}",
            seen.header("host").unwrap_or("-"),
            seen.header("x-shadow").unwrap_or("-"),
            seen.header("authorization").unwrap_or("(stripped)")
        );
    }
    for i in 0..5 {
        get(&envoy.url(&format!("/reviews/{i}")), &[]);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    println!("\nEnvoy counters (/stats):");
    for (name, value) in envoy.stats() {
        if let Some(short) = name.strip_prefix("wasmcustom.switchyard.shadow.") {
            if value > 0 {
                println!("  {short:<40} {value}");
            }
        }
    }
    if let Some(line) = envoy.logs().lines().find(|l| l.contains("mismatch on")) {
        let msg = line.split("switchyard-shadow: ").nth(1).unwrap_or(line);
        println!("Log: {msg}");
    }
}
