//! The real `auth.wasm` in the harness, with tokens minted by a real JWT
//! library: every credential, rule and failure mode, on the virtual clock.

mod common;

use common::FilterPolicy;
use serde_json::{json, Value};
use switchyard_harness::world::EPOCH_START_NS;
use switchyard_harness::{Cluster, Exchange, Harness, Request};
use switchyard_tests::tokens::{self, claims, mint};

const NOW_S: u64 = EPOCH_START_NS / 1_000_000_000;

fn base_config() -> Value {
    json!({
        "providers": [
            {"name": "corp", "jwt": {"issuer": tokens::ISSUER, "audiences": [tokens::AUDIENCE],
             "jwks": tokens::jwks(),
             "from": [{"header": "authorization", "prefix": "Bearer "}, {"cookie": "session"}]}},
            {"name": "ci", "api_key": {"header": "x-api-key",
             "keys": [{"name": "ci-bot", "sha256": tokens::sha256_hex(b"ci-secret")}]}},
            {"name": "ops", "basic": {"users": [{"name": "alice", "bcrypt": tokens::bcrypt_hash("wonderland")}]}},
            {"name": "authz", "ext_auth": {"cluster": "authz", "authority": "authz", "path": "/check",
             "timeout_ms": 200, "forward_headers": ["authorization"], "copy_response_headers": ["x-user"]}}
        ],
        "rules": [
            {"match": {"path": {"prefix": "/public/"}}, "allow": "anonymous"},
            {"match": {"path": {"prefix": "/admin/"}}, "require": ["corp"], "claims": {"groups": {"contains": "admin"}}},
            {"match": {"path": {"prefix": "/ext/"}}, "require": ["authz"]},
            {"match": {}, "require_any": ["corp", "ci", "ops"]}
        ],
        "identity": {"header": "end-user", "from_claim": "sub", "claims_to_headers": {"x-user-groups": "groups"}}
    })
}

fn harness(config: &Value) -> Harness {
    let mut h = Harness::new();
    h.filter_policy("auth", &config.to_string())
        .expect("auth loads");
    h
}

fn bearer(path: &str, token: &str) -> Request {
    Request::get(path).header("authorization", format!("Bearer {token}"))
}

fn assert_denied(ex: &Exchange, status: u16, reason: &str) {
    assert_eq!(ex.status(), Some(status), "{reason}: {:?}", ex.response);
    assert!(
        !ex.reached_upstream(),
        "{reason}: a denied request must not reach the upstream"
    );
    let body = ex.response.as_ref().unwrap().body_str();
    assert!(body.contains(reason), "{reason}: body {body}");
}

#[test]
fn a_verified_token_sets_identity_and_spoofed_headers_are_stripped() {
    let mut h = harness(&base_config());
    let token = mint("RS256", &claims("jason", NOW_S));
    let ex = h.send(
        bearer("/productpage", &token)
            .header("end-user", "admin")
            .header("x-user-groups", "root"),
    );
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.upstream_header("end-user").as_deref(), Some("jason"));
    assert_eq!(ex.upstream_header("x-user-groups").as_deref(), Some("dev"));
    assert_eq!(h.metric("switchyard.auth.allowed"), Some(1));
    assert_eq!(h.metric("switchyard.auth.corp.allowed"), Some(1));

    // Without a credential, a spoofed identity gets nowhere.
    let ex = h.send(Request::get("/productpage").header("end-user", "jason"));
    assert_denied(&ex, 401, "missing_credential");
    let challenges = ex.response_header("www-authenticate").unwrap_or_default();
    assert!(challenges.contains("Bearer"), "{challenges}");
    // On an anonymous path the spoofed header is removed, not trusted.
    let ex = h.send(Request::get("/public/x").header("end-user", "jason"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.upstream_header("end-user"), None);
}

/// A header the request lacks is added, one it has is replaced: either
/// way the upstream sees one value of each identity header, even when the
/// configuration names one twice (the last write wins).
#[test]
fn each_identity_header_reaches_the_upstream_once() {
    let mut config = base_config();
    config["identity"]["claims_to_headers"] =
        json!({"end-user": "groups", "x-user-groups": "groups"});
    let mut h = harness(&config);
    let token = mint("RS256", &claims("jason", NOW_S));
    for spoofed in [None, Some("admin")] {
        let mut req = bearer("/productpage", &token);
        if let Some(v) = spoofed {
            req = req.header("end-user", v).header("x-user-groups", v);
        }
        let ex = h.send(req);
        assert_eq!(ex.status(), Some(200), "spoofed {spoofed:?}");
        let upstream = &ex
            .upstream
            .as_ref()
            .expect("reached the upstream")
            .headers
            .0;
        for name in ["end-user", "x-user-groups"] {
            let values: Vec<&[u8]> = upstream
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(values, [b"dev".as_slice()], "{name}, spoofed {spoofed:?}");
        }
    }
}

/// Envoy joins a repeated `authorization` header with `,` before any filter
/// sees it: a `,` anywhere in the value is two credentials. The scan goes
/// sixty-four bytes a step in Wasm, then sixteen, then one: the comma is put
/// in every position of the first two steps and of the tail, after the
/// token is cached (a hit must not skip it).
#[test]
fn a_comma_anywhere_in_a_bearer_is_a_joined_credential() {
    let mut h = harness(&base_config());
    let token = mint("RS256", &claims("jason", NOW_S));
    assert_eq!(h.send(bearer("/productpage", &token)).status(), Some(200));
    let value = format!("Bearer {token}");
    let positions: Vec<usize> = (0..value.len())
        .filter(|i| *i < 130 || *i + 100 > value.len())
        .collect();
    for at in positions {
        let mut joined = value.clone().into_bytes();
        joined.insert(at, b',');
        let ex = h.send(Request::get("/productpage").header("authorization", joined));
        assert_eq!(ex.status(), Some(401), "comma at {at}");
        let body = ex
            .response
            .as_ref()
            .map(|r| r.body_str())
            .unwrap_or_default();
        assert!(
            body.contains("ambiguous_credential"),
            "comma at {at}: {body}"
        );
        assert!(!ex.reached_upstream(), "comma at {at}");
    }
    let mut joined = value.clone();
    joined.push_str(&format!(",Bearer {token}"));
    assert_denied(
        &h.send(Request::get("/productpage").header("authorization", joined)),
        401,
        "ambiguous_credential",
    );
    assert_eq!(h.send(bearer("/productpage", &token)).status(), Some(200));
}

/// A cache hit needs every byte of the cached token (compared sixteen at a
/// time in Wasm): a token one character away from a cached one, anywhere,
/// is verified afresh and refused.
#[test]
fn a_cached_token_is_matched_on_every_byte() {
    let mut h = harness(&base_config());
    let token = mint("RS256", &claims("jason", NOW_S));
    assert_eq!(h.send(bearer("/productpage", &token)).status(), Some(200));
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for at in 0..token.len() {
        let mut near = token.clone().into_bytes();
        // Another character whose high bits differ, so the decoded bytes do.
        near[at] = match B64URL.iter().position(|&c| c == near[at]) {
            Some(i) => B64URL[i ^ 16],
            None => b'A', // a `.`: the token no longer parses
        };
        let near = String::from_utf8(near).unwrap();
        let ex = h.send(bearer("/productpage", &near));
        assert_eq!(ex.status(), Some(401), "changed at {at} of {}", token.len());
    }
    assert_eq!(h.send(bearer("/productpage", &token)).status(), Some(200));
}

#[test]
fn bad_tokens_are_401_with_their_reason() {
    let mut h = harness(&base_config());
    let good = claims("jason", NOW_S);
    let mut expired = good.clone();
    expired["exp"] = json!(NOW_S - 3600);
    let mut early = good.clone();
    early["nbf"] = json!(NOW_S + 3600);
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example.com");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!(["other"]);
    let token = mint("ES256", &good);
    let (head, rest) = token.split_once('.').unwrap();
    let tampered = format!("{head}.{}", rest.replacen('e', "f", 1));
    let cases = [
        ("token_expired", mint("RS256", &expired)),
        ("token_not_yet_valid", mint("ES384", &early)),
        ("token_issuer_mismatch", mint("EdDSA", &wrong_iss)),
        ("token_audience_mismatch", mint("PS256", &wrong_aud)),
        ("token_bad_signature", tampered),
        ("token_alg_not_allowed", tokens::unsigned(&good)),
        (
            "token_unknown_key",
            tokens::mint_with_kid("RS256", Some("rotated-away"), &good),
        ),
        (
            "token_unknown_key",
            tokens::mint_hs256_with_secret(&tokens::rsa_public_pem(), Some("rsa"), &good),
        ),
        (
            "token_bad_signature",
            tokens::mint_hs256_with_secret(&tokens::rsa_public_pem(), None, &good),
        ),
        (
            "token_too_large",
            format!("{}{}", mint("RS256", &good), "A".repeat(9000)),
        ),
        ("token_malformed", "not.a.jwt".to_owned()),
    ];
    for (reason, token) in &cases {
        let ex = h.send(bearer("/x", token));
        assert_denied(&ex, 401, reason);
    }
    assert_eq!(
        h.metric("switchyard.auth.denied.token_unknown_key"),
        Some(2)
    );
    assert_eq!(h.metric("switchyard.auth.denied"), Some(cases.len() as i64));
    assert_eq!(h.metric("switchyard.auth.allowed").unwrap_or(0), 0);
}

#[test]
fn every_algorithm_and_the_cookie_source() {
    let mut h = harness(&base_config());
    for alg in [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
    ] {
        let ex = h.send(bearer(
            "/x",
            &mint(alg, &claims(&format!("user-{alg}"), NOW_S)),
        ));
        assert_eq!(
            ex.upstream_header("end-user"),
            Some(format!("user-{alg}")),
            "{alg}"
        );
    }
    let token = mint("ES256", &claims("kim", NOW_S));
    let ex = h.send(Request::get("/x").header("cookie", format!("a=1; session={token}")));
    assert_eq!(ex.upstream_header("end-user").as_deref(), Some("kim"));
}

#[test]
fn claim_rules_answer_403() {
    let mut h = harness(&base_config());
    let ex = h.send(bearer(
        "/admin/users",
        &mint("RS256", &claims("jason", NOW_S)),
    ));
    assert_denied(&ex, 403, "claims_mismatch");
    let mut admin = claims("root", NOW_S);
    admin["groups"] = json!(["dev", "admin"]);
    let ex = h.send(bearer("/admin/users", &mint("RS256", &admin)));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(
        ex.upstream_header("x-user-groups").as_deref(),
        Some("dev,admin")
    );
}

#[test]
fn api_keys_and_basic_auth_identify_their_user() {
    let mut h = harness(&base_config());
    let ex = h.send(Request::get("/x").header("x-api-key", "ci-secret"));
    assert_eq!(ex.upstream_header("end-user").as_deref(), Some("ci-bot"));
    assert_denied(
        &h.send(Request::get("/x").header("x-api-key", "guess")),
        401,
        "invalid_api_key",
    );
    let basic = |pass: &str| {
        use base64::Engine;
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("alice:{pass}"));
        Request::get("/x").header("authorization", format!("Basic {creds}"))
    };
    for _ in 0..3 {
        let ex = h.send(basic("wonderland"));
        assert_eq!(ex.upstream_header("end-user").as_deref(), Some("alice"));
    }
    assert_denied(&h.send(basic("rabbit")), 401, "invalid_basic_credentials");
    // Header values that are not UTF-8 are an invalid credential, never a crash.
    let ex = h.send(Request::get("/x").header("authorization", b"Bearer \xff\xfe"));
    assert_denied(&ex, 401, "token_malformed");
    assert_eq!(h.failure(0), None);
}

#[test]
fn signatures_are_checked_by_the_host_when_it_offers_verify_signature() {
    let mut h = harness(&base_config());
    let token = mint("RS256", &claims("jason", NOW_S));
    for _ in 0..3 {
        assert_eq!(h.send(bearer("/x", &token)).status(), Some(200));
    }
    // Once by the host; then the verified token is cached.
    assert_eq!(h.world().signatures_verified, 1);
    assert_eq!(
        h.metric("switchyard.auth.signature_checks_by_host"),
        Some(1)
    );
    let es = mint("ES384", &claims("kim", NOW_S));
    assert_eq!(h.send(bearer("/x", &es)).status(), Some(200));
    assert_eq!(
        h.world().signatures_verified,
        2,
        "ECDSA goes to the host as DER"
    );
    // A forged signature is refused by the host too.
    let forged = format!("{}AAAA", &token[..token.len() - 4]);
    assert_denied(&h.send(bearer("/x", &forged)), 401, "token_bad_signature");

    // A host without the function: the filter checks in wasm.
    let mut h = Harness::new();
    h.without_foreign_function("verify_signature");
    h.filter_policy("auth", &base_config().to_string()).unwrap();
    assert_eq!(h.send(bearer("/x", &token)).status(), Some(200));
    assert_denied(&h.send(bearer("/x", &forged)), 401, "token_bad_signature");
    assert_eq!(h.world().signatures_verified, 0);
    assert!(h
        .logs()
        .iter()
        .any(|l| l.message.contains("no verify_signature")));
}

fn remote_config(refresh_s: u64) -> Value {
    let mut c = base_config();
    c["providers"][0]["jwt"]
        .as_object_mut()
        .unwrap()
        .remove("jwks");
    c["providers"][0]["jwt"]["remote_jwks"] = json!({"cluster": "idp", "authority": "idp.example.com",
        "path": "/.well-known/jwks.json", "refresh_s": refresh_s, "timeout_ms": 2000});
    c
}

fn idp_up() -> Cluster {
    Cluster::default()
        .header("content-type", "application/json")
        .body(&tokens::public_jwks().to_string())
}

fn remote_harness(idp: Cluster, refresh_s: u64) -> Harness {
    let mut h = Harness::new();
    h.cluster("idp", idp);
    h.filter_policy("auth", &remote_config(refresh_s).to_string())
        .unwrap();
    h
}

#[test]
fn remote_jwks_is_fetched_at_start_and_refreshed() {
    let mut h = remote_harness(idp_up(), 300);
    let ex = h.send(bearer("/x", &mint("ES256", &claims("jason", NOW_S))));
    assert_eq!(ex.upstream_header("end-user").as_deref(), Some("jason"));
    assert_eq!(h.metric("switchyard.auth.corp.jwks_fetch_ok"), Some(1));
    {
        let world = h.world();
        let call = &world.http_calls[0];
        assert_eq!(call.cluster, "idp");
        assert_eq!(
            call.headers.get_str(":path").as_deref(),
            Some("/.well-known/jwks.json")
        );
    }
    h.advance(300_000 + 200);
    assert_eq!(h.metric("switchyard.auth.corp.jwks_fetch_ok"), Some(2));
}

#[test]
fn requests_wait_for_the_first_key_set_then_get_503_never_an_allow() {
    let mut h = remote_harness(Cluster::status(503), 300);
    let token = mint("RS256", &claims("jason", NOW_S));
    let ex = h.send(bearer("/x", &token));
    assert_denied(&ex, 503, "jwks_unavailable");
    assert!(
        (2000..2300).contains(&ex.duration_ms),
        "waited {} ms",
        ex.duration_ms
    );
    assert!(h.metric("switchyard.auth.corp.jwks_fetch_failed").unwrap() >= 1);
    // Requests without a token do not wait: they are simply unauthenticated.
    let ex = h.send(Request::get("/x"));
    assert_denied(&ex, 401, "missing_credential");
    assert_eq!(ex.duration_ms, 0);
    // The provider recovers: the retry (with backoff) loads the keys.
    h.cluster("idp", idp_up());
    h.advance(60_000);
    assert_eq!(h.send(bearer("/x", &token)).status(), Some(200));
}

#[test]
fn waiting_requests_resume_when_the_keys_arrive() {
    let mut h = Harness::new();
    h.cluster("idp", idp_up());
    h.manual_http_calls(true);
    h.filter_policy("auth", &remote_config(300).to_string())
        .unwrap();
    let ids: Vec<_> = (0..5)
        .map(|i| {
            h.start(bearer(
                "/x",
                &mint("RS256", &claims(&format!("u{i}"), NOW_S)),
            ))
        })
        .collect();
    h.advance(500);
    assert!(
        ids.iter().all(|id| !h.is_done(*id)),
        "paused until the key set arrives"
    );
    let token = h.pending_calls()[0].token;
    h.answer_call(token, idp_up().response());
    for (i, id) in ids.iter().enumerate() {
        assert!(h.is_done(*id));
        let ex = h.exchange(*id).unwrap();
        assert_eq!(ex.upstream_header("end-user"), Some(format!("u{i}")));
    }
}

#[test]
fn stale_keys_keep_serving_while_the_provider_is_down() {
    let mut h = remote_harness(idp_up(), 60);
    let token = mint("RS256", &claims("jason", NOW_S));
    assert_eq!(h.send(bearer("/x", &token)).status(), Some(200));
    h.cluster("idp", Cluster::reset());
    h.advance(60_000 + 5_000);
    assert!(h.metric("switchyard.auth.corp.jwks_fetch_failed").unwrap() >= 1);
    let fresh = mint("ES256", &claims("kim", NOW_S + 65));
    assert_eq!(
        h.send(bearer("/x", &fresh))
            .upstream_header("end-user")
            .as_deref(),
        Some("kim")
    );
}

fn ext_harness(authz: Cluster, mode: &str) -> Harness {
    let mut c = base_config();
    c["providers"][3]["ext_auth"]["failure_mode"] = json!(mode);
    let mut h = Harness::new();
    h.cluster("authz", authz);
    h.filter_policy("auth", &c.to_string()).unwrap();
    h
}

#[test]
fn external_auth_allows_copies_headers_and_passes_denials_back() {
    let allow = Cluster::default()
        .header("x-user", "u-42")
        .header("end-user", "robin");
    let mut h = ext_harness(allow, "closed");
    let ex = h.send(
        Request::get("/ext/x")
            .header("authorization", "Token abc")
            .header("x-user", "spoof"),
    );
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.upstream_header("x-user").as_deref(), Some("u-42"));
    assert_eq!(ex.upstream_header("end-user").as_deref(), Some("robin"));
    {
        let world = h.world();
        let call = &world.http_calls[0];
        assert_eq!(
            call.headers.get_str("authorization").as_deref(),
            Some("Token abc")
        );
        assert_eq!(
            call.headers.get_str("x-forwarded-uri").as_deref(),
            Some("/ext/x")
        );
    }

    let deny = Cluster::status(403)
        .header("www-authenticate", "Token")
        .body("go away");
    let mut h = ext_harness(deny, "closed");
    let ex = h.send(Request::get("/ext/x"));
    assert_eq!(ex.status(), Some(403));
    assert_eq!(ex.response.as_ref().unwrap().body_str(), "go away");
    assert!(!ex.reached_upstream());
}

#[test]
fn external_auth_failures_follow_failure_mode() {
    let slow = Cluster::default().delay_ms(1000);
    let mut h = ext_harness(slow.clone(), "closed");
    let ex = h.send(Request::get("/ext/x"));
    assert_denied(&ex, 503, "ext_auth_unavailable");
    assert!((200..300).contains(&ex.duration_ms), "{}", ex.duration_ms);
    let mut h = ext_harness(Cluster::status(500), "closed");
    assert_denied(&h.send(Request::get("/ext/x")), 503, "ext_auth_unavailable");
    let mut h = ext_harness(slow, "open");
    let ex = h.send(Request::get("/ext/x"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(h.metric("switchyard.auth.authz.failed_open"), Some(1));
}

#[test]
fn dry_run_counts_but_lets_requests_through() {
    let mut c = base_config();
    c["dry_run"] = json!(true);
    let mut h = harness(&c);
    let ex = h.send(Request::get("/x").header("end-user", "jason"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(
        ex.upstream_header("end-user"),
        None,
        "identity is still never spoofable"
    );
    assert_eq!(h.metric("switchyard.auth.dry_run_denied"), Some(1));
    assert_eq!(
        h.metric("switchyard.auth.denied.missing_credential"),
        Some(1)
    );
    assert!(ex.logged("dry run: would deny /x with 401"));
}

#[test]
fn bad_configuration_is_rejected_naming_the_field() {
    let mut c = base_config();
    c["providers"][0]["jwt"]["algorithms"] = json!(["RS256", "none"]);
    let mut h = Harness::new();
    let err = h
        .filter_policy("auth", &c.to_string())
        .err()
        .expect("rejected");
    let logs: Vec<String> = h.logs().into_iter().map(|l| l.message).collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("providers[0].jwt.algorithms[1]")),
        "{err}: {logs:?}"
    );
}

#[test]
fn auth_in_front_of_the_router_makes_identity_routing_trustworthy() {
    let router = json!({"default_version": "v1", "routes": [
        {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"},
        {"name": "testers", "match": {"claims": {"groups": {"contains": "testers"}}}, "version": "v3"},
        {"name": "canary", "match": {"path": {"prefix": "/reviews"}},
         "split": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}], "sticky": {"claim": "sub"}}]});
    let mut c = base_config();
    c["rules"] = json!([{"match": {}, "require_any": ["corp"]}]);
    let load = |c: &Value| {
        let mut h = Harness::new();
        h.filter_policy("auth", &c.to_string()).unwrap();
        h.filter_policy("router", &router.to_string()).unwrap();
        for v in ["v1", "v2", "v3"] {
            h.cluster(v, Cluster::default());
            h.route("x-version", v, v);
        }
        h
    };
    let mut tester = claims("kim", NOW_S);
    tester["groups"] = json!(["testers"]);
    let note = "only with \"claims_property\": true";
    // Claims leave auth's filter only when asked for (off by default, as
    // jwt_authn's payload_in_metadata): the router says so once, not per request.
    let mut h = load(&c);
    for _ in 0..2 {
        let ex = h.send(bearer("/productpage", &mint("ES256", &tester)));
        assert_eq!(ex.upstream.as_ref().unwrap().cluster, "v1");
    }
    let notes = h.logs().iter().filter(|l| l.message.contains(note)).count();
    assert_eq!(notes, 1, "{:?}", h.logs());
    c["claims_property"] = json!(true);
    let mut h = load(&c);
    let ex = h.send(bearer(
        "/productpage",
        &mint("RS256", &claims("jason", NOW_S)),
    ));
    assert_eq!(ex.upstream.as_ref().unwrap().cluster, "v2");
    assert_denied(
        &h.send(Request::get("/productpage").header("end-user", "jason")),
        401,
        "missing_credential",
    );
    let ex = h.send(bearer("/productpage", &mint("ES256", &tester)));
    assert_eq!(
        ex.upstream.as_ref().unwrap().cluster,
        "v3",
        "a claims match in the router"
    );
    assert!(!h.logs().iter().any(|l| l.message.contains(note)));
    // Sticky by the verified subject: every request of a user lands on one version.
    let token = mint("ES256", &claims("sam", NOW_S));
    let first = h
        .send(bearer("/reviews/1", &token))
        .upstream
        .unwrap()
        .cluster;
    for _ in 0..10 {
        assert_eq!(
            h.send(bearer("/reviews/1", &token))
                .upstream
                .unwrap()
                .cluster,
            first
        );
    }
}

#[test]
fn aborted_requests_leave_nothing_behind() {
    let mut h = ext_harness(Cluster::default().header("x-user", "u-1"), "closed");
    h.set_trace(false);
    h.manual_http_calls(true);
    let abort_one = |h: &mut Harness| {
        let id = h.start(Request::get("/ext/x").header("authorization", "Token abc"));
        assert_eq!(h.pending_calls().len(), 1, "waiting for the auth service");
        h.abort(id);
        assert!(h.pending_calls().is_empty(), "the host cancelled the call");
    };
    for _ in 0..50 {
        abort_one(&mut h);
    }
    let before = h.memory_sizes();
    for _ in 0..2000 {
        abort_one(&mut h);
    }
    // Keeping each aborted request's state grew memory by 15 pages here; what
    // remains is the SDK's own token map, which never forgets a cancelled call.
    let grown = h.memory_sizes()[0] - before[0];
    assert!(
        grown <= 2 * 65536,
        "2,000 aborted requests grew memory by {grown} bytes"
    );
    assert_eq!(h.failure(0), None);
    // And the filter still serves.
    h.manual_http_calls(false);
    assert_eq!(
        h.send(Request::get("/ext/x"))
            .upstream_header("x-user")
            .as_deref(),
        Some("u-1")
    );
}

#[test]
fn stale_keys_serve_up_to_max_stale_s_then_give_way_to_503() {
    let mut c = remote_config(10);
    c["providers"][0]["jwt"]["remote_jwks"]["max_stale_s"] = json!(60);
    let mut h = Harness::new();
    h.cluster("idp", idp_up());
    h.filter_policy("auth", &c.to_string()).unwrap();
    h.advance(10);
    // Distinct tokens, so none is answered from the cache.
    let token = |i: u64| mint("RS256", &claims(&format!("u{i}"), NOW_S));
    assert_eq!(h.send(bearer("/x", &token(0))).status(), Some(200));
    // The provider fails from now on: the last good keys keep serving…
    h.cluster("idp", Cluster::status(503));
    h.advance(50_000);
    assert_eq!(h.send(bearer("/x", &token(1))).status(), Some(200));
    assert!(h.metric("switchyard.auth.corp.jwks_fetch_failed").unwrap() >= 3);
    assert_eq!(h.metric("switchyard.auth.corp.jwks_expired"), Some(0));
    // …until a minute after the last good fetch: then 503, never an allow.
    h.advance(11_000);
    assert_eq!(h.metric("switchyard.auth.corp.jwks_expired"), Some(1));
    assert_denied(&h.send(bearer("/x", &token(2))), 503, "jwks_unavailable");
    assert!(h
        .logs()
        .iter()
        .any(|l| l.message.contains("older than max_stale_s (60 s)")));
    // The provider recovers: the next refresh brings keys back.
    h.cluster("idp", idp_up());
    h.advance(10_500);
    assert_eq!(h.send(bearer("/x", &token(3))).status(), Some(200));
}
