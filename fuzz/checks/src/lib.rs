//! What each fuzz target checks, one function per target, so the same body
//! runs under libFuzzer (`make fuzz`, `fuzz/fuzz_targets/`) and as a
//! regression test over the checked-in corpus (`make test`,
//! `tests/corpus.rs`). Each function must never panic on any input; where an
//! input reaches a decision, it also checks what a user relies on (an
//! `assert!` here is a finding).

pub mod input;

use input::Input;
use std::rc::Rc;
use switchyard_core::auth::jwt::{self, Alg, ClaimRules, KeySet};
use switchyard_core::auth::{Auth, Caches, Env, Step, Verdict};
use switchyard_core::matcher::{self, MatchConfig, RequestMatch};
use switchyard_core::router::Router;
use switchyard_core::shadow::{compare, Shadow};
use switchyard_core::timeouts::{self, Budget, Timeouts};
use switchyard_core::{chain, HeaderList};

/// One target's checks: panics (an `assert!` included) are findings.
pub type Check = fn(&[u8]);

/// Every target, by its name under `fuzz/libfuzzer/fuzz_targets` and `fuzz/corpus`.
pub const TARGETS: &[(&str, Check)] = &[
    ("config", config),
    ("matcher", matcher),
    ("jwt", jwt),
    ("jwks", jwks),
    ("credentials", credentials),
    ("deadlines", deadlines),
    ("shadow_compare", shadow_compare),
];

/// The virtual "now" the JWT seeds were minted for (2026-01-01T00:00:00Z).
pub const NOW_S: u64 = 1_767_225_600;

/// The public keys the JWT seeds are signed with (the test keys in `tests/keys`).
pub const JWKS: &str = include_str!("../../seeds/jwks.json");

/// Any policy's configuration, or the chain's: the first byte picks which.
/// A rejection names a field or says what the document lacks; an accepted
/// router only ever answers a version its configuration names.
pub fn config(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    let error = match which % 5 {
        0 => match Router::from_json(json) {
            Ok(router) => {
                let req = HeaderList::from_pairs([(":path", "/"), ("end-user", "jason")]);
                let d = router.decide(&req, 7);
                assert!(router.outcomes().iter().any(|o| o.version == d.version));
                return;
            }
            Err(e) => e,
        },
        1 => match Auth::from_json(json) {
            Ok(_) => return,
            Err(e) => e,
        },
        2 => match Timeouts::from_json(json) {
            Ok(_) => return,
            Err(e) => e,
        },
        3 => match Shadow::from_json(json) {
            Ok(_) => return,
            Err(e) => e,
        },
        _ => match chain::Sections::from_json(json) {
            Ok(_) => return,
            Err(e) => e,
        },
    };
    assert!(!error.to_string().is_empty(), "a rejection says why");
}

/// A fixed set of match blocks (path, headers, cookies, query, regex, method)
/// against arbitrary requests; the cookie and query readers agree with their
/// counters.
pub fn matcher(data: &[u8]) {
    let mut input = Input::new(data);
    let req = input.headers();
    let blocks = [
        r#"{"path": {"prefix": "/api/"}, "method": ["GET", "POST"]}"#,
        r#"{"headers": {"end-user": {"exact": "jason"}, "x-canary": {"present": true}}}"#,
        r#"{"cookies": {"session": {"regex": "[a-z0-9]{4,}"}, "beta": {"exact": "1"}}}"#,
        r#"{"query": {"v": {"suffix": "2"}, "debug": {"present": false}}}"#,
        r#"{"path": {"regex": "/users/[0-9]+(/.*)?"}, "authority": {"suffix": ".example.com"}}"#,
    ];
    for block in blocks {
        let config: MatchConfig = serde_json::from_str(block).expect("fixed block");
        let m = RequestMatch::compile(&config, "match").expect("fixed block compiles");
        let matched = m.matches(&req);
        assert_eq!(matched, m.unmet(&req).is_none(), "{block}: unmet agrees");
    }
    let cookie = req.0.iter().find(|(k, _)| k == "cookie").map(|(_, v)| v);
    if let Some(c) = cookie {
        for name in ["session", "beta", ""] {
            let n = matcher::cookie_count(c, name);
            assert_eq!(
                n == 0,
                matcher::cookie_value(c, name).is_none(),
                "cookie {name}"
            );
        }
    }
    let path = req.0.iter().find(|(k, _)| k == ":path").map(|(_, v)| v);
    if let Some(p) = path {
        assert!(matcher::path_without_query(p).len() <= p.len());
        for name in ["v", "debug"] {
            let n = matcher::query_count(p, name);
            assert_eq!(
                n == 0,
                matcher::query_value(p, name).is_none(),
                "query {name}"
            );
        }
    }
}

fn keys() -> KeySet {
    KeySet::parse(JWKS.as_bytes()).expect("the seed key set parses")
}

const ALL_ALGS: &[Alg] = &[
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
];

/// A compact JWS against the test keys: parsing, the signature and the
/// claims. A token that verifies stops verifying when any byte of its
/// signature changes.
pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = jwt::parse(token, ALL_ALGS) else {
        return;
    };
    let keys = keys();
    if parsed.verify(&keys, &mut |_| None).is_err() {
        return;
    }
    if let Ok(claims) = parsed.claims() {
        let rules = ClaimRules {
            issuer: Some("https://idp.example.com"),
            audiences: &["gateway".to_owned()],
            clock_skew_s: 60,
        };
        let _ = jwt::check_claims(&claims, &rules, NOW_S);
        let _ = jwt::expiry(&claims);
    }
    for i in 0..parsed.signature.len() {
        let mut forged = jwt::Parsed {
            alg: parsed.alg,
            kid: parsed.kid.clone(),
            signing_input: parsed.signing_input,
            payload: parsed.payload.clone(),
            signature: parsed.signature.clone(),
        };
        forged.signature[i] ^= 0x01;
        assert!(
            forged.verify(&keys, &mut |_| None).is_err(),
            "a changed signature byte {i} still verified"
        );
    }
}

/// Any JWKS document: a key set that parses is usable for verification.
pub fn jwks(data: &[u8]) {
    if let Ok(keys) = KeySet::parse(data) {
        let token = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln";
        if let Ok(parsed) = jwt::parse(token, ALL_ALGS) {
            assert!(parsed.verify(&keys, &mut |_| None).is_err());
        }
    }
}

/// The credentials a request can carry (bearer JWT in a header or a cookie,
/// API key, basic auth), through auth's full evaluation. An allowed request
/// with an API-key or basic identity carried exactly one such credential,
/// and it was the configured one.
pub fn credentials(data: &[u8]) {
    thread_local! {
        static AUTH: Auth = Auth::from_json(CREDENTIALS_CONFIG.as_bytes()).expect("fixed auth config");
    }
    let req = Input::new(data).headers();
    AUTH.with(|auth| {
        let step = evaluate(auth, &req);
        let Step::Done(Verdict::Allow {
            identity: Some(identity),
            ..
        }) = step
        else {
            return;
        };
        let count = |name: &str| req.0.iter().filter(|(k, _)| k == name).count();
        match auth.provider_name(identity.provider) {
            "ci" => {
                assert_eq!(count("x-api-key"), 1, "one API key");
                let key = req.0.iter().find(|(k, _)| k == "x-api-key").map(|(_, v)| v);
                assert_eq!(key.map(Vec::as_slice), Some(&b"ci-secret"[..]));
                assert_eq!(identity.subject.as_deref(), Some(&b"ci-bot"[..]));
            }
            "ops" => {
                assert_eq!(count("authorization"), 1, "one authorization header");
                assert_eq!(identity.subject.as_deref(), Some(&b"alice"[..]));
            }
            "corp" => assert!(count("authorization") + count("cookie") >= 1),
            other => panic!("allowed by an unexpected provider {other}"),
        }
    });
}

/// Auth's whole evaluation of `req` with the configuration's own keys, at
/// [`NOW_S`], verifying in Wasm (no host); a fresh token cache each time.
pub fn evaluate(auth: &Auth, req: &HeaderList) -> Step {
    let keys: Vec<Option<Rc<KeySet>>> = (0..auth.provider_count())
        .map(|p| auth.static_keys(p))
        .collect();
    let mut caches = Caches::new(auth.cache_entries());
    let mut eval = auth.begin(req);
    let mut env = Env {
        now_s: NOW_S,
        keys: &keys,
        caches: &mut caches,
        host_verify: &mut |_| None,
    };
    auth.step(&mut eval, req, &mut env)
}

/// API key `ci-secret` (its SHA-256 below), basic `alice:wonderland` (bcrypt
/// cost 4) and a JWT provider on the seed keys; `/public/` is anonymous.
const CREDENTIALS_CONFIG: &str = include_str!("../../seeds/credentials_auth.json");

/// Deadline headers: `grpc-timeout` round-trips; the timeouts policy never
/// grants more than its rule or its deadline cap, whatever the caller sends.
pub fn deadlines(data: &[u8]) {
    if let Some(ms) = timeouts::parse_grpc_timeout(data) {
        let again = timeouts::parse_grpc_timeout(timeouts::grpc_timeout_value(ms).as_bytes());
        let again = again.expect("our own grpc-timeout parses");
        assert!(again >= ms.min(99_999_999_000), "{ms} became {again}");
    }
    thread_local! {
        static TIMEOUTS: Timeouts = Timeouts::from_json(
            br#"{"rules": [{"name": "slow", "match": {"path": {"prefix": "/slow/"}}, "timeout_ms": 5000},
                           {"name": "api", "match": {"path": {"prefix": "/api/"}}, "timeout_ms": 1000}],
                 "deadline": {"inbound": ["grpc-timeout", "x-deadline-ms"], "propagate": "x-deadline-ms",
                              "max_ms": 3000}}"#,
        )
        .expect("fixed timeouts config");
    }
    let req = Input::new(data).headers();
    TIMEOUTS.with(|t| {
        let adm = t.admit(&req, 10_000, 10_000, 5);
        let rule_ms = adm.rule.map(|r| if r == 0 { 5000 } else { 1000 });
        if let Some(at) = adm.deadline_at_ms {
            let granted = at - 10_000;
            assert!(
                granted <= rule_ms.unwrap_or(3000),
                "budget {granted} over the configured one"
            );
        }
        if let Budget::Ms(b) = t.inbound_budget_ms(&req) {
            assert!(b < u64::MAX);
        }
    });
}

/// The shadow comparison: two bodies (split at the first NUL), ignored
/// pointers from the fixed list. A body never differs from itself, and no
/// more differences are reported than asked for.
pub fn shadow_compare(data: &[u8]) {
    let (primary, shadow) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let ignore = ["/id".to_owned(), "/meta/ts".to_owned(), "/a~1b".to_owned()];
    for limit in [0, 1, 5] {
        let d = compare::body_differences(primary, shadow, &ignore, limit);
        assert!(
            d.len() <= limit,
            "{} differences over the limit {limit}",
            d.len()
        );
    }
    assert!(compare::body_differences(primary, primary, &ignore, 5).is_empty());
}
