//! The auth filter in real Envoy, in front of the version router: the JWKS
//! and the external auth service are real HTTP servers behind Envoy clusters,
//! and tokens are minted by a real JWT library.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_tests::tokens::{self, mint};
use switchyard_tests::{paths, Backend, Bootstrap, Envoy, Reply, Responder};

struct Setup {
    envoy: Envoy,
    v1: Backend,
    v2: Backend,
    idp: Backend,
    authz: Backend,
}

fn jwks_reply() -> Responder {
    let body = tokens::public_jwks().to_string();
    Arc::new(move |_| Reply::new(200, body.clone()).header("content-type", "application/json"))
}

fn unavailable() -> Responder {
    Arc::new(|_| Reply::new(503, "down"))
}

/// The partner auth service: `Token good` is user p-7; anything else is refused.
fn authz_reply() -> Responder {
    Arc::new(|r| match r.header("authorization") {
        Some("Token good") => Reply::new(200, "")
            .header("x-user", "p-7")
            .header("end-user", "partner-7"),
        _ => Reply::new(403, "partner says no").header("content-type", "text/plain"),
    })
}

/// Envoy with `envoy-config/auth.yaml`, its auth configuration edited by
/// `edit`, put in service once every root context holds the key set (as a
/// gateway is), so that no request waits for keys.
fn setup(edit: impl FnOnce(&mut Value)) -> Setup {
    let s = setup_with_idp(jwks_reply(), edit);
    s.envoy.wait_for_key_sets("corp");
    s
}

/// Envoy with `envoy-config/auth.yaml` and an identity provider answering
/// with `idp`; requests may arrive before any key set.
fn setup_with_idp(idp: Responder, edit: impl FnOnce(&mut Value)) -> Setup {
    let s = (
        Backend::start("v1"),
        Backend::start("v2"),
        Backend::serving("idp", idp),
        Backend::serving("authz", authz_reply()),
    );
    let mut b = Bootstrap::load(&paths::envoy_config("auth.yaml"));
    b.set_cluster_port("v1", s.0.port)
        .set_cluster_port("v2", s.1.port)
        .set_cluster_port("idp", s.2.port)
        .set_cluster_port("authz", s.3.port);
    let mut config = b.filter_config("switchyard.auth");
    edit(&mut config);
    b.set_filter_config("switchyard.auth", &config);
    Setup {
        envoy: Envoy::start(&b),
        v1: s.0,
        v2: s.1,
        idp: s.2,
        authz: s.3,
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// GET `path` with `headers`: (status, version that answered, body).
fn get(s: &Setup, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let (status, resp) = switchyard_tests::get(&s.envoy.url(path), headers);
    let version = resp.header("x-echo-version").unwrap_or("").to_owned();
    let www = resp.header("www-authenticate").unwrap_or("").to_owned();
    let body = resp.into_string().unwrap_or_default();
    (status, version, format!("{www} {body}"))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Retries `f` until it holds (Envoy's timers run in real time).
fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_token_for_jason_lands_on_v2_and_a_spoofed_header_does_not() {
    let s = setup(|_| {});
    let token = mint("RS256", &tokens::claims("jason", now_s()));
    let (status, version, _) = get(&s, "/productpage", &[("authorization", &bearer(&token))]);
    assert_eq!((status, version.as_str()), (200, "v2"));
    let seen = s.v2.received();
    assert_eq!(seen[0].header("end-user"), Some("jason"));
    assert_eq!(seen[0].header("x-user-groups"), Some("dev"));

    // The lab's header, sent by the client with no credential: refused.
    let (status, _, body) = get(&s, "/productpage", &[("end-user", "jason")]);
    assert_eq!(status, 401);
    assert!(
        body.contains("Bearer realm") && body.contains("missing_credential"),
        "{body}"
    );
    // On an anonymous path it is stripped, so the router sends it to v1.
    let (status, version, _) = get(&s, "/public/productpage", &[("end-user", "jason")]);
    assert_eq!((status, version.as_str()), (200, "v1"));
    assert_eq!(s.v1.received()[0].header("end-user"), None);
    assert_eq!(s.v2.count(), 1);

    // One fetch for the Envoy, though it runs a root context on the main
    // thread and one per worker: the others adopt it from shared data.
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.auth.corp.jwks_fetch_ok"),
        1
    );
    assert_eq!(s.idp.count(), 1);
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.auth.denied.missing_credential"),
        1
    );
    assert!(s.idp.count() >= 1);
    // Envoy's own verify_signature checked the RSA signature.
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.auth.signature_checks_by_host"),
        1
    );
}

#[test]
fn ecdsa_eddsa_claims_routing_and_bad_tokens() {
    let s = setup(|_| {});
    for alg in ["ES256", "EdDSA"] {
        let token = mint(alg, &tokens::claims(&format!("user-{alg}"), now_s()));
        let (status, version, _) = get(&s, "/x", &[("authorization", &bearer(&token))]);
        assert_eq!((status, version.as_str()), (200, "v1"), "{alg}");
    }
    // The router reads the verified claims the auth filter left in filter state.
    let mut tester = tokens::claims("kim", now_s());
    tester["groups"] = json!(["testers"]);
    let token = mint("ES256", &tester);
    let (status, version, _) = get(&s, "/x", &[("cookie", &format!("session={token}"))]);
    assert_eq!((status, version.as_str()), (200, "v2"));

    let mut expired = tokens::claims("jason", now_s());
    expired["exp"] = json!(now_s() - 3600);
    let good = mint("RS256", &tokens::claims("jason", now_s()));
    let tampered = format!("{}AAAA", &good[..good.len() - 4]);
    for (token, reason) in [
        (mint("RS256", &expired), "token_expired"),
        (tampered, "token_bad_signature"),
        (
            tokens::unsigned(&tokens::claims("jason", now_s())),
            "token_alg_not_allowed",
        ),
        (
            mint("HS256", &tokens::claims("jason", now_s())),
            "token_alg_not_allowed",
        ),
    ] {
        let (status, _, body) = get(&s, "/x", &[("authorization", &bearer(&token))]);
        assert_eq!(status, 401, "{reason}");
        assert!(body.contains(reason), "{reason}: {body}");
    }
    let (status, _, body) = get(&s, "/admin/x", &[("authorization", &bearer(&good))]);
    assert_eq!(status, 403);
    assert!(body.contains("claims_mismatch"), "{body}");
    assert_eq!(s.v2.received().len(), 1);
}

#[test]
fn api_keys_and_external_auth() {
    let s = setup(|_| {});
    let (status, version, _) = get(&s, "/x", &[("x-api-key", "ci-secret")]);
    assert_eq!((status, version.as_str()), (200, "v1"));
    assert_eq!(s.v1.received()[0].header("end-user"), Some("ci-bot"));
    assert_eq!(get(&s, "/x", &[("x-api-key", "nope")]).0, 401);

    let (status, _, _) = get(
        &s,
        "/partner/x",
        &[("authorization", "Token good"), ("x-user", "spoof")],
    );
    assert_eq!(status, 200);
    let last = s.v1.received().pop().unwrap();
    assert_eq!(last.header("x-user"), Some("p-7"));
    assert_eq!(last.header("end-user"), Some("partner-7"));
    let check = &s.authz.received()[0];
    assert_eq!(check.path, "/check");
    assert_eq!(check.header("x-forwarded-uri"), Some("/partner/x"));

    let (status, _, body) = get(&s, "/partner/x", &[("authorization", "Token bad")]);
    assert_eq!(status, 403);
    assert!(body.contains("partner says no"), "{body}");
    assert_eq!(s.v1.count(), 2);
}

#[test]
fn jwks_down_at_start_means_503_then_recovery() {
    let s = setup_with_idp(unavailable(), |c| {
        c["providers"][0]["jwt"]["remote_jwks"]["timeout_ms"] = json!(500);
    });
    let token = mint("RS256", &tokens::claims("jason", now_s()));
    let started = Instant::now();
    let (status, _, body) = get(&s, "/x", &[("authorization", &bearer(&token))]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("jwks_unavailable"), "{body}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the request waited for the keys"
    );
    assert_eq!(s.v1.count() + s.v2.count(), 0, "never a silent allow");
    assert!(
        s.envoy
            .counter("wasmcustom.switchyard.auth.corp.jwks_fetch_failed")
            >= 1
    );

    s.idp.set_responder(jwks_reply());
    // The Envoy's one back-off (1 s, 2 s, 4 s…) brings the next fetch; the
    // other root context adopts its key set on its next tick.
    s.envoy.wait_for_key_sets("corp");
    let (status, version, _) = get(&s, "/x", &[("authorization", &bearer(&token))]);
    assert_eq!((status, version.as_str()), (200, "v2"));
}

#[test]
fn jwks_down_mid_run_keeps_the_last_good_keys() {
    let s = setup(|c| {
        c["providers"][0]["jwt"]["remote_jwks"]["refresh_s"] = json!(1);
    });
    let first = mint("ES256", &tokens::claims("jason", now_s()));
    assert_eq!(get(&s, "/x", &[("authorization", &bearer(&first))]).1, "v2");
    s.idp.set_responder(unavailable());
    eventually("a refresh fails", Duration::from_secs(10), || {
        s.envoy
            .counter("wasmcustom.switchyard.auth.corp.jwks_fetch_failed")
            >= 1
    });
    // A token never seen before is still verified with the last good keys.
    let fresh = mint("RS256", &tokens::claims("jason", now_s() + 1));
    let (status, version, _) = get(&s, "/x", &[("authorization", &bearer(&fresh))]);
    assert_eq!((status, version.as_str()), (200, "v2"));
}
