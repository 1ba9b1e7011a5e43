//! Every path rule decides on the path the upstream acts on, in real Envoy
//! 1.40, with Envoy's own path normalisation off (its default) and on (the
//! shipped bootstraps): dot segments and escapes cannot borrow an anonymous
//! prefix, ambiguous spellings are refused with 400, and the upstream
//! receives the path that was decided on. Requests go out byte for byte
//! (`raw::get`): an HTTP library would resolve the paths before sending.
//! Also here: a credential sent twice is refused, in Envoy.

use serde_json::{json, Value};
use std::sync::Arc;
use switchyard_tests::raw::{self, RawResponse};
use switchyard_tests::{paths, tokens, Backend, Bootstrap, Envoy, Reply};

/// Envoy with bootstrap `file`, filter `filter`'s configuration edited by
/// `edit`, clusters pointed at `backends`; Envoy's own path normalisation
/// kept (as shipped) or removed.
fn start(
    file: &str,
    filter: &str,
    envoy_normalizes: bool,
    backends: &[(&str, &Backend)],
    edit: impl FnOnce(&mut Value),
) -> Envoy {
    let mut b = Bootstrap::load(&paths::envoy_config(file));
    for (cluster, backend) in backends {
        b.set_cluster_port(cluster, backend.port);
    }
    let mut config = b.filter_config(filter);
    edit(&mut config);
    b.set_filter_config(filter, &config);
    if !envoy_normalizes {
        b.without_envoy_path_normalization();
    }
    Envoy::start(&b)
}

fn get(envoy: &Envoy, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw::get(envoy.port, target.as_bytes(), headers)
}

/// The paths every upstream received, in order.
fn received(backends: &[&Backend]) -> Vec<String> {
    backends
        .iter()
        .flat_map(|b| b.received())
        .map(|r| r.path)
        .collect()
}

/// Whether `path` is in normal form: what the upstream should receive.
fn is_normal(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    !path.contains("//")
        && !path.contains('\\')
        && !path.contains(';')
        && !path.to_ascii_lowercase().contains("%2e")
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// An ambiguous path: refused by the filter when Envoy passes it raw;
/// when Envoy normalises, refused by one of them or resolved by Envoy, so
/// that what an upstream received is in normal form.
fn assert_refused(envoy_normalizes: bool, r: &RawResponse, backends: &[&Backend]) {
    if envoy_normalizes {
        // 401: Envoy resolved it (`\` as `/`) and the filter denied the result.
        assert!(
            matches!(r.status, 400 | 401 | 200),
            "{} {}",
            r.status,
            r.body
        );
        for path in received(backends) {
            assert!(is_normal(&path), "{path}");
        }
    } else {
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains("ambiguous_path"), "{}", r.body);
    }
}

/// Paths that spell `/admin/…` while starting with the anonymous `/public/`.
const DOT_SEGMENTS: [&str; 6] = [
    "/public/../admin/users",
    "/public/%2e%2e/admin",
    "/public/%2E%2e/admin",
    "/public//../admin",
    "/public/./../admin",
    "/public/a/../../admin",
];

/// Spellings servers disagree on, with the reason the filter gives.
const AMBIGUOUS: [(&str, &str); 6] = [
    ("/public/..\\admin", "backslash"),
    ("/public/;/../admin", "path_parameter"),
    ("/public;x=1/../admin", "path_parameter"),
    ("/public/%2F../admin", "encoded_slash"),
    ("/public/%5c../admin", "encoded_slash"),
    ("/public/x%00", "control_byte"),
];

struct Auth {
    envoy: Envoy,
    v1: Backend,
    v2: Backend,
    _idp: Backend,
    _authz: Backend,
}

fn auth(envoy_normalizes: bool, edit: impl FnOnce(&mut Value)) -> Auth {
    let jwks = tokens::public_jwks().to_string();
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let idp = Backend::serving(
        "idp",
        Arc::new(move |_| Reply::new(200, jwks.clone()).header("content-type", "application/json")),
    );
    let authz = Backend::serving("authz", Arc::new(|_| Reply::new(403, "no")));
    let envoy = start(
        "auth.yaml",
        "switchyard.auth",
        envoy_normalizes,
        &[("v1", &v1), ("v2", &v2), ("idp", &idp), ("authz", &authz)],
        edit,
    );
    envoy.wait_for_key_sets("corp");
    Auth {
        envoy,
        v1,
        v2,
        _idp: idp,
        _authz: authz,
    }
}

#[test]
fn auth_dot_segments_cannot_borrow_the_anonymous_prefix() {
    for envoy_normalizes in [false, true] {
        let s = auth(envoy_normalizes, |_| {});
        for target in DOT_SEGMENTS {
            let r = get(&s.envoy, target, &[]);
            if envoy_normalizes && r.status == 200 {
                // Envoy resolves `..` before merging slashes (`/public//../admin`
                // is `/public/admin` to it): allowed, and that is the path sent.
                let sent = received(&[&s.v1, &s.v2]).pop().unwrap_or_default();
                assert!(
                    sent.starts_with("/public/") && is_normal(&sent),
                    "{target}: {sent}"
                );
                continue;
            }
            assert_eq!(
                r.status, 401,
                "{target} (Envoy normalises: {envoy_normalizes}): {}",
                r.body
            );
            assert!(
                r.body.contains("missing_credential"),
                "{target}: {}",
                r.body
            );
        }
        for sent in received(&[&s.v1, &s.v2]) {
            assert!(envoy_normalizes && sent.starts_with("/public/"), "{sent}");
        }
        let before = received(&[&s.v1, &s.v2]).len();
        // A public path in another spelling still passes, as its normal form.
        let r = get(&s.envoy, "/public/a/./b/../c?x=../y", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(received(&[&s.v1, &s.v2])[before..], ["/public/a/c?x=../y"]);
        if !envoy_normalizes {
            // The filter did it: counted once per rewritten path.
            assert_eq!(
                s.envoy.counter("wasmcustom.switchyard.path.normalized"),
                DOT_SEGMENTS.len() as u64 + 1
            );
        }
    }
}

#[test]
fn auth_ambiguous_paths_are_refused_or_reach_the_upstream_in_normal_form() {
    for envoy_normalizes in [false, true] {
        let s = auth(envoy_normalizes, |_| {});
        for (target, reason) in AMBIGUOUS {
            let r = get(&s.envoy, target, &[]);
            // With Envoy normalising, Envoy refuses escaped slashes itself and
            // may resolve `;` segments away first.
            assert_refused(envoy_normalizes, &r, &[&s.v1, &s.v2]);
            if !envoy_normalizes {
                assert_eq!(
                    r.body,
                    format!(r#"{{"error":"ambiguous_path","reason":"{reason}"}}"#),
                    "{target}"
                );
            }
        }
        for path in received(&[&s.v1, &s.v2]) {
            assert!(path.starts_with("/public/") && is_normal(&path), "{path}");
        }
        if !envoy_normalizes {
            assert_eq!(received(&[&s.v1, &s.v2]), Vec::<String>::new());
            let c = |what: &str| {
                s.envoy
                    .counter(&format!("wasmcustom.switchyard.path.{what}"))
            };
            assert_eq!(c("rejected"), AMBIGUOUS.len() as u64);
            assert_eq!(c("rejected.path_parameter"), 2);
            assert_eq!(c("rejected.encoded_slash"), 2);
            assert_eq!(c("rejected.backslash"), 1);
            assert_eq!(c("rejected.control_byte"), 1);
        }
    }
}

#[test]
fn auth_with_ambiguous_paths_normalised_decides_on_the_resolved_path() {
    let s = auth(false, |c| {
        c["path_normalization"] = json!({"ambiguous": "normalize"});
    });
    for (target, reason) in AMBIGUOUS {
        let r = get(&s.envoy, target, &[]);
        let expected = if reason == "control_byte" { 400 } else { 401 };
        assert_eq!(r.status, expected, "{target}: {}", r.body);
    }
    let r = get(&s.envoy, "/public/a;v=1/b\\c", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(received(&[&s.v1, &s.v2]), ["/public/a/b/c"]);
}

#[test]
fn a_credential_sent_twice_is_refused_and_never_forwarded() {
    let s = auth(true, |_| {});
    for headers in [
        vec![("x-api-key", "ci-secret"), ("x-api-key", "forged")],
        vec![("x-api-key", "ci-secret"), ("x-api-key", "ci-secret")],
        vec![
            ("authorization", "Bearer a.b.c"),
            ("authorization", "Bearer d.e.f"),
        ],
    ] {
        let r = get(&s.envoy, "/x", &headers);
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert!(r.body.contains("ambiguous_credential"), "{}", r.body);
    }
    assert_eq!(s.v1.count() + s.v2.count(), 0);
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.auth.denied.ambiguous_credential"),
        3
    );
    // Once, it is verified and forwarded once.
    let r = get(&s.envoy, "/x", &[("x-api-key", "ci-secret")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.v1.received()[0].header("x-api-key"), Some("ci-secret"));
}

#[test]
fn router_routes_on_the_normal_path_and_forwards_it() {
    for envoy_normalizes in [false, true] {
        let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
        let envoy = start(
            "router.yaml",
            "switchyard.router",
            envoy_normalizes,
            &[("v1", &v1), ("v2", &v2)],
            |c| {
                *c = json!({"default_version": "v1", "routes": [
                    {"name": "beta", "match": {"path": {"prefix": "/beta/"}}, "version": "v2"}]});
            },
        );
        for (target, version, upstream) in [
            ("/beta/../stable/x", "v1", "/stable/x"),
            ("/stable/../beta/y", "v2", "/beta/y"),
            ("/stable/%2e%2e/beta/z", "v2", "/beta/z"),
        ] {
            let r = get(&envoy, target, &[]);
            assert_eq!(r.status, 200, "{target}");
            assert_eq!(r.header("x-echo-version"), Some(version), "{target}");
            let backend = if version == "v1" { &v1 } else { &v2 };
            assert_eq!(
                backend.received().last().map(|r| r.path.clone()).as_deref(),
                Some(upstream)
            );
        }
        let before = v1.count() + v2.count();
        let r = get(&envoy, "/beta\\..\\stable", &[]);
        assert_refused(envoy_normalizes, &r, &[&v1, &v2]);
        if !envoy_normalizes {
            assert_eq!(v1.count() + v2.count(), before);
        }
    }
}

#[test]
fn timeouts_give_the_budget_of_the_normal_path() {
    for envoy_normalizes in [false, true] {
        let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
        let envoy = start(
            "timeouts.yaml",
            "switchyard.timeouts",
            envoy_normalizes,
            &[("v1", &v1), ("v2", &v2)],
            |c| {
                *c = json!({"rules": [
                    {"name": "slow", "match": {"path": {"prefix": "/slow/"}}, "timeout_ms": 2500},
                    {"name": "default", "match": {}, "timeout_ms": 400}]});
            },
        );
        for (target, budget) in [("/fast/../slow/x", 2500u64), ("/slow/../fast/x", 400)] {
            let r = get(&envoy, target, &[]);
            assert_eq!(r.status, 200, "{target}");
            let told: u64 = v1
                .received()
                .last()
                .and_then(|r| r.header("x-envoy-expected-rq-timeout-ms")?.parse().ok())
                .expect("a budget");
            // The rule's budget, less the few ms spent before the filter ran.
            assert!(told <= budget && told + 300 > budget, "{target}: {told}");
        }
        let r = get(&envoy, "/fast;/../slow/x", &[]);
        assert_refused(envoy_normalizes, &r, &[&v1]);
        if !envoy_normalizes {
            assert_eq!(v1.count(), 2);
        }
    }
}

#[test]
fn shadow_mirrors_by_the_normal_path() {
    for envoy_normalizes in [false, true] {
        let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
        let envoy = start(
            "shadow.yaml",
            "switchyard.shadow",
            envoy_normalizes,
            &[("v1", &v1), ("v2", &v2)],
            |c| {
                c["rules"] = json!([{"name": "mirror", "match": {"path": {"prefix": "/mirror/"}},
                                      "percent": 100.0, "target_cluster": "v2", "mode": "mirror"}]);
            },
        );
        assert_eq!(get(&envoy, "/x/../mirror/a", &[]).status, 200);
        assert_eq!(get(&envoy, "/mirror/../x", &[]).status, 200);
        assert_eq!(get(&envoy, "/mirror/%2e%2e/y", &[]).status, 200);
        envoy.wait_for_counter(
            "wasmcustom.switchyard.shadow.mirror.sampled",
            1,
            std::time::Duration::from_secs(10),
        );
        let t0 = std::time::Instant::now();
        while v2.count() < 1 && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            received(&[&v2]),
            ["/mirror/a"],
            "only the copy of /mirror/a"
        );
        assert_eq!(received(&[&v1]), ["/mirror/a", "/x", "/y"]);
        assert_eq!(
            envoy.counter("wasmcustom.switchyard.shadow.mirror.sampled"),
            1
        );
        let r = get(&envoy, "/mirror\\a", &[]);
        assert_refused(envoy_normalizes, &r, &[&v1, &v2]);
    }
}
