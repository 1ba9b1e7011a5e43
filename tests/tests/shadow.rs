//! The shadow filter in real Envoy: v1 is the primary, v2 the shadow target,
//! both real HTTP backends; mirror mode through Envoy's own mirror policy,
//! compare mode through the filter's own copy.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_tests::{paths, send, Backend, Bootstrap, Envoy, RefusingPort, Reply, Responder};

fn setup(v1: Backend, v2_port: u16, edit: impl FnOnce(&mut Value)) -> (Envoy, Backend) {
    let mut b = Bootstrap::load(&paths::envoy_config("shadow.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2_port);
    let mut config = b.filter_config("switchyard.shadow");
    edit(&mut config);
    b.set_filter_config("switchyard.shadow", &config);
    (Envoy::start(&b), v1)
}

/// Waits (up to 10 s) until `backend` has seen `n` requests; returns how many it saw.
fn settle(backend: &Backend, n: usize) -> usize {
    let t0 = Instant::now();
    while backend.count() < n && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Mirrors are fire-and-forget: give stragglers a moment, then count.
    std::thread::sleep(Duration::from_millis(200));
    backend.count()
}

/// Waits until counter `name` reaches `n` (comparisons finish after the client's response).
fn counter_settles(envoy: &Envoy, name: &str, n: u64) -> u64 {
    let t0 = Instant::now();
    loop {
        let v = envoy.counter(name);
        if v >= n || t0.elapsed() > Duration::from_secs(5) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reviews(upper: bool) -> Responder {
    Arc::new(move |_| {
        let name = if upper { "ALICE" } else { "alice" };
        let body = json!({"reviewer": name, "stars": 5, "timestamp": Instant::now().elapsed().as_nanos() as u64});
        Reply::new(200, body.to_string()).header("content-type", "application/json")
    })
}

#[test]
fn mirror_at_100_percent_copies_every_safe_request_tagged_and_without_credentials() {
    let v2 = Backend::start("v2");
    let (envoy, v1) = setup(Backend::start("v1"), v2.port, |c| {
        c["rules"][0]["percent"] = json!(100.0);
    });
    for i in 0..20 {
        let (status, _) = switchyard_tests::get(
            &envoy.url(&format!("/get/{i}")),
            &[
                ("authorization", "Bearer secret"),
                ("x-shadow-cluster", "v1"),
            ],
        );
        assert_eq!(status, 200);
    }
    assert_eq!(settle(&v2, 20), 20);
    for seen in v2.received() {
        // Envoy puts the suffix on the host, before the port.
        let host = seen.header("host").unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        assert!(name.ends_with("-shadow"), "{host}");
        assert_eq!(seen.header("x-shadow"), Some("true"));
        assert_eq!(seen.header("authorization"), None);
    }
    // The primary got its request as sent, untagged.
    assert_eq!(v1.count(), 20);
    let primary = &v1.received()[0];
    assert_eq!(primary.header("authorization"), Some("Bearer secret"));
    assert_eq!(primary.header("x-shadow"), None);
    // Writes are never mirrored.
    for _ in 0..5 {
        let (status, _) = send(
            switchyard_tests::client()
                .post(&envoy.url("/post"))
                .set("content-type", "text/plain"),
        );
        assert_eq!(status, 200);
    }
    assert_eq!(settle(&v2, 25), 20);
    assert_eq!(
        envoy.counter("wasmcustom.switchyard.shadow.v2-mirror.unsafe_method"),
        5
    );
}

#[test]
fn mirror_at_10_percent_holds_its_share() {
    let v2 = Backend::start("v2");
    let (envoy, _v1) = setup(Backend::start("v1"), v2.port, |_| {});
    let n = 1000;
    for i in 0..n {
        let (status, _) = switchyard_tests::get(&envoy.url(&format!("/items/{i}")), &[]);
        assert_eq!(status, 200);
    }
    // Every sampled request is counted before its mirror is sent; the
    // mirrors arrive after the clients' answers, so wait for all of them.
    let sampled = envoy.counter("wasmcustom.switchyard.shadow.v2-mirror.sampled") as usize;
    let mirrored = settle(&v2, sampled);
    // Envoy's random request ids, hashed: binomial(1000, 0.1) stays well within ±4 points.
    assert!((60..=140).contains(&mirrored), "{mirrored} of {n} mirrored");
    assert_eq!(sampled, mirrored);
}

#[test]
fn compare_reports_body_mismatches_and_only_matches_for_an_identical_v2() {
    for (upper, counter) in [(true, "mismatch.body"), (false, "match")] {
        let v2 = Backend::serving("v2", reviews(upper));
        let (envoy, _v1) = setup(Backend::serving("v1", reviews(false)), v2.port, |_| {});
        for i in 0..10 {
            let (status, resp) = switchyard_tests::get(&envoy.url(&format!("/reviews/{i}")), &[]);
            assert_eq!(status, 200);
            // The client always gets v1's answer.
            assert!(resp.into_string().unwrap().contains("\"alice\""));
        }
        let name = |what: &str| format!("wasmcustom.switchyard.shadow.reviews-compare.{what}");
        assert_eq!(counter_settles(&envoy, &name(counter), 10), 10, "{counter}");
        let other = if upper { "match" } else { "mismatch.body" };
        assert_eq!(envoy.counter(&name(other)), 0, "{other}");
        assert_eq!(envoy.counter(&name("mismatch.status")), 0);
        if upper {
            // The first mismatches are logged, readably (the log file is flushed every 100 ms).
            let line =
                r#"reviews-compare mismatch on GET /reviews/0: body /reviewer: "alice" vs "ALICE""#;
            let t0 = Instant::now();
            while !envoy.logs().contains(line) && t0.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(envoy.logs().contains(line), "{}", envoy.logs());
        }
    }
}

#[test]
fn a_shadow_target_that_is_down_changes_nothing_for_clients() {
    let closed = RefusingPort::new();
    let (envoy, v1) = setup(Backend::start("v1"), closed.port, |c| {
        c["rules"][0]["percent"] = json!(100.0);
    });
    for i in 0..20 {
        let (status, resp) = switchyard_tests::get(&envoy.url(&format!("/reviews/{i}")), &[]);
        assert_eq!(status, 200);
        assert_eq!(resp.header("x-echo-version"), Some("v1"));
    }
    assert_eq!(v1.count(), 20);
    assert_eq!(
        counter_settles(
            &envoy,
            "wasmcustom.switchyard.shadow.reviews-compare.shadow_error",
            20
        ),
        20
    );
}
