//! Faults injected while load runs, in real Envoy before real loopback
//! servers, counting what the clients saw in each phase: the identity
//! provider failing every way it can, the external auth service down, slow
//! or resetting, the shadow target down or slow, and a bad configuration
//! pushed to a running Envoy.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::tokens::{self, mint};
use switchyard_tests::{paths, Backend, Bootstrap, Envoy, Reply, Responder};

/// One request the load sent: the phase it was sent in (and the one it
/// ended in: a request that spans a switch belongs to neither), what came
/// back, how long it took.
#[derive(Debug, Clone, Copy)]
struct Sample {
    phase: usize,
    ended_in: usize,
    status: u16,
    took: Duration,
}

impl Sample {
    fn within(&self, phase: usize) -> bool {
        self.phase == phase && self.ended_in == phase
    }
}

/// Clients sending requests until stopped (at most `MAX_PER_CLIENT` each,
/// so a run is bounded whatever happens), each on a fresh connection.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<Vec<Sample>>>,
}

const MAX_PER_CLIENT: usize = 20_000;
/// Each client sends at most one request per pause (about 200/s each), so
/// the phases of a run see load from start to end.
const PAUSE: Duration = Duration::from_millis(5);
/// However a run goes, its load stops by itself after this long.
const MAX_RUN: Duration = Duration::from_secs(120);

/// Request `i`: its path and headers.
type Requests = Arc<dyn Fn(usize) -> (String, Vec<(String, String)>) + Send + Sync>;

/// The same request every time: `path` with one header.
fn every_time(path: &'static str, header: (&'static str, &'static str)) -> Requests {
    Arc::new(move |_| {
        let (name, value) = header;
        (path.to_owned(), vec![(name.to_owned(), value.to_owned())])
    })
}

impl Load {
    fn start(envoy: &Envoy, clients: usize, requests: Requests) -> Self {
        let base = envoy.url("");
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|c| {
                let (stop, phase, base, requests) =
                    (stop.clone(), phase.clone(), base.clone(), requests.clone());
                std::thread::spawn(move || {
                    let mut samples = Vec::new();
                    let began = Instant::now();
                    for i in 0..MAX_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) || began.elapsed() > MAX_RUN {
                            break;
                        }
                        std::thread::sleep(PAUSE);
                        let (path, headers) = requests(c * MAX_PER_CLIENT + i);
                        let mut req = switchyard_tests::client().get(&format!("{base}{path}"));
                        for (k, v) in headers {
                            req = req.set(&k, &v);
                        }
                        let now = phase.load(Ordering::Relaxed);
                        let started = Instant::now();
                        let status = match req.call() {
                            Ok(r) => r.status(),
                            Err(ureq::Error::Status(code, _)) => code,
                            Err(_) => 0,
                        };
                        samples.push(Sample {
                            phase: now,
                            ended_in: phase.load(Ordering::Relaxed),
                            status,
                            took: started.elapsed(),
                        });
                    }
                    samples
                })
            })
            .collect();
        Self {
            stop,
            phase,
            clients,
        }
    }

    /// Moves on to phase `n` after letting the current one run for `run`.
    fn next_phase(&self, run: Duration, n: usize) {
        std::thread::sleep(run);
        self.phase.store(n, Ordering::Relaxed);
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients
            .into_iter()
            .flat_map(|c| c.join().expect("load client"))
            .collect()
    }
}

/// Statuses seen in `phase`, each with its count.
fn statuses(samples: &[Sample], phase: usize) -> Vec<(u16, usize)> {
    let mut out: Vec<(u16, usize)> = Vec::new();
    for s in samples.iter().filter(|s| s.within(phase)) {
        match out.iter_mut().find(|(st, _)| *st == s.status) {
            Some((_, n)) => *n += 1,
            None => out.push((s.status, 1)),
        }
    }
    out.sort();
    out
}

/// Asserts that `phase` saw requests and every one got `status`; its statuses.
fn all_answered(samples: &[Sample], phase: usize, status: u16, what: &str) -> Vec<(u16, usize)> {
    let seen = statuses(samples, phase);
    assert!(
        !seen.is_empty() && seen.iter().all(|(s, _)| *s == status),
        "{what} (phase {phase}): every request {status}, saw {seen:?}"
    );
    seen
}

fn slowest(samples: &[Sample], phase: usize) -> Duration {
    samples
        .iter()
        .filter(|s| s.within(phase))
        .map(|s| s.took)
        .max()
        .unwrap_or_default()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The identity provider's key set before rotation: the RSA key only.
fn keys_before_rotation() -> Value {
    let mut set = tokens::public_jwks();
    set["keys"]
        .as_array_mut()
        .expect("keys")
        .retain(|k| k["kid"] == "rsa");
    set
}

fn serving(set: Value) -> Responder {
    let body = set.to_string();
    Arc::new(move |_| Reply::new(200, body.clone()).header("content-type", "application/json"))
}

#[test]
fn the_identity_provider_failing_every_way_under_load_costs_no_request() {
    let (v1, v2, idp) = (
        Backend::start("v1"),
        Backend::start("v2"),
        Backend::serving("idp", serving(keys_before_rotation())),
    );
    let idp_port = idp.port;
    let authz = Backend::start("authz");
    let mut b = Bootstrap::load(&paths::envoy_config("auth.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_cluster_port("idp", idp_port)
        .set_cluster_port("authz", authz.port);
    let mut c = b.filter_config("switchyard.auth");
    c["providers"][0]["jwt"]["remote_jwks"]["refresh_s"] = json!(1);
    c["providers"][0]["jwt"]["remote_jwks"]["timeout_ms"] = json!(400);
    b.set_filter_config("switchyard.auth", &c);
    let envoy = Envoy::start(&b);
    envoy.wait_for_key_sets("corp");
    let url = envoy.url("/productpage");
    // A key the provider does not publish yet.
    let es256 = mint("ES256", &tokens::claims("kim", now_s()));
    let (status, _) = switchyard_tests::get(&url, &[("authorization", &bearer(&es256))]);
    assert_eq!(status, 401, "not yet rotated in");

    // Distinct tokens, so every request is verified with the keys held now.
    let pool: Arc<Vec<String>> = Arc::new(
        (0..300)
            .map(|i| bearer(&mint("RS256", &tokens::claims(&format!("u{i}"), now_s()))))
            .collect(),
    );
    let load = Load::start(
        &envoy,
        2,
        Arc::new(move |i| {
            let auth = ("authorization".to_owned(), pool[i % pool.len()].clone());
            ("/productpage".to_owned(), vec![auth])
        }),
    );
    let phases: [(&str, Option<Responder>); 5] = [
        ("answers 503", Some(Arc::new(|_| Reply::new(503, "down")))),
        (
            "answers garbage",
            Some(Arc::new(|_| Reply::new(200, "<html>not json"))),
        ),
        (
            "answers an empty key set",
            Some(serving(json!({"keys": []}))),
        ),
        (
            "answers after the fetch timeout",
            Some(Arc::new(|_| {
                Reply::new(200, tokens::public_jwks().to_string()).after(Duration::from_secs(2))
            })),
        ),
        ("killed", None),
    ];
    let mut idp = Some(idp);
    let mut failed_before = envoy.counter("wasmcustom.switchyard.auth.corp.jwks_fetch_failed");
    for (n, (what, responder)) in phases.iter().enumerate() {
        load.next_phase(Duration::from_millis(300), n + 1);
        match responder {
            Some(r) => idp.as_ref().expect("running").set_responder(r.clone()),
            None => drop(idp.take()),
        }
        // Each fault is met by at least one refresh (every second) while load runs.
        envoy.wait_for_counter(
            "wasmcustom.switchyard.auth.corp.jwks_fetch_failed",
            failed_before + 1,
            Duration::from_secs(10),
        );
        failed_before = envoy.counter("wasmcustom.switchyard.auth.corp.jwks_fetch_failed");
        eprintln!("identity provider {what}: fetches failing, load still running");
    }
    // Restarted where Envoy expects it, with the new key rotated in.
    load.next_phase(Duration::from_millis(300), phases.len() + 1);
    let _idp = Backend::serving_on("idp", idp_port, serving(tokens::public_jwks()));
    let started = Instant::now();
    loop {
        let (status, _) = switchyard_tests::get(&url, &[("authorization", &bearer(&es256))]);
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the rotated-in key is never accepted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    load.next_phase(Duration::from_millis(500), phases.len() + 2);
    let samples = load.finish();

    // Phase 0 healthy, one per fault, then the restart; the last switch only
    // ends the run (nothing is sent after it).
    for phase in 0..=phases.len() + 1 {
        let seen = all_answered(&samples, phase, 200, "the last good keys keep serving");
        eprintln!(
            "phase {phase}: {seen:?}, slowest {:?}",
            slowest(&samples, phase)
        );
    }
    assert!(samples.len() > 100, "load ran: {} requests", samples.len());
    assert_eq!(
        (v1.count() + v2.count()) as u64,
        samples.len() as u64 + 1,
        "every allowed request reached a backend, once"
    );
}

/// Envoy with `auth.yaml` whose partner path (`/partner/`) asks the
/// external auth service, with its failure mode `mode`.
fn ext_auth_envoy(mode: &str, authz: &Backend, v1: &Backend, v2: &Backend) -> Envoy {
    let idp = Backend::serving("idp", serving(tokens::public_jwks()));
    let mut b = Bootstrap::load(&paths::envoy_config("auth.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_cluster_port("idp", idp.port)
        .set_cluster_port("authz", authz.port);
    let mut c = b.filter_config("switchyard.auth");
    let authz_provider = c["providers"]
        .as_array_mut()
        .and_then(|ps| ps.iter_mut().find(|p| p["name"] == "authz"))
        .expect("the authz provider");
    authz_provider["ext_auth"]["failure_mode"] = json!(mode);
    b.set_filter_config("switchyard.auth", &c);
    let envoy = Envoy::start(&b);
    envoy.wait_for_key_sets("corp");
    envoy
}

#[test]
fn the_auth_service_down_slow_or_resetting_gets_its_failure_mode_within_the_timeout() {
    for mode in ["closed", "open"] {
        let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
        let authz = Backend::serving(
            "authz",
            Arc::new(|_| Reply::new(200, "").header("x-user", "p-7")),
        );
        let envoy = ext_auth_envoy(mode, &authz, &v1, &v2);
        let load = Load::start(
            &envoy,
            2,
            every_time("/partner/x", ("authorization", "Token good")),
        );
        load.next_phase(Duration::from_millis(500), 1);
        // Slower than its 500 ms timeout.
        authz.set_responder(Arc::new(|_| {
            Reply::new(200, "").after(Duration::from_secs(3))
        }));
        load.next_phase(Duration::from_millis(2500), 2);
        authz.set_responder(Arc::new(|_| Reply::reset()));
        load.next_phase(Duration::from_millis(1000), 3);
        drop(authz); // Down: its port refuses.
        load.next_phase(Duration::from_millis(1000), 4);
        let samples = load.finish();

        let failing = if mode == "closed" { 503 } else { 200 };
        all_answered(&samples, 0, 200, &format!("{mode}, healthy"));
        for (phase, what) in [(1, "slow"), (2, "resetting"), (3, "down")] {
            let seen = all_answered(&samples, phase, failing, &format!("{mode}, {what}"));
            // Never held past the call's 500 ms timeout (plus a loaded machine's slack).
            let slowest = slowest(&samples, phase);
            assert!(
                slowest < Duration::from_millis(2000),
                "{mode}, {what}: a request took {slowest:?}"
            );
            eprintln!("auth service {what}, failure_mode {mode}: {seen:?}, slowest {slowest:?}");
        }
        let unavailable = envoy.counter("wasmcustom.switchyard.auth.denied.ext_auth_unavailable");
        let failed_open = envoy.counter("wasmcustom.switchyard.auth.authz.failed_open");
        if mode == "closed" {
            assert!(
                unavailable > 0 && failed_open == 0,
                "{unavailable} {failed_open}"
            );
        } else {
            assert!(
                failed_open > 0 && unavailable == 0,
                "{unavailable} {failed_open}"
            );
        }
    }
}

#[test]
fn the_shadow_target_down_or_slow_costs_the_primary_nothing() {
    let (v1, shadow) = (Backend::start("v1"), Backend::start("v2"));
    let mut b = Bootstrap::load(&paths::envoy_config("shadow.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", shadow.port);
    let mut c = b.filter_config("switchyard.shadow");
    c["rules"] = json!([
        {"name": "reviews-compare", "match": {"path": {"prefix": "/reviews"}}, "percent": 100.0,
         "target_cluster": "v2", "mode": "compare"},
        {"name": "mirror", "match": {"path": {"prefix": "/"}}, "percent": 100.0,
         "target_cluster": "v2", "mode": "mirror"}]);
    b.set_filter_config("switchyard.shadow", &c);
    let envoy = Envoy::start(&b);
    // Half the load mirrored by Envoy's router, half compared by the filter.
    let load = Load::start(
        &envoy,
        2,
        Arc::new(|i| {
            let path = if i % 2 == 0 {
                "/productpage"
            } else {
                "/reviews/1"
            };
            (path.to_owned(), Vec::new())
        }),
    );
    load.next_phase(Duration::from_millis(1500), 1);
    shadow.set_responder(Arc::new(|_| {
        Reply::new(200, "late").after(Duration::from_secs(3))
    }));
    load.next_phase(Duration::from_millis(1500), 2);
    drop(shadow);
    load.next_phase(Duration::from_millis(1500), 3);
    let samples = load.finish();

    for (phase, what) in [(0, "healthy"), (1, "slow"), (2, "down")] {
        let seen = all_answered(&samples, phase, 200, &format!("shadow target {what}"));
        // The slow target answers after 3 s: a primary that waited for it would show it.
        let slowest = slowest(&samples, phase);
        assert!(
            slowest < Duration::from_secs(1),
            "shadow target {what}: {slowest:?}"
        );
        eprintln!("shadow target {what}: {seen:?}, slowest primary {slowest:?}");
    }
    envoy.wait_for_counter(
        "wasmcustom.switchyard.shadow.reviews-compare.shadow_error",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(
        v1.count(),
        samples.len(),
        "every primary request reached the primary, once"
    );
}

/// A bootstrap whose listeners come from a file Envoy watches (LDS), as a
/// control plane pushes them: (bootstrap, the listener resource).
fn with_listeners_from(b: &Bootstrap, lds: &std::path::Path) -> (Bootstrap, Value) {
    let mut b = b.clone();
    let listener = b.0["static_resources"]["listeners"][0].clone();
    b.0["static_resources"]
        .as_object_mut()
        .expect("static_resources")
        .remove("listeners");
    b.0["dynamic_resources"] = json!({"lds_config": {"resource_api_version": "V3",
        "path_config_source": {"path": lds.to_string_lossy()}}});
    b.0["node"] = json!({"id": "switchyard-test", "cluster": "switchyard"});
    (b, listener)
}

/// Writes the listener with router configuration `router` to `lds`, as a
/// control plane does: a new file moved into place.
fn push(lds: &std::path::Path, listener: &Value, router: &Value, version: usize) {
    let mut with_router = Bootstrap(listener.clone());
    with_router.set_filter_config("switchyard.router", router);
    let listener = with_router.0;
    let doc = json!({"version_info": version.to_string(), "resources": [
        {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"}]});
    let mut doc = doc;
    for (k, v) in listener.as_object().expect("listener") {
        doc["resources"][0][k] = v.clone();
    }
    let tmp = lds.with_extension(format!("{version}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc).expect("json")).expect("write lds");
    std::fs::rename(&tmp, lds).expect("move lds into place");
}

#[test]
fn a_bad_configuration_push_leaves_the_last_good_one_serving() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let mut base = Bootstrap::load(&paths::envoy_config("router.yaml"));
    base.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    let router = base.filter_config("switchyard.router");
    let dir = tempfile::tempdir().expect("tempdir");
    let lds = dir.path().join("listeners.json");
    let (b, listener) = with_listeners_from(&base, &lds);
    push(&lds, &listener, &router, 1);
    let envoy = Envoy::start(&b);
    let version = |user: &str| {
        let (status, resp) =
            switchyard_tests::get(&envoy.url("/productpage"), &[("end-user", user)]);
        assert_eq!(status, 200);
        resp.header("x-echo-version").unwrap_or("").to_owned()
    };
    assert_eq!(version("jason"), "v2");

    let load = Load::start(&envoy, 2, every_time("/productpage", ("end-user", "jason")));
    load.next_phase(Duration::from_millis(500), 1);
    // A section that does not compile: Envoy refuses the update and keeps serving.
    let mut bad = router.clone();
    bad["routes"][3]["split"] =
        json!([{"version": "v1", "weight": 0}, {"version": "v2", "weight": 0}]);
    push(&lds, &listener, &bad, 2);
    envoy.wait_for_counter(
        "listener_manager.lds.update_rejected",
        1,
        Duration::from_secs(20),
    );
    assert!(
        envoy.logs().contains("total weight must be positive"),
        "the reason is logged"
    );
    load.next_phase(Duration::from_millis(1000), 2);
    // A good change then applies.
    let mut good = router.clone();
    good["routes"][0]["version"] = json!("v1");
    push(&lds, &listener, &good, 3);
    envoy.wait_for_counter(
        "listener_manager.lds.update_success",
        2,
        Duration::from_secs(20),
    );
    let started = Instant::now();
    while version("jason") != "v1" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the good push never applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    load.next_phase(Duration::from_millis(500), 3);
    let samples = load.finish();
    // The first configuration, the rejected push, the good push (the last
    // switch only ends the run).
    for phase in 0..=2 {
        all_answered(&samples, phase, 200, "configuration pushes");
    }
    // Until the good push, jason went to v2 by the first configuration.
    let before_good: usize = samples.iter().filter(|s| s.ended_in <= 1).count();
    assert!(before_good > 0);
    assert!(v2.count() >= before_good, "{} < {before_good}", v2.count());
}
