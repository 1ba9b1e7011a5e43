//! The version router in real Envoy, in front of two real echo backends:
//! every routing scenario of the Istio traffic-management labs.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use switchyard_tests::{client, paths, send, Backend, Bootstrap, Envoy};

struct Setup {
    envoy: Envoy,
    v1: Backend,
    v2: Backend,
}

/// Envoy with `router.wasm` configured with `config` (or the
/// bootstrap's own example configuration when `None`), before v1 and v2.
fn setup(config: Option<Value>) -> Setup {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let b = bootstrap(config.as_ref(), &v1, &v2);
    Setup {
        envoy: Envoy::start(&b),
        v1,
        v2,
    }
}

/// The checked-in bootstrap pointed at `v1` and `v2`, with `config` if given.
fn bootstrap(config: Option<&Value>, v1: &Backend, v2: &Backend) -> Bootstrap {
    let mut b = Bootstrap::load(&paths::envoy_config("router.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    if let Some(c) = config {
        b.set_filter_config("switchyard.router", c);
    }
    b
}

/// Sends GET `path` with `headers`; returns (status, version that answered per
/// the backend itself, `x-served-version` per the filter).
fn get(s: &Setup, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let (status, resp) = switchyard_tests::get(&s.envoy.url(path), headers);
    let served = resp.header("x-served-version").unwrap_or("").to_owned();
    let answered = resp.header("x-echo-version").unwrap_or("").to_owned();
    (status, answered, served)
}

/// v2 was never reached, and v1 saw only the filter's `x-version: v1`,
/// never a client's value.
fn assert_only_v1_served(s: &Setup) {
    assert_eq!(s.v2.count(), 0);
    assert!(s
        .v1
        .received()
        .iter()
        .all(|r| r.header("x-version") == Some("v1")));
}

fn lab_config() -> Value {
    json!({
        "default_version": "v1",
        "routes": [
            {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"},
            {"name": "config-v2", "match": {"headers": {"config-version": {"exact": "v2"}}}, "version": "v2"}
        ],
        "override": {"header": "x-version-override", "allow": ["v1", "v2"]}
    })
}

#[test]
fn all_traffic_goes_to_v1() {
    let s = setup(Some(json!({"default_version": "v1"})));
    for i in 0..50 {
        let (status, answered, served) =
            get(&s, &format!("/productpage?i={i}"), &[("end-user", "jason")]);
        assert_eq!(
            (status, answered.as_str(), served.as_str()),
            (200, "v1", "v1")
        );
    }
    assert_only_v1_served(&s);
}

#[test]
fn end_user_jason_goes_to_v2_and_others_to_v1() {
    let s = setup(Some(lab_config()));
    for _ in 0..10 {
        assert_eq!(get(&s, "/productpage", &[("end-user", "jason")]).1, "v2");
        assert_eq!(get(&s, "/productpage", &[("end-user", "alice")]).1, "v1");
        assert_eq!(get(&s, "/productpage", &[]).1, "v1");
    }
    let at_v2 = s.v2.received();
    assert_eq!(at_v2.len(), 10);
    assert!(at_v2
        .iter()
        .all(|r| r.header("end-user") == Some("jason") && r.header("x-version") == Some("v2")));
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.router.jason-to-v2.v2.requests"),
        10
    );
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.router.default.v1.requests"),
        20
    );
}

#[test]
fn config_version_header_goes_to_v2() {
    let s = setup(Some(lab_config()));
    assert_eq!(get(&s, "/", &[("config-version", "v2")]).1, "v2");
    assert_eq!(get(&s, "/", &[("config-version", "v3")]).1, "v1");
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.router.config-v2.v2.requests"),
        1
    );
}

#[test]
fn spoofed_version_header_is_ignored() {
    let s = setup(Some(lab_config()));
    for _ in 0..10 {
        let (status, answered, served) = get(&s, "/", &[("x-version", "v2")]);
        assert_eq!(
            (status, answered.as_str(), served.as_str()),
            (200, "v1", "v1")
        );
    }
    assert_only_v1_served(&s);
}

#[test]
fn override_pins_only_allowed_versions() {
    let s = setup(Some(lab_config()));
    assert_eq!(get(&s, "/", &[("x-version-override", "v2")]).1, "v2");
    assert_eq!(get(&s, "/", &[("x-version-override", "v9")]).1, "v1");
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.router.override.v2.requests"),
        1
    );
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.router.override_rejected"),
        1
    );
}

#[test]
fn beta_cookie_under_api_goes_to_v2() {
    let s = setup(None);
    let cookie = [
        ("cookie", "session=abc; beta=1"),
        ("x-user-id", "cookie-user"),
    ];
    assert_eq!(get(&s, "/api/items", &cookie).1, "v2");
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.router.beta-cookie.v2.requests"),
        1
    );
}

fn split_config(v1: u32, v2: u32) -> Value {
    json!({"default_version": "v1", "routes": [
        {"name": "split", "split": [{"version": "v1", "weight": v1}, {"version": "v2", "weight": v2}]}]})
}

/// Sends `n` requests from 4 client threads; returns how many v2 answered.
fn v2_share(s: &Setup, n: usize) -> f64 {
    let url = s.envoy.url("/reviews");
    let per_thread = n / 4;
    let v2: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let agent = client();
                    (0..per_thread)
                        .filter(|_| {
                            let (status, resp) = send(agent.get(&url));
                            assert_eq!(status, 200);
                            resp.header("x-echo-version") == Some("v2")
                        })
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .sum()
    });
    v2 as f64 / (per_thread * 4) as f64
}

fn check_split(v1: u32, v2: u32) {
    let s = setup(Some(split_config(v1, v2)));
    let share = v2_share(&s, 2000);
    let want = f64::from(v2) / f64::from(v1 + v2);
    assert!(
        (share - want).abs() <= 0.02,
        "{v1}/{v2}: v2 got {:.1}% of 2000",
        share * 100.0
    );
    assert_eq!(s.v1.count() + s.v2.count(), 2000);
}

#[test]
fn split_90_10() {
    check_split(90, 10);
}

#[test]
fn split_50_50() {
    check_split(50, 50);
}

#[test]
fn split_80_20() {
    check_split(80, 20);
}

#[test]
fn sticky_split_keeps_each_user_on_one_version() {
    let s = setup(None); // the example: 90/10 canary, sticky on x-user-id
    let mut seen: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..200 {
            let id = format!("user-{user}");
            let (status, answered, served) = get(&s, "/home", &[("x-user-id", &id)]);
            assert_eq!(status, 200);
            assert_eq!(
                answered, served,
                "the filter names the version that answered"
            );
            let first = seen.entry(id.clone()).or_insert_with(|| answered.clone());
            assert_eq!(*first, answered, "{id} moved in round {round}");
        }
    }
    let on_v2 = seen.values().filter(|v| *v == "v2").count();
    assert!(
        (5..=40).contains(&on_v2),
        "{on_v2} of 200 users on v2 for a 90/10 split"
    );
}

#[test]
fn bad_configuration_is_rejected_with_the_field_named() {
    let cases = [
        (
            json!({"default_version": "v1", "routes": [{"split": [{"version": "v1", "weight": 0}]}]}),
            "routes[0].split: total weight must be positive",
        ),
        (
            json!({"default_version": "v1", "routes": [{"match": {"headers": {"a": {"regex": "("}}}, "version": "v2"}]}),
            "routes[0].match.headers.a.regex",
        ),
        (
            json!({"default_version": "v1", "override": {"header": "x-o", "allow": ["v7"]}}),
            "override.allow[0]: unknown version",
        ),
        (
            json!({"default_version": "v1", "rutes": []}),
            "unknown field `rutes`",
        ),
    ];
    for (config, expected) in cases {
        let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
        let log = match Envoy::try_start(&bootstrap(Some(&config), &v1, &v2)) {
            Ok(envoy) => panic!("Envoy accepted {config}:\n{}", envoy.logs()),
            Err(log) => log,
        };
        let line = log
            .lines()
            .find(|l| l.contains("router: invalid configuration"));
        let line =
            line.unwrap_or_else(|| panic!("no configuration error logged for {config}:\n{log}"));
        assert!(line.contains(expected), "{line}");
    }
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status line.
fn raw_request(s: &Setup, head: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.envoy.port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head).expect("write");
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn malformed_and_huge_requests_do_not_trap_the_vm() {
    let s = setup(None);
    let mut odd: Vec<Vec<u8>> = vec![
        b"GET /api/x HTTP/1.1\r\nhost: a\r\nend-user: \xff\xfe\r\nx-user-id: \xc3\x28\r\ncookie: beta=\xff\r\n\r\n".to_vec(),
        b"GET /api/x HTTP/1.1\r\nhost: a\r\ncookie: ;;==;\r\ncookie: beta\r\n\r\n".to_vec(),
        b"GET * HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
        b"OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
    ];
    let huge_cookie = format!(
        "GET /api/x HTTP/1.1\r\nhost: a\r\ncookie: {}beta=1\r\n\r\n",
        "k=v; ".repeat(9_000)
    );
    odd.push(huge_cookie.into_bytes());
    for head in &odd {
        let status = raw_request(&s, head);
        assert!(
            status.starts_with("HTTP/1.1 "),
            "no HTTP answer: {status:?}"
        );
    }
    // The VM is alive and still deciding.
    assert_eq!(get(&s, "/", &[("end-user", "jason")]).1, "v2");
    let logs = s.envoy.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert_eq!(s.envoy.counter("wasm.envoy.wasm.runtime.v8.failed"), 0);
}
