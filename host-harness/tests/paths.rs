//! Each real filter in the harness decides on the path the upstream acts
//! on: normal form forwarded, ambiguous paths answered 400 and counted (the
//! harness, like Envoy's defaults, does no path normalisation of its own).

mod common;

use common::FilterPolicy;
use serde_json::json;
use switchyard_harness::{Cluster, Harness, Request};
use switchyard_tests::tokens;

fn harness(filter: &str, config: serde_json::Value) -> Harness {
    let mut h = Harness::new();
    h.filter_policy(filter, &config.to_string())
        .expect("filter loads");
    h.cluster("v1", Cluster::default());
    h.cluster("v2", Cluster::default());
    h.route("x-version", "v2", "v2");
    h
}

/// (status, the `:path` the upstream received).
fn send(h: &mut Harness, path: &str) -> (Option<u16>, Option<String>) {
    let ex = h.send(Request::get(path));
    (ex.status(), ex.upstream_header(":path"))
}

const AMBIGUOUS: [(&str, &str); 5] = [
    ("/public/..\\admin", "backslash"),
    ("/public/;/../admin", "path_parameter"),
    ("/public/%2F../admin", "encoded_slash"),
    ("/public/x%00", "control_byte"),
    ("/public/x%zz", "bad_percent_encoding"),
];

fn assert_ambiguous_refused(h: &mut Harness) {
    for (path, reason) in AMBIGUOUS {
        let ex = h.send(Request::get(path));
        assert_eq!(ex.status(), Some(400), "{path}");
        assert!(!ex.reached_upstream(), "{path}");
        let body = String::from_utf8(ex.response.unwrap().body).unwrap();
        assert_eq!(
            body,
            format!(r#"{{"error":"ambiguous_path","reason":"{reason}"}}"#)
        );
        assert_eq!(
            ex.local_reply.map(|(_, d)| d),
            Some(format!("switchyard_path_{reason}"))
        );
    }
    assert_eq!(
        h.metric("switchyard.path.rejected"),
        Some(AMBIGUOUS.len() as i64)
    );
    for (_, reason) in AMBIGUOUS {
        assert_eq!(
            h.metric(&format!("switchyard.path.rejected.{reason}")),
            Some(1)
        );
    }
}

fn auth_config() -> serde_json::Value {
    json!({
        "providers": [{"name": "ci", "api_key": {"header": "x-api-key",
            "keys": [{"name": "ci-bot", "sha256": tokens::sha256_hex(b"ci-secret")}]}}],
        "rules": [
            {"match": {"path": {"prefix": "/public/"}}, "allow": "anonymous"},
            {"match": {}, "require": ["ci"]}
        ]
    })
}

#[test]
fn auth_decides_on_the_normal_path() {
    let mut h = harness("auth", auth_config());
    for path in [
        "/public/../admin/users",
        "/public/%2e%2e/admin",
        "/public//../admin",
        "/public/a/../../admin",
    ] {
        assert_eq!(send(&mut h, path), (Some(401), None), "{path}");
    }
    assert_eq!(
        send(&mut h, "/public/./a//b/%7Ec"),
        (Some(200), Some("/public/a/b/~c".into()))
    );
    assert_eq!(h.metric("switchyard.path.normalized"), Some(5));
    assert_ambiguous_refused(&mut h);
}

#[test]
fn auth_can_resolve_ambiguous_paths_instead() {
    let mut config = auth_config();
    config["path_normalization"] = json!({"ambiguous": "normalize"});
    let mut h = harness("auth", config);
    for path in [
        "/public/..\\admin",
        "/public/;/../admin",
        "/public/%2F../admin",
    ] {
        assert_eq!(send(&mut h, path), (Some(401), None), "{path}");
    }
    assert_eq!(
        send(&mut h, "/public/a;jsessionid=1/b\\c"),
        (Some(200), Some("/public/a/b/c".into()))
    );
    // Control bytes and broken escapes have no normal form.
    assert_eq!(send(&mut h, "/public/x%00").0, Some(400));
    assert_eq!(send(&mut h, "/public/x%zz").0, Some(400));
}

#[test]
fn auth_refuses_a_repeated_credential() {
    let mut h = harness("auth", auth_config());
    let ex = h.send(
        Request::get("/x")
            .header("x-api-key", "ci-secret")
            .header("x-api-key", "forged"),
    );
    assert_eq!(ex.status(), Some(401));
    assert!(!ex.reached_upstream());
    assert_eq!(
        h.metric("switchyard.auth.denied.ambiguous_credential"),
        Some(1)
    );
    let ex = h.send(Request::get("/x").header("x-api-key", "ci-secret"));
    assert_eq!(ex.status(), Some(200));
}

#[test]
fn router_routes_on_the_normal_path() {
    let mut h = harness(
        "router",
        json!({"default_version": "v1", "routes": [
            {"name": "beta", "match": {"path": {"prefix": "/beta/"}}, "version": "v2"}]}),
    );
    for (path, version, upstream) in [
        ("/beta/../stable", "v1", "/stable"),
        ("/stable/../beta/x", "v2", "/beta/x"),
        ("/stable/%2E%2E/beta/y", "v2", "/beta/y"),
    ] {
        let ex = h.send(Request::get(path));
        assert_eq!(
            ex.upstream_header("x-version").as_deref(),
            Some(version),
            "{path}"
        );
        assert_eq!(ex.upstream_header(":path").as_deref(), Some(upstream));
    }
    assert_ambiguous_refused(&mut h);
}

#[test]
fn timeouts_give_the_budget_of_the_normal_path() {
    let mut h = harness(
        "timeouts",
        json!({"rules": [
            {"name": "slow", "match": {"path": {"prefix": "/slow/"}}, "timeout_ms": 2500},
            {"name": "default", "match": {}, "timeout_ms": 400}]}),
    );
    for (path, budget) in [("/fast/../slow/x", "2500"), ("/slow/../fast", "400")] {
        let ex = h.send(Request::get(path));
        assert_eq!(
            ex.upstream_header("x-envoy-expected-rq-timeout-ms")
                .as_deref(),
            Some(budget),
            "{path}"
        );
    }
    assert_ambiguous_refused(&mut h);
}

#[test]
fn shadow_samples_by_the_normal_path() {
    let mut h = harness(
        "shadow",
        json!({"rules": [{"name": "mirror", "match": {"path": {"prefix": "/mirror/"}},
                          "percent": 100.0, "target_cluster": "v2", "mode": "mirror"}]}),
    );
    let copied = |h: &mut Harness, path: &str| {
        h.send(Request::get(path))
            .upstream_header("x-shadow-cluster")
            .is_some()
    };
    assert!(copied(&mut h, "/x/../mirror/a"));
    assert!(!copied(&mut h, "/mirror/../x"));
    assert!(!copied(&mut h, "/mirror/%2e%2e/y"));
    assert_eq!(h.metric("switchyard.shadow.mirror.sampled"), Some(1));
    assert_ambiguous_refused(&mut h);
}
