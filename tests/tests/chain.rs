//! `switchyard.wasm` with all four sections in real Envoy
//! (`envoy-config/switchyard.yaml`): one VM, one pass, auth → router →
//! timeouts → shadow. (Every single-filter test also runs through the chain
//! in `make test`'s second pass; these check what only the whole chain does.)

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::tokens::{self, mint};
use switchyard_tests::{paths, Backend, Bootstrap, Envoy, Gate, Reply, Responder};

struct Setup {
    envoy: Envoy,
    v1: Backend,
    v2: Backend,
    _idp: Backend,
}

/// The identity provider. Held back by `gate`, every fetch waits for the
/// test to open it: Envoy's main-thread root and its worker's each fetch at
/// start, and an idp that slept in its answer served them in turn, so the
/// second waited twice the delay, past the fetch timeout.
fn idp(gate: Option<&Gate>) -> Responder {
    let body = tokens::public_jwks().to_string();
    let gate = gate.cloned();
    Arc::new(move |_| {
        let reply = Reply::new(200, body.clone()).header("content-type", "application/json");
        match &gate {
            Some(gate) => reply.when_open(gate),
            None => reply,
        }
    })
}

/// The chain before real backends. Without a `jwks_gate`, requests are sent
/// only once every root context holds the key set (as a gateway is put in
/// service), so none waits for keys; with one, the key set arrives when the
/// test opens it, well within the fetch timeout (raised to 10 s).
fn setup(jwks_gate: Option<&Gate>) -> Setup {
    setup_with(jwks_gate, None)
}

/// As [`setup`], with the top level's `stats_flush_ms` set.
fn setup_with(jwks_gate: Option<&Gate>, stats_flush_ms: Option<u32>) -> Setup {
    let (v1, v2, idp) = (
        Backend::start("v1"),
        Backend::start("v2"),
        Backend::serving("idp", idp(jwks_gate)),
    );
    let mut b = Bootstrap::load(&paths::envoy_config("switchyard.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_cluster_port("idp", idp.port);
    let mut config = b.filter_config("switchyard");
    if jwks_gate.is_some() {
        config["auth"]["providers"][0]["jwt"]["remote_jwks"]["timeout_ms"] = json!(10_000);
    }
    if let Some(ms) = stats_flush_ms {
        config["stats_flush_ms"] = json!(ms);
    }
    b.set_filter_config("switchyard", &config);
    let envoy = Envoy::start(&b);
    if jwks_gate.is_none() {
        envoy.wait_for_key_sets("corp");
    }
    Setup {
        envoy,
        v1,
        v2,
        _idp: idp,
    }
}

/// The budget a request was given: `full` less at most the time it took
/// (the budget counts from Envoy's arrival time, so a loaded machine may
/// have spent a few ms of it before the timeouts policy ran).
fn assert_budget(seen: &switchyard_tests::Received, full: u64, took: Duration) {
    let budget: u64 = seen
        .header("x-envoy-expected-rq-timeout-ms")
        .and_then(|v| v.parse().ok())
        .expect("timeouts set the budget");
    let least = full.saturating_sub(took.as_millis() as u64);
    assert!(
        (least..=full).contains(&budget),
        "budget {budget}, expected {full} less at most {took:?}"
    );
}

fn token_for(sub: &str, groups: &[&str]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = tokens::claims(sub, now);
    claims["groups"] = json!(groups);
    format!("Bearer {}", mint("RS256", &claims))
}

/// (status, version that answered, elapsed).
fn get(s: &Setup, path: &str, headers: &[(&str, &str)]) -> (u16, String, Duration) {
    let t0 = Instant::now();
    let (status, resp) = switchyard_tests::get(&s.envoy.url(path), headers);
    let version = resp.header("x-echo-version").unwrap_or("").to_owned();
    (status, version, t0.elapsed())
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn identity_from_auth_routes_and_the_budget_follows_the_version() {
    let s = setup(None);
    let jason = token_for("jason", &["dev"]);
    let (status, version, took) = get(&s, "/reviews/1", &[("authorization", &jason)]);
    assert_eq!(
        (status, version.as_str()),
        (200, "v2"),
        "auth's identity drove the router"
    );
    let seen = &s.v2.received()[0];
    assert_eq!(seen.header("end-user"), Some("jason"));
    assert_eq!(seen.header("x-version"), Some("v2"));
    // Timeouts ran after the router and matched its version's rule (500 ms).
    assert_budget(seen, 500, took);
    assert_eq!(
        seen.header("authorization")
            .map(|a| a.starts_with("Bearer ")),
        Some(true)
    );

    let tester = token_for("alice", &["testers"]);
    let (status, version, took) = get(&s, "/productpage", &[("authorization", &tester)]);
    assert_eq!((status, version.as_str()), (200, "v2"), "claims routing");
    assert_budget(&s.v2.received()[1], 3000, took);

    let plain = token_for("bob", &["dev"]);
    let (status, version, _) = get(&s, "/productpage", &[("authorization", &plain)]);
    assert_eq!((status, version.as_str()), (200, "v1"));
    assert_eq!(s.envoy.counter("wasmcustom.switchyard.auth.allowed"), 3);
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.router.jason-to-v2.v2.requests"),
        1
    );
}

#[test]
fn batched_counters_reach_envoy_stats_at_the_flush() {
    // Key-set readiness is itself a counter, so the wait in `setup` already
    // needs a flush to have happened.
    let s = setup_with(None, Some(200));
    let jason = token_for("jason", &["dev"]);
    for _ in 0..3 {
        let (status, version, _) = get(&s, "/reviews/1", &[("authorization", &jason)]);
        assert_eq!((status, version.as_str()), (200, "v2"));
    }
    let (status, _, _) = get(&s, "/details/1", &[]);
    assert_eq!(status, 401);
    let limit = Duration::from_secs(5);
    for (name, n) in [
        ("wasmcustom.switchyard.auth.allowed", 3),
        ("wasmcustom.switchyard.auth.denied", 1),
        ("wasmcustom.switchyard.router.jason-to-v2.v2.requests", 3),
    ] {
        s.envoy.wait_for_counter(name, n, limit);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        s.envoy.counter("wasmcustom.switchyard.auth.allowed"),
        3,
        "each request counted once, however many flushes passed"
    );
}

#[test]
fn a_denied_request_reaches_no_later_policy() {
    let s = setup(None);
    let (status, _, _) = get(&s, "/details/1", &[("end-user", "jason")]);
    assert_eq!(status, 401);
    assert_eq!(s.v1.count() + s.v2.count(), 0, "no upstream");
    assert_eq!(s.envoy.counter("wasmcustom.switchyard.auth.denied"), 1);
    for later in [
        "wasmcustom.switchyard.router.jason-to-v2.v2.requests",
        "wasmcustom.switchyard.router.default.v1.requests",
        "wasmcustom.switchyard.timeouts.rule.default.timeout_set",
        "wasmcustom.switchyard.shadow.details-compare.sampled",
    ] {
        assert_eq!(s.envoy.counter(later), 0, "{later}");
    }
}

#[test]
fn requests_waiting_for_keys_go_through_the_later_policies_when_they_arrive() {
    // The key set is held back until both requests have waited in auth for
    // a second; the chain then resumes them through router and timeouts. The
    // budget counts from arrival, so the wait is spent: /reviews (500 ms) has
    // nothing left, /productpage (3 s) has at most 2 s.
    let gate = Gate::new();
    let s = setup(Some(&gate));
    let jason = token_for("jason", &["dev"]);
    let (page, reviews) = std::thread::scope(|scope| {
        let page = scope.spawn(|| get(&s, "/productpage", &[("authorization", &jason)]));
        let reviews = scope.spawn(|| get(&s, "/reviews/2", &[("authorization", &jason)]));
        s.envoy.wait_for_counter(
            "http.ingress.downstream_rq_active",
            2,
            Duration::from_secs(10),
        );
        // At least this long; how much longer a loaded machine takes is
        // bounded by each request's own elapsed time below.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            s.v1.count() + s.v2.count(),
            0,
            "nothing passed without keys"
        );
        gate.open();
        (page.join().unwrap(), reviews.join().unwrap())
    });
    assert_eq!(
        (page.0, page.1.as_str()),
        (200, "v2"),
        "routed by identity after the wait"
    );
    let seen = s.v2.received();
    assert_eq!(seen.len(), 1, "only /productpage reached v2: {seen:?}");
    assert_eq!(seen[0].header("end-user"), Some("jason"));
    let budget: u64 = seen[0]
        .header("x-envoy-expected-rq-timeout-ms")
        .and_then(|v| v.parse().ok())
        .expect("timeouts set the budget");
    let least = 3000u64.saturating_sub(page.2.as_millis() as u64);
    assert!(
        (least..=2000).contains(&budget),
        "3000 ms less the wait for keys (over 1 s, under {:?}): {budget}",
        page.2
    );
    assert_eq!(reviews.0, 504, "500 ms budget spent waiting for keys");
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.timeouts.rule.reviews-v2.deadline_exceeded"),
        1
    );
    // Each root context fetched once, and none failed.
    s.envoy.wait_for_key_sets("corp");
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.auth.corp.jwks_fetch_failed"),
        0
    );
}

#[test]
fn delay_mirror_and_compare_share_the_vm_with_auth() {
    let s = setup(None);
    let bob = token_for("bob", &["dev"]);
    // Fault delay held by the timeouts policy, resumed from the shared tick.
    let (status, version, took) = get(&s, "/ratings/1", &[("authorization", &bob)]);
    assert_eq!((status, version.as_str()), (200, "v1"));
    assert!(took >= Duration::from_millis(300), "delayed {took:?}");
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.timeouts.fault.ratings-delay.delayed"),
        1
    );
    // Mirror of an anonymous public request, through the route's mirror policy.
    let (status, version, _) = get(&s, "/public/a", &[]);
    assert_eq!((status, version.as_str()), (200, "v1"));
    eventually("the mirror reaches v2", || {
        s.v2.received()
            .iter()
            .any(|r| r.path == "/public/a" && r.header("x-shadow") == Some("true"))
    });
    // Compare: the copy is sent from the chain's root and its answer comes back there.
    let (status, _, _) = get(&s, "/details/7", &[("authorization", &bob)]);
    assert_eq!(status, 200);
    eventually("the comparison completes", || {
        let c = |w: &str| {
            s.envoy
                .counter(&format!("wasmcustom.switchyard.shadow.details-compare.{w}"))
        };
        c("match") + c("mismatch.status") + c("mismatch.headers") + c("mismatch.body") == 1
    });
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.shadow.details-compare.shadow_error"),
        0
    );
}

#[test]
fn bad_sections_are_rejected_naming_the_section_and_field() {
    for (config, expected) in [
        (
            json!({"routr": {}}),
            "switchyard: invalid configuration: routr: unknown section",
        ),
        (
            json!({"router": {"default_version": "v1", "routes": [{"split": []}]}}),
            "router: invalid configuration: routes[0]",
        ),
        (
            json!({"timeouts": "fast"}),
            "switchyard: invalid configuration: timeouts: must be an object",
        ),
    ] {
        let mut b = Bootstrap::load(&paths::envoy_config("switchyard.yaml"));
        b.set_filter_config("switchyard", &config);
        let err = match Envoy::try_start(&b) {
            Ok(_) => panic!("{config} was accepted"),
            Err(log) => log,
        };
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
}

#[test]
fn consecutive_filters_merge_into_one_chain_in_order() {
    let b = Bootstrap::load(&paths::envoy_config("auth.yaml")).merged_into_chain();
    let filters =
        b.0.pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(|f| f.as_array())
        .expect("http_filters");
    assert_eq!(
        filters.len(),
        2,
        "auth + router merged, then Envoy's router"
    );
    let c = &filters[0]["typed_config"]["config"];
    assert!(c["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap()
        .ends_with("/switchyard.wasm"));
    let sections: serde_json::Value =
        serde_json::from_str(c["configuration"]["value"].as_str().unwrap()).unwrap();
    let keys: Vec<_> = sections.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["auth", "router"]);
    assert_eq!(sections["router"]["default_version"], "v1");
}
