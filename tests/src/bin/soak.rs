//! `make soak` (not part of `make test`): `switchyard.wasm` with all four
//! sections in Envoy with two workers, under continuous mixed valid and
//! hostile traffic for `SOAK_SECONDS` (default 600), the key set rotated a
//! third of the way in and the shadow target stopped and restarted two
//! thirds in. Passes when Envoy's resident memory stays flat after warm-up
//! (under 5 % growth), no Wasm VM fails, every request is answered as its
//! policy says, and every allowed request reached a backend exactly once.
//! Writes `bench/soak.json`.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::envoy::resident_kb;
use switchyard_tests::tokens::{self, mint};
use switchyard_tests::{paths, raw, Backend, Bootstrap, Envoy, Reply, Responder};

const WORKERS: u32 = 2;
const CLIENTS: usize = 2;
/// Each client's pause between requests (about 150 requests/s each).
const PAUSE: Duration = Duration::from_millis(6);

/// The kinds of request sent in turn, and what each must get.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A valid RS256 token: 200, jason on v2, anyone else on v1.
    Valid,
    /// An ES256 token whose key is rotated in: 401 before, 200 after.
    RotatedKey,
    /// No credential: 401.
    Anonymous,
    /// The lab's identity header sent by the client: 401.
    SpoofedIdentity,
    /// A token that is not one: 401.
    Garbage,
    /// Two bearer tokens: 401 (ambiguous credential).
    Repeated,
    /// An anonymous path, mirrored to the shadow target: 200.
    Public,
    /// A way out of the anonymous prefix the upstream might resolve: never allowed.
    AmbiguousPath,
}

const MIX: [Kind; 10] = [
    Kind::Valid,
    Kind::Valid,
    Kind::Valid,
    Kind::Public,
    Kind::Anonymous,
    Kind::SpoofedIdentity,
    Kind::Garbage,
    Kind::Repeated,
    Kind::AmbiguousPath,
    Kind::RotatedKey,
];

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn serving(set: Value) -> Responder {
    let body = set.to_string();
    Arc::new(move |_| Reply::new(200, body.clone()).header("content-type", "application/json"))
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    allowed: AtomicU64,
    transport_errors: AtomicU64,
    wrong: Mutex<Vec<String>>,
    wrong_count: AtomicU64,
}

fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let run = Duration::from_secs(seconds);
    let warm_up = run / 10;

    let (v1, v2) = (Backend::fast("v1"), Backend::fast("v2"));
    let mut before_rotation = tokens::public_jwks();
    before_rotation["keys"]
        .as_array_mut()
        .expect("keys")
        .retain(|k| k["kid"] == "rsa");
    let idp = Backend::serving("idp", serving(before_rotation));
    let shadow = Mutex::new(Some(Backend::fast("shadow")));
    let shadow_port = shadow.lock().unwrap().as_ref().unwrap().port;

    let mut b = Bootstrap::load(&paths::envoy_config("switchyard.yaml"));
    let mut shadow_cluster = b.0["static_resources"]["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "v2"))
        .cloned()
        .expect("cluster v2");
    shadow_cluster["name"] = json!("shadow");
    shadow_cluster["load_assignment"]["cluster_name"] = json!("shadow");
    b.0["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(shadow_cluster);
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_cluster_port("idp", idp.port)
        .set_cluster_port("shadow", shadow_port);
    let mut c = b.filter_config("switchyard");
    c["auth"]["providers"][0]["jwt"]["remote_jwks"]["refresh_s"] = json!(5);
    c["shadow"]["rules"] = json!([
        {"name": "public-compare", "match": {"path": {"prefix": "/public/compare"}}, "percent": 100.0,
         "target_cluster": "shadow", "mode": "compare"},
        {"name": "public-mirror", "match": {"path": {"prefix": "/public/"}}, "percent": 100.0,
         "target_cluster": "shadow", "mode": "mirror"}]);
    // The route table sends the mirror to the cluster the filter names.
    b.set_filter_config("switchyard", &c);
    let envoy = Envoy::start_with_workers(&b, WORKERS);
    envoy.wait_for_key_sets("corp");
    let port = envoy.port;
    let pid = envoy.pid();
    eprintln!(
        "soak: {seconds} s, Envoy with {WORKERS} workers (pid {pid}), {CLIENTS} clients; warm-up {} s",
        warm_up.as_secs()
    );

    let valid: Arc<Vec<(String, bool)>> = Arc::new(
        (0..200)
            .map(|i| {
                let sub = if i % 10 == 0 {
                    "jason".to_owned()
                } else {
                    format!("user-{i}")
                };
                let mut claims = tokens::claims(&sub, now_s());
                claims["exp"] = json!(now_s() + seconds + 3600);
                (format!("Bearer {}", mint("RS256", &claims)), sub == "jason")
            })
            .collect(),
    );
    let rotated = {
        let mut claims = tokens::claims("kim", now_s());
        claims["exp"] = json!(now_s() + seconds + 3600);
        format!("Bearer {}", mint("ES256", &claims))
    };
    let rotated_in = Arc::new(AtomicBool::new(false));
    let rotation_seen = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (valid, rotated, rotated_in, rotation_seen, stop, tally) = (
                valid.clone(),
                rotated.clone(),
                rotated_in.clone(),
                rotation_seen.clone(),
                stop.clone(),
                tally.clone(),
            );
            std::thread::spawn(move || {
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(PAUSE);
                    let kind = MIX[i % MIX.len()];
                    let (token, jason) = &valid[(i / MIX.len()) % valid.len()];
                    let rotated_before = rotated_in.load(Ordering::Relaxed);
                    let (target, headers): (&[u8], Vec<(&str, &str)>) = match kind {
                        Kind::Valid => (b"/productpage", vec![("authorization", token.as_str())]),
                        Kind::RotatedKey => {
                            (b"/productpage", vec![("authorization", rotated.as_str())])
                        }
                        Kind::Anonymous => (b"/productpage", vec![]),
                        Kind::SpoofedIdentity => (b"/productpage", vec![("end-user", "jason")]),
                        Kind::Garbage => (
                            b"/productpage",
                            vec![("authorization", "Bearer not.a.token")],
                        ),
                        Kind::Repeated => (
                            b"/productpage",
                            vec![
                                ("authorization", token.as_str()),
                                ("authorization", "Bearer other"),
                            ],
                        ),
                        Kind::Public => (
                            if i % 20 < 10 {
                                b"/public/page"
                            } else {
                                b"/public/compare"
                            },
                            vec![],
                        ),
                        // `..;` (Envoy resolves it, to `/admin`) or an encoded slash (refused).
                        Kind::AmbiguousPath => (
                            if i % 20 < 10 {
                                b"/public/..;/admin"
                            } else {
                                b"/public/x%2f..%2fadmin"
                            },
                            vec![],
                        ),
                    };
                    i += CLIENTS;
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    let answer = match raw::try_send(port, "GET", target, &headers) {
                        Ok(a) => a,
                        Err(e) => {
                            tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                            let mut wrong = tally.wrong.lock().unwrap();
                            if wrong.len() < 20 {
                                wrong.push(format!("{kind:?}: {e}"));
                            }
                            continue;
                        }
                    };
                    let version = answer.header("x-echo-version").unwrap_or("");
                    let rotated_after = rotated_in.load(Ordering::Relaxed);
                    let ok = match kind {
                        Kind::Valid => {
                            answer.status == 200 && version == if *jason { "v2" } else { "v1" }
                        }
                        Kind::RotatedKey => {
                            if answer.status == 200 {
                                rotation_seen.store(true, Ordering::Relaxed);
                            }
                            // Before the rotation 401; after it, 401 only until the next refresh.
                            if !rotated_after {
                                answer.status == 401
                            } else if rotated_before && rotation_seen.load(Ordering::Relaxed) {
                                answer.status == 200
                            } else {
                                answer.status == 401 || answer.status == 200
                            }
                        }
                        Kind::Anonymous
                        | Kind::SpoofedIdentity
                        | Kind::Garbage
                        | Kind::Repeated => answer.status == 401,
                        Kind::Public => answer.status == 200 && version == "v1",
                        // Envoy resolves `..;` itself (to `/admin`, which needs a
                        // credential) and refuses the encoded slash: never let through.
                        Kind::AmbiguousPath => {
                            answer.status == if target.contains(&b';') { 401 } else { 400 }
                        }
                    };
                    if answer.status == 200 {
                        tally.allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    if !ok {
                        tally.wrong_count.fetch_add(1, Ordering::Relaxed);
                        let mut wrong = tally.wrong.lock().unwrap();
                        if wrong.len() < 20 {
                            wrong.push(format!(
                                "{kind:?} {}: {} {version}",
                                String::from_utf8_lossy(target),
                                answer.status
                            ));
                        }
                    }
                }
            })
        })
        .collect();

    let mut rss: Vec<(u64, u64)> = Vec::new();
    let (mut rotated_done, mut shadow_stopped, mut shadow_back) = (false, false, false);
    while started.elapsed() < run {
        std::thread::sleep(Duration::from_secs(5));
        let t = started.elapsed();
        rss.push((t.as_secs(), resident_kb(pid).unwrap_or(0)));
        if !rotated_done && t >= run / 3 {
            idp.set_responder(serving(tokens::public_jwks()));
            rotated_in.store(true, Ordering::Relaxed);
            rotated_done = true;
            eprintln!("  {:>4} s: key set rotated (ES256 key added)", t.as_secs());
        }
        if !shadow_stopped && t >= run * 2 / 3 {
            drop(shadow.lock().unwrap().take());
            shadow_stopped = true;
            eprintln!("  {:>4} s: shadow target stopped", t.as_secs());
        } else if shadow_stopped && !shadow_back && t >= run * 2 / 3 + Duration::from_secs(10) {
            *shadow.lock().unwrap() = Some(Backend::fast_on("shadow", shadow_port));
            shadow_back = true;
            eprintln!("  {:>4} s: shadow target restarted", t.as_secs());
        }
        eprintln!(
            "  {:>4} s: {} requests, {} wrong, RSS {} MB",
            t.as_secs(),
            tally.sent.load(Ordering::Relaxed),
            tally.wrong_count.load(Ordering::Relaxed),
            rss.last().map_or(0, |r| r.1) / 1024
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }

    // Memory: the median of the first three readings after warm-up against the last three.
    let after: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= warm_up.as_secs())
        .map(|r| r.1)
        .collect();
    let median = |xs: &[u64]| {
        let mut v = xs.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let first = median(&after[..after.len().min(3)]);
    let last = median(&after[after.len().saturating_sub(3)..]);
    let growth = if first > 0 {
        (last as f64 - first as f64) / first as f64 * 100.0
    } else {
        f64::INFINITY
    };
    let stats = envoy.stats();
    let vm_failures: Vec<(String, u64)> = stats
        .iter()
        .filter(|(k, v)| {
            k.starts_with("wasm.") && (k.contains("fail") || k.contains("crash")) && **v > 0
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let sent = tally.sent.load(Ordering::Relaxed);
    let allowed = tally.allowed.load(Ordering::Relaxed);
    let reached = v1.served() + v2.served();
    let wrong = tally.wrong_count.load(Ordering::Relaxed);
    let transport = tally.transport_errors.load(Ordering::Relaxed);
    let rotation_ok = rotation_seen.load(Ordering::Relaxed);
    let mirrored = shadow.lock().unwrap().as_ref().map_or(0, Backend::served);
    // Mirrors resumed once the target was back (when the run left time for it).
    let mirrors_resumed = mirrored > 0 || seconds < 120;
    let pass = growth < 5.0
        && mirrors_resumed
        && vm_failures.is_empty()
        && wrong == 0
        && transport == 0
        && reached == allowed
        && rotation_ok;
    let result = json!({
        "seconds": seconds, "workers": WORKERS, "clients": CLIENTS,
        "requests": sent, "allowed": allowed, "reached_backends": reached,
        "answered_wrong": wrong, "transport_errors": transport,
        "wrong_examples": *tally.wrong.lock().unwrap(),
        "rotated_key_accepted": rotation_ok,
        "mirrored_after_restart": mirrored,
        "rss_kb_after_warm_up": first, "rss_kb_at_end": last, "rss_growth_percent": (growth * 100.0).round() / 100.0,
        "rss_kb": rss,
        "wasm_failure_counters": vm_failures,
        "jwks_fetch_ok": stats.get("wasmcustom.switchyard.auth.corp.jwks_fetch_ok"),
        "pass": pass,
    });
    let out = paths::project_root().join("bench/soak.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&result).expect("json"))
        .expect("write soak.json");
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    if !pass {
        eprintln!("soak FAILED (see {})", out.display());
        std::process::exit(1);
    }
    eprintln!(
        "soak passed: {sent} requests, RSS {:+.2} % after warm-up",
        growth
    );
}
