//! The real `shadow.wasm` in the harness: sampling, tagging, the safe-method
//! guard, and primary-versus-shadow comparison on the virtual clock.

mod common;

use common::FilterPolicy;
use serde_json::{json, Value};
use switchyard_harness::{Cluster, Harness, Request};

fn compare_config() -> Value {
    json!({
        "rules": [{"name": "reviews", "match": {"path": {"prefix": "/reviews"}}, "percent": 100,
                   "target_cluster": "reviews-v2", "mode": "compare"}],
        "safe": {"strip_headers": ["authorization", "cookie"]},
        "compare": {"ignore_headers": ["date"], "ignore_json_paths": ["/timestamp"], "timeout_ms": 2000, "log_diffs": 10}
    })
}

fn harness(config: &Value) -> Harness {
    let mut h = Harness::new();
    h.filter_policy("shadow", &config.to_string())
        .expect("shadow loads");
    h
}

fn json_answer(body: &str) -> Cluster {
    Cluster::default()
        .header("content-type", "application/json")
        .body(body)
}

/// Compare mode with the primary answering `primary` and the shadow `shadow`.
fn compared(primary: Cluster, shadow: Cluster) -> Harness {
    let mut h = harness(&compare_config());
    h.upstream(primary).cluster("reviews-v2", shadow);
    let ex = h.send(Request::get("/reviews/1").header("authorization", "Bearer secret"));
    assert_eq!(ex.status(), Some(200));
    // The copy goes out on the root's next tick; let it come back.
    h.advance(3000);
    h
}

fn metric(h: &Harness, what: &str) -> Option<i64> {
    h.metric(&format!("switchyard.shadow.reviews.{what}"))
}

#[test]
fn mirror_mode_names_the_cluster_for_envoys_mirror_policy() {
    let mut h = harness(&json!({
        "rules": [{"name": "httpbin-v2", "percent": 100, "target_cluster": "httpbin-v2", "mode": "mirror"}]
    }));
    let ex = h.send(
        Request::get("/get")
            .header("x-shadow-cluster", "attacker")
            .header("x-shadow", "true"),
    );
    assert_eq!(
        ex.upstream_header("x-shadow-cluster").as_deref(),
        Some("httpbin-v2")
    );
    // A client cannot pick a shadow cluster or pass as a shadow.
    assert_eq!(ex.upstream_header("x-shadow"), None);
    // Writes are never shadowed.
    let ex = h.send(
        Request::new("POST", "/post")
            .header("x-shadow-cluster", "attacker")
            .body("x"),
    );
    assert_eq!(ex.upstream_header("x-shadow-cluster"), None);
    assert_eq!(h.metric("switchyard.shadow.httpbin-v2.sampled"), Some(1));
    assert_eq!(
        h.metric("switchyard.shadow.httpbin-v2.unsafe_method"),
        Some(1)
    );
    assert!(
        h.pending_calls().is_empty(),
        "mirror mode sends nothing itself"
    );
}

#[test]
fn sampling_holds_its_rate_and_is_deterministic_by_request_id() {
    let mut h = harness(&json!({
        "rules": [{"name": "ten", "percent": 10, "target_cluster": "v2"}]
    }));
    let mut picked = Vec::new();
    for i in 0..2000 {
        let ex = h.send(Request::get("/").header("x-request-id", format!("rid-{i}")));
        picked.push(ex.upstream_header("x-shadow-cluster").is_some());
    }
    let n = picked.iter().filter(|p| **p).count();
    assert!((160..=240).contains(&n), "{n} of 2000");
    for (i, was) in picked.iter().enumerate().take(200) {
        let ex = h.send(Request::get("/").header("x-request-id", format!("rid-{i}")));
        assert_eq!(ex.upstream_header("x-shadow-cluster").is_some(), *was);
    }
}

#[test]
fn the_compare_copy_is_safe_tagged_and_sent_from_the_root() {
    let mut h = harness(&compare_config());
    h.cluster("reviews-v2", json_answer("{}"));
    h.upstream(json_answer("{}"));
    let ex = h.send(
        Request::get("/reviews/1")
            .header("authorization", "Bearer secret")
            .header("cookie", "s=1"),
    );
    // The primary itself is untouched.
    assert_eq!(
        ex.upstream_header("authorization").as_deref(),
        Some("Bearer secret")
    );
    h.advance(5);
    let calls = h.world().http_calls.clone();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "reviews-v2");
    let get = |n: &str| call.headers.get_str(n);
    assert_eq!(get(":authority").as_deref(), Some("example.com-shadow"));
    assert_eq!(get("x-shadow").as_deref(), Some("true"));
    assert_eq!((get("authorization"), get("cookie")), (None, None));
    assert_eq!(metric(&h, "match"), Some(1));
}

#[test]
fn equal_responses_match_even_with_reordered_keys_and_ignored_fields() {
    let h = compared(
        json_answer(r#"{"id": 1, "name": "reviews", "timestamp": 1}"#).header("date", "a"),
        json_answer(r#"{"timestamp": 2, "name": "reviews", "id": 1}"#).header("date", "b"),
    );
    assert_eq!(metric(&h, "match"), Some(1));
    assert_eq!(metric(&h, "mismatch.body"), Some(0));
}

#[test]
fn a_different_status_is_reported() {
    let h = compared(
        json_answer("{}"),
        json_answer("{}").first([Cluster::status(500)]),
    );
    assert_eq!(metric(&h, "mismatch.status"), Some(1));
    assert!(h.logs().iter().any(|l| l
        .message
        .contains("reviews mismatch on GET /reviews/1: status 200 vs 500")));
}

#[test]
fn a_different_header_is_reported() {
    let h = compared(
        json_answer("{}").header("x-version", "v1"),
        json_answer("{}").header("x-version", "v2"),
    );
    assert_eq!(metric(&h, "mismatch.headers"), Some(1));
    assert_eq!(metric(&h, "mismatch.status"), Some(0));
}

#[test]
fn a_different_json_field_is_reported_with_its_path() {
    let h = compared(
        json_answer(r#"{"reviewer": {"name": "alice"}, "timestamp": 1}"#),
        json_answer(r#"{"reviewer": {"name": "ALICE"}, "timestamp": 2}"#),
    );
    assert_eq!(metric(&h, "mismatch.body"), Some(1));
    assert!(h.logs().iter().any(|l| l
        .message
        .contains(r#"body /reviewer/name: "alice" vs "ALICE""#)));
}

#[test]
fn a_slow_or_resetting_shadow_changes_nothing_for_the_client() {
    for (shadow, counter) in [
        (json_answer("{}").delay_ms(5000), "shadow_timeout"),
        (Cluster::reset(), "shadow_error"),
    ] {
        let mut h = harness(&compare_config());
        h.upstream(json_answer(r#"{"ok": true}"#).delay_ms(30))
            .cluster("reviews-v2", shadow);
        let ex = h.send(Request::get("/reviews/1"));
        assert_eq!((ex.status(), ex.duration_ms), (Some(200), 30));
        assert_eq!(ex.response.as_ref().unwrap().body_str(), r#"{"ok": true}"#);
        h.advance(10_000);
        assert_eq!(metric(&h, counter), Some(1), "{counter}");
        assert_eq!(metric(&h, "match"), Some(0));
    }
}

#[test]
fn pending_comparisons_are_bounded() {
    let mut config = compare_config();
    config["compare"]["max_pending"] = json!(2);
    let mut h = harness(&config);
    h.upstream(json_answer("{}"))
        .cluster("reviews-v2", json_answer("{}").delay_ms(1500));
    for _ in 0..5 {
        assert_eq!(h.send(Request::get("/reviews/1")).status(), Some(200));
    }
    assert_eq!(metric(&h, "sampled"), Some(5));
    assert_eq!(metric(&h, "dropped"), Some(3));
    h.advance(2000);
    assert_eq!(metric(&h, "match"), Some(2));
    // Room again once they are done.
    h.send(Request::get("/reviews/1"));
    assert_eq!(metric(&h, "dropped"), Some(3));
    // Nothing left open: the root stops ticking.
    h.advance(5000);
    let ticks = h
        .world()
        .trace
        .iter()
        .filter(|t| t.call == "on_tick")
        .count();
    h.advance(60_000);
    assert_eq!(
        h.world()
            .trace
            .iter()
            .filter(|t| t.call == "on_tick")
            .count(),
        ticks
    );
}

#[test]
fn a_client_leaving_early_leaves_nothing_behind() {
    let mut h = harness(&compare_config());
    h.upstream(json_answer("{}").delay_ms(100))
        .cluster("reviews-v2", json_answer("{}"));
    let id = h.start(Request::get("/reviews/1"));
    h.advance(10);
    h.abort(id);
    h.advance(5000);
    assert_eq!(metric(&h, "match"), Some(0));
    assert!(h.failure(0).is_none());
}

#[test]
fn the_receiving_side_tags_strips_and_refuses_writes() {
    let mut h = harness(&json!({
        "safe": {"strip_headers": ["authorization"]},
        "receiver": {"answer_unsafe": 405}
    }));
    let ex = h.send(
        Request::get("/get")
            .header("host", "httpbin-shadow:8000")
            .header("authorization", "Bearer secret"),
    );
    assert_eq!(ex.upstream_header("x-shadow").as_deref(), Some("true"));
    assert_eq!(ex.upstream_header("authorization"), None);
    let ex = h.send(
        Request::new("POST", "/post")
            .header("host", "httpbin-shadow:8000")
            .body("x"),
    );
    assert_eq!(ex.status(), Some(405));
    assert!(!ex.reached_upstream());
    // Real traffic passes untouched, and cannot pretend to be a shadow.
    let ex = h.send(
        Request::new("POST", "/post")
            .header("host", "httpbin:8000")
            .body("x"),
    );
    assert_eq!(ex.status(), Some(200));
    assert_eq!(h.metric("switchyard.shadow.answered_unsafe"), Some(1));
    assert_eq!(h.metric("switchyard.shadow.received"), Some(2));
}

#[test]
fn bad_configuration_is_rejected_naming_the_field() {
    for (config, field) in [
        (
            json!({"rules": [{"name": "r", "percent": 120, "target_cluster": "c"}]}),
            "rules[0].percent",
        ),
        (
            json!({"rules": [{"name": "r", "percent": 5, "target_cluster": "c", "mode": "tee"}]}),
            "rules[0].mode",
        ),
        (
            json!({"rules": [{"name": "r", "percent": 5}]}),
            "target_cluster",
        ),
    ] {
        let err = Harness::new()
            .filter_policy("shadow", &config.to_string())
            .err()
            .expect("rejected")
            .to_string();
        assert!(err.contains(field), "{err}");
    }
}
