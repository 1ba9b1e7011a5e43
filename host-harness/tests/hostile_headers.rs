//! The real `.wasm` filters (each, and `switchyard.wasm` with every section)
//! fed arbitrary header maps through the harness: arbitrary and non-UTF-8
//! bytes, repeated and huge values, spoofed control headers, thousands of
//! headers. Every input is checked against what a user relies on, not just
//! "no trap": a client-sent version, identity or shadow header never
//! survives; an identity reaches the upstream only after a verified
//! credential; the version is one the configuration names; the budget never
//! exceeds the configured one; an anonymous request reaches only the
//! anonymous paths, as the upstream will read them.
//!
//! Its `hostile_headers_through_chain` target runs the single-policy cases through
//! `switchyard.wasm` with that section alone; the chain case always runs.

mod common;

use common::FilterPolicy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use switchyard_harness::world::EPOCH_START_NS;
use switchyard_harness::{Cluster, Exchange, Harness, Request};
use switchyard_tests::tokens::{self, claims, mint};
use switchyard_tests::vectors;

const NOW_S: u64 = EPOCH_START_NS / 1_000_000_000;
/// Cases per filter in `make test`; `PROPTEST_CASES` runs more.
const CASES: u32 = 200;

/// What a hostile client may put in one header.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    value: Vec<u8>,
}

/// Credentials and values the policies read, mixed with arbitrary bytes, so
/// cases reach every decision and not only the "no credential" one.
fn values() -> Vec<Vec<u8>> {
    let jason = mint("RS256", &claims("jason", NOW_S));
    let admin = mint(
        "ES256",
        &serde_json::json!({"iss": tokens::ISSUER, "aud": tokens::AUDIENCE, "sub": "root",
                            "iat": NOW_S, "exp": NOW_S + 600, "groups": ["admin"]}),
    );
    let expired = mint("RS256", &claims("mallory", NOW_S - 7200));
    let mut forged = jason.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    [
        format!("Bearer {jason}").into_bytes(),
        format!("Bearer {admin}").into_bytes(),
        format!("Bearer {expired}").into_bytes(),
        [b"Bearer ".as_slice(), &forged].concat(),
        format!("bearer {jason}").into_bytes(),
        format!("Bearer  {jason}").into_bytes(),
        b"ci-secret".to_vec(),
        b"ci-secret ".to_vec(),
        b"jason".to_vec(),
        b"v2".to_vec(),
        b"v3".to_vec(),
        b"1".to_vec(),
        b"999999999".to_vec(),
        b"-5".to_vec(),
        b"abort".to_vec(),
        b"user=alice; user=bob".to_vec(),
        b"\xff\xfe\x00bin".to_vec(),
        vec![b'a'; 16 * 1024],
    ]
    .into()
}

const NAMES: &[&str] = &[
    "authorization",
    "x-api-key",
    "cookie",
    "end-user",
    "x-user-groups",
    "x-version",
    "x-pin-version",
    "x-request-timeout-ms",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-max-retries",
    "x-fault",
    "x-shadow",
    "x-switchyard-shadow",
    "grpc-timeout",
    "content-type",
];

const PATHS: &[&str] = &[
    "/",
    "/public/docs",
    "/public/../admin/users",
    "/public/%2e%2e/admin",
    "/public/..\\admin",
    "/public/;/../admin",
    "/public//../admin",
    "/public/%2fadmin",
    "/PUBLIC/docs",
    "/admin/users",
    "/api/orders?x=1",
    "/reports/q3",
    "/reviews/1",
    "/reviews/%00",
    "/a/./b/../../public/x",
];

fn header() -> impl Strategy<Value = Spec> {
    let known = values();
    let name = prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(str::to_owned),
        1 => "[a-z][a-z0-9-]{0,20}",
    ];
    let value = prop_oneof![
        3 => proptest::sample::select(known),
        2 => proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (name, value).prop_map(|(name, value)| Spec { name, value })
}

fn request_strategy() -> impl Strategy<Value = (String, Vec<Spec>)> {
    (
        proptest::sample::select(PATHS).prop_map(str::to_owned),
        proptest::collection::vec(header(), 0..24),
    )
}

fn request(path: &str, headers: &[Spec]) -> Request {
    headers
        .iter()
        .fold(Request::get(path), |r, h| r.header(&h.name, &h.value))
}

fn sent<'a>(headers: &'a [Spec], name: &str) -> impl Iterator<Item = &'a [u8]> + 'a {
    let name = name.to_owned();
    headers
        .iter()
        .filter(move |h| h.name == name)
        .map(|h| h.value.as_slice())
}

fn upstream_all(ex: &Exchange, name: &str) -> Vec<Vec<u8>> {
    ex.upstream.as_ref().map_or(Vec::new(), |u| {
        u.headers
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    })
}

fn router_control(ex: &Exchange, name: &str) -> Option<u64> {
    let u = ex.upstream.as_ref()?;
    let v = u.router_headers.get(name)?;
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Who the request proves to be, by the credentials the auth config accepts
/// (`None`: no credential that verifies; `Err`: two credentials, ambiguous).
fn credential(headers: &[Spec]) -> Result<Option<&'static str>, ()> {
    let (jason, admin) = bearers();
    let auths: Vec<_> = sent(headers, "authorization").collect();
    let keys: Vec<_> = sent(headers, "x-api-key").collect();
    if auths.len() > 1 || keys.len() > 1 {
        return Err(());
    }
    // `Bearer 1*SP token`, the scheme case-insensitive (RFC 6750 §2.1, RFC 9110 §11.1).
    let is = |a: &[u8], b: &[u8]| {
        let token = &b[7..];
        a.len() > 7
            && a[..6].eq_ignore_ascii_case(&b[..6])
            && a[6..]
                .iter()
                .position(|&c| c != b' ')
                .is_some_and(|i| i > 0 && a[6 + i..] == *token)
    };
    Ok(match (auths.first(), keys.first()) {
        (Some(a), _) if is(a, &jason) => Some("jason"),
        (Some(a), _) if is(a, &admin) => Some("root"),
        (_, Some(k)) if *k == b"ci-secret" => Some("ci-bot"),
        _ => None,
    })
}

/// The two bearer values in [`values`] that verify: jason's and root's.
fn bearers() -> (Vec<u8>, Vec<u8>) {
    let v = values();
    (v[0].clone(), v[1].clone())
}

fn run(
    h: &mut Harness,
    check: impl Fn(&str, &[Spec], &Exchange, &Harness) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..Config::default()
    });
    // The runner's closure is `Fn`; one harness serves every case, as one VM serves every request.
    let h = std::cell::RefCell::new(h);
    runner
        .run(&request_strategy(), |(path, headers)| {
            let ex = h.borrow_mut().send(request(&path, &headers));
            prop_assert!(ex.completed, "the stream ended: {:?}", ex.local_reply);
            check(&path, &headers, &ex, &h.borrow())
        })
        .unwrap();
}

fn config(name: &str) -> Value {
    vectors::config(&vectors::load(), name)
}

/// The upstream acts on a normal path: no dot segments, no encoded dots or
/// slashes, no backslashes.
fn normal_path(ex: &Exchange) -> Result<(), TestCaseError> {
    let Some(path) = upstream_all(ex, ":path").pop() else {
        return Ok(());
    };
    let p = String::from_utf8_lossy(&path).to_ascii_lowercase();
    let p = p.split('?').next().unwrap_or("");
    prop_assert!(
        !p.split('/').any(|s| s == ".." || s == ".")
            && !p.contains("%2e")
            && !p.contains("%2f")
            && !p.contains('\\'),
        "the upstream got an ambiguous path {p}"
    );
    Ok(())
}

#[test]
fn the_router_answers_only_configured_versions() {
    let mut h = Harness::new();
    h.filter_policy("router", &config("lab_router").to_string())
        .unwrap();
    run(&mut h, |path, headers, ex, _| {
        if !ex.reached_upstream() {
            prop_assert_eq!(
                ex.status(),
                Some(400),
                "only an ambiguous path is refused: {}",
                path
            );
            return Ok(());
        }
        let versions = upstream_all(ex, "x-version");
        prop_assert_eq!(versions.len(), 1, "one version header: {:?}", versions);
        prop_assert!(
            [&b"v1"[..], b"v2", b"v3"].contains(&versions[0].as_slice()),
            "version {:?}",
            String::from_utf8_lossy(&versions[0])
        );
        // v3 only by the override header, which only v3 may name.
        if versions[0] == b"v3" {
            prop_assert!(sent(headers, "x-pin-version").next() == Some(b"v3"));
        }
        normal_path(ex)
    });
}

#[test]
fn auth_forwards_an_identity_only_after_a_verified_credential() {
    let mut h = Harness::new();
    h.filter_policy("auth", &config("auth").to_string())
        .unwrap();
    run(&mut h, |_, headers, ex, _| {
        let identity = upstream_all(ex, "end-user");
        prop_assert!(identity.len() <= 1, "one identity header");
        if !ex.reached_upstream() {
            prop_assert!(
                matches!(ex.status(), Some(400 | 401 | 403)),
                "{:?}",
                ex.status()
            );
            return Ok(());
        }
        normal_path(ex)?;
        let who = credential(headers);
        match identity
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
        {
            Some(subject) => {
                let proved =
                    who.map_err(|()| TestCaseError::fail("ambiguous credential allowed"))?;
                match proved {
                    Some("root-or-invalid") => prop_assert_eq!(subject, "root"),
                    Some(s) => prop_assert_eq!(subject, s),
                    None => prop_assert!(false, "identity {subject} without a credential"),
                }
            }
            None => {
                // Only an anonymous path is let through without an identity.
                let path = upstream_all(ex, ":path").pop().unwrap_or_default();
                prop_assert!(
                    path.starts_with(b"/public/"),
                    "anonymous {:?}",
                    String::from_utf8_lossy(&path)
                );
                prop_assert!(upstream_all(ex, "x-user-groups").is_empty());
            }
        }
        Ok(())
    });
}

#[test]
fn timeouts_never_grant_more_than_the_configured_budget() {
    let mut h = Harness::new();
    h.filter_policy("timeouts", &config("timeouts").to_string())
        .unwrap();
    run(&mut h, |path, _, ex, _| {
        // The rule's timeout, else the cap on a caller's own deadline.
        let cap = if path.starts_with("/api/") {
            500
        } else if path.starts_with("/reports/") {
            5000
        } else {
            switchyard_core::timeouts::DEFAULT_DEADLINE_MAX_MS
        };
        if let Some(ms) = router_control(ex, "x-envoy-upstream-rq-timeout-ms") {
            prop_assert!(ms <= cap, "budget {ms} ms on {path}");
        }
        for v in upstream_all(ex, "x-request-timeout-ms") {
            let ms = std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            prop_assert!(
                ms.is_some_and(|ms| ms <= cap),
                "propagated {:?} on {path}",
                String::from_utf8_lossy(&v)
            );
        }
        prop_assert!(upstream_all(ex, "x-request-timeout-ms").len() <= 1);
        if !ex.reached_upstream() {
            prop_assert!(
                matches!(ex.status(), Some(400 | 503 | 504)),
                "{:?}",
                ex.status()
            );
        }
        normal_path(ex)
    });
}

#[test]
fn shadow_never_lets_a_client_mark_the_primary_as_shadow_traffic() {
    let config = config("shadow");
    let tag = switchyard_core::shadow::Shadow::from_json(config.to_string().as_bytes())
        .unwrap()
        .tag_header()
        .to_owned();
    let mut h = Harness::new();
    h.cluster("reviews-v2", Cluster::status(200));
    h.filter_policy("shadow", &config.to_string()).unwrap();
    run(&mut h, |_, _, ex, _| {
        prop_assert!(
            upstream_all(ex, &tag).is_empty(),
            "the primary carries {tag}"
        );
        for call in &ex.http_calls {
            let tags: Vec<_> = call.headers.0.iter().filter(|(k, _)| *k == tag).collect();
            prop_assert_eq!(tags.len(), 1, "a shadow copy carries exactly one {}", tag);
        }
        normal_path(ex)
    });
}

#[test]
fn the_chain_keeps_every_promise_at_once() {
    let config = config("chain");
    let tag = switchyard_core::shadow::Shadow::from_json(config["shadow"].to_string().as_bytes())
        .unwrap()
        .tag_header()
        .to_owned();
    let mut h = Harness::new();
    h.cluster("shadow", Cluster::status(200));
    h.filter(common::built("switchyard"), &config.to_string())
        .unwrap();
    let mirrored = std::cell::Cell::new(0i64);
    run(&mut h, |_, headers, ex, h| {
        let sampled = h
            .metric("switchyard.shadow.jason-mirror.sampled")
            .unwrap_or(0);
        let mirrored_now = sampled - mirrored.replace(sampled);
        if !ex.reached_upstream() {
            prop_assert_eq!(mirrored_now, 0, "a refused request is never mirrored");
            prop_assert!(
                matches!(ex.status(), Some(400 | 401 | 403 | 503 | 504)),
                "{:?}",
                ex.status()
            );
            return Ok(());
        }
        normal_path(ex)?;
        let identity = upstream_all(ex, "end-user");
        prop_assert!(identity.len() <= 1);
        let subject = identity
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let versions = upstream_all(ex, "x-version");
        prop_assert_eq!(versions.len(), 1);
        let jason = subject.as_deref() == Some("jason");
        prop_assert_eq!(
            versions[0].as_slice(),
            if jason { &b"v2"[..] } else { b"v1" }
        );
        if jason {
            prop_assert_eq!(credential(headers), Ok(Some("jason")));
        }
        let budget = router_control(ex, "x-envoy-upstream-rq-timeout-ms");
        prop_assert_eq!(budget, Some(if jason { 250 } else { 3000 }));
        prop_assert!(upstream_all(ex, &tag).is_empty());
        // Mirrored (counted as sampled) exactly when the verified subject is jason.
        prop_assert_eq!(mirrored_now, i64::from(jason), "mirrored iff jason");
        Ok(())
    });
}

/// Thousands of headers, huge values and every name repeated: each filter
/// still answers (Envoy's own limits are higher than its defaults here; the
/// filters must not be the part that breaks).
#[test]
fn thousands_of_headers_and_huge_values_are_answered() {
    for (filter, section) in [
        ("router", "lab_router"),
        ("auth", "auth"),
        ("timeouts", "timeouts"),
        ("shadow", "shadow"),
    ] {
        let mut h = Harness::new();
        h.cluster("reviews-v2", Cluster::status(200));
        h.filter_policy(filter, &config(section).to_string())
            .unwrap();
        let mut r = Request::get("/reviews/1");
        for i in 0..3000 {
            r = r.header(NAMES[i % NAMES.len()], format!("value-{i}"));
        }
        r = r.header("x-huge", vec![b'z'; 1 << 20]);
        let ex = h.send(r);
        assert!(ex.completed, "{filter}: no answer");
        match filter {
            "auth" => assert_eq!(ex.status(), Some(401), "{filter}: repeated credentials"),
            _ => assert!(ex.reached_upstream(), "{filter}: {:?}", ex.local_reply),
        }
        if filter == "router" {
            assert_eq!(upstream_all(&ex, "x-version").len(), 1);
        }
    }
}
