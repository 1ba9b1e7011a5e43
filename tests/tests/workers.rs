//! `switchyard.wasm` as a gateway runs it: Envoy with four workers (one VM
//! each, plus the main thread's), and two replicas with one configuration.
//! The key set is fetched once per Envoy per refresh and shared with every
//! VM; counters add up across workers; a sticky user and a sampled request
//! get the same answer from every worker and every replica.

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::tokens::{self, mint};
use switchyard_tests::{paths, Backend, Bootstrap, Envoy, Reply, Responder};

const WORKERS: u32 = 4;
const REFRESH_S: u64 = 2;

struct Replica {
    envoy: Envoy,
    _v1: Backend,
    v2: Backend,
    idp: Backend,
}

fn idp() -> Responder {
    let body = tokens::public_jwks().to_string();
    Arc::new(move |_| Reply::new(200, body.clone()).header("content-type", "application/json"))
}

/// `envoy-config/switchyard.yaml` with a sticky 50/50 canary on `/canary`
/// and a 30 % mirror of it sampled by request id, in an Envoy of four
/// workers, put in service once every VM holds the key set.
fn replica() -> Replica {
    let (v1, v2, idp) = (
        Backend::start("v1"),
        Backend::start("v2"),
        Backend::serving("idp", idp()),
    );
    let mut b = Bootstrap::load(&paths::envoy_config("switchyard.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_cluster_port("idp", idp.port);
    let mut c = b.filter_config("switchyard");
    c["auth"]["providers"][0]["jwt"]["remote_jwks"]["refresh_s"] = json!(REFRESH_S);
    c["router"]["routes"] = json!([{"name": "canary", "match": {"path": {"prefix": "/canary"}},
        "split": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}],
        "sticky": {"header": "x-user-id"}}]);
    c["shadow"]["rules"] = json!([{"name": "canary-mirror", "match": {"path": {"prefix": "/canary"}},
        "percent": 30.0, "target_cluster": "v2", "mode": "mirror"}]);
    b.set_filter_config("switchyard", &c);
    let envoy = Envoy::start_with_workers(&b, WORKERS);
    envoy.wait_for_key_sets("corp");
    Replica {
        envoy,
        _v1: v1,
        v2,
        idp,
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One request on a connection of its own (so the kernel spreads them over
/// the workers): the version that answered.
fn canary(r: &Replica, token: &str, user: &str, request_id: &str) -> String {
    let (status, resp) = switchyard_tests::get(
        &r.envoy.url("/canary/page"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", user),
            ("x-request-id", request_id),
        ],
    );
    assert_eq!(status, 200, "{user} {request_id}");
    resp.header("x-echo-version").unwrap_or("").to_owned()
}

/// Connections each worker accepted.
fn per_worker_connections(r: &Replica) -> Vec<u64> {
    let stats = r.envoy.stats();
    (0..WORKERS)
        .map(|w| {
            stats
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("listener.")
                        && k.ends_with(&format!(".worker_{w}.downstream_cx_total"))
                })
                .map(|(_, v)| *v)
                .sum()
        })
        .collect()
}

/// The request ids a replica mirrored, once every sampled mirror arrived.
fn mirrored_ids(r: &Replica) -> BTreeSet<String> {
    let sampled = r
        .envoy
        .counter("wasmcustom.switchyard.shadow.canary-mirror.sampled");
    let start = Instant::now();
    loop {
        let ids: BTreeSet<String> =
            r.v2.received()
                .iter()
                .filter(|q| q.header("x-shadow") == Some("true"))
                .filter_map(|q| q.header("x-request-id").map(str::to_owned))
                .collect();
        if ids.len() as u64 >= sampled {
            return ids;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {sampled} mirrors arrived",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn four_workers_and_two_replicas_fetch_once_count_all_and_agree() {
    let (a, b) = (replica(), replica());
    // Five VMs each (the main thread's and four workers'), one fetch each Envoy.
    for r in [&a, &b] {
        assert_eq!(
            r.idp.count(),
            1,
            "one fetch for {} VMs",
            r.envoy.root_contexts()
        );
        assert_eq!(
            r.envoy
                .counter("wasmcustom.switchyard.auth.corp.jwks_ready"),
            r.envoy.root_contexts()
        );
    }
    let ready = Instant::now();

    let token = mint("RS256", &tokens::claims("jason", now_s()));
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let mut versions: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut sent = 0u64;
    for round in 0..3 {
        for (i, user) in users.iter().enumerate() {
            for r in [&a, &b] {
                let id = format!("req-{round}-{i}");
                versions
                    .entry(user)
                    .or_default()
                    .insert(canary(r, &token, user, &id));
            }
            sent += 1;
        }
    }
    // A sticky user landed on one version on every worker of both replicas.
    for (user, seen) in &versions {
        assert_eq!(seen.len(), 1, "{user} saw {seen:?}");
    }
    let v2_users = versions.values().filter(|v| v.contains("v2")).count();
    assert!((8..=32).contains(&v2_users), "{v2_users} of 40 on v2");

    for r in [&a, &b] {
        // Every worker served some of the connections…
        let spread = per_worker_connections(r);
        assert!(
            spread.iter().all(|&n| n > 0),
            "connections per worker: {spread:?}"
        );
        // …and the counters add up across them.
        assert_eq!(r.envoy.counter("wasmcustom.switchyard.auth.allowed"), sent);
        let routed: u64 = ["v1", "v2"]
            .iter()
            .map(|v| {
                r.envoy
                    .counter(&format!("wasmcustom.switchyard.router.canary.{v}.requests"))
            })
            .sum();
        assert_eq!(routed, sent);
    }

    // Both replicas mirrored the same requests (sampled by request id).
    let (mirrored_a, mirrored_b) = (mirrored_ids(&a), mirrored_ids(&b));
    assert_eq!(mirrored_a, mirrored_b);
    let share = mirrored_a.len() as f64 / sent as f64;
    assert!(
        (0.15..=0.45).contains(&share),
        "mirrored {share:.2} of requests"
    );

    // Refreshes go on once per Envoy per period, not once per VM.
    let waited = Duration::from_secs(3 * REFRESH_S) + Duration::from_millis(500);
    if let Some(rest) = waited.checked_sub(ready.elapsed()) {
        std::thread::sleep(rest);
    }
    let periods = ready.elapsed().as_secs() / REFRESH_S + 1;
    for r in [&a, &b] {
        let fetches = r.idp.count() as u64;
        assert!(
            (3..=periods + 1).contains(&fetches),
            "{fetches} fetches in {periods} refresh periods with {} VMs",
            r.envoy.root_contexts()
        );
        assert_eq!(
            r.envoy
                .counter("wasmcustom.switchyard.auth.corp.jwks_fetch_ok"),
            fetches,
            "the fetch counter adds up to the fetches the provider saw"
        );
    }
}
