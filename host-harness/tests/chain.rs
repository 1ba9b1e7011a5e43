//! `switchyard.wasm` with several sections in the harness, on the virtual
//! clock: one root tick serving every policy at its own time, a request
//! held by one policy and then another, call answers finding their policy.
//! (`make test` also runs every single-filter test through the chain.)

mod common;

use common::built;
use serde_json::{json, Value};
use switchyard_harness::world::EPOCH_START_NS;
use switchyard_harness::{Cluster, Harness, Request};
use switchyard_tests::tokens::{self, claims, mint};

const NOW_S: u64 = EPOCH_START_NS / 1_000_000_000;

fn config() -> Value {
    json!({
        "auth": {
            "providers": [{"name": "corp", "jwt": {"issuer": tokens::ISSUER, "audiences": [tokens::AUDIENCE],
                "remote_jwks": {"cluster": "idp", "authority": "idp", "path": "/jwks", "refresh_s": 1, "timeout_ms": 2000},
                "from": [{"header": "authorization", "prefix": "Bearer "}]}}],
            "rules": [{"match": {"path": {"prefix": "/public/"}}, "allow": "anonymous"},
                      {"match": {}, "require": ["corp"]}],
            "identity": {"header": "end-user", "from_claim": "sub"}
        },
        "router": {"default_version": "v1", "routes": [
            {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"}]},
        "timeouts": {
            "rules": [{"name": "default", "match": {}, "timeout_ms": 3000}],
            "faults": [{"name": "slow", "match": {"path": {"prefix": "/slow"}}, "delay": {"fixed_ms": 250, "percent": 100}}]
        },
        "shadow": {
            "rules": [{"name": "public", "match": {"path": {"prefix": "/public/"}}, "percent": 100,
                       "target_cluster": "shadow", "mode": "compare"}],
            "compare": {"timeout_ms": 1000}
        }
    })
}

fn idp(delay_ms: u64) -> Cluster {
    Cluster::default()
        .header("content-type", "application/json")
        .body(&tokens::public_jwks().to_string())
        .delay_ms(delay_ms)
}

fn chain(idp_delay_ms: u64) -> Harness {
    chain_with(config(), idp_delay_ms)
}

fn chain_with(config: Value, idp_delay_ms: u64) -> Harness {
    let mut h = Harness::new();
    h.cluster("idp", idp(idp_delay_ms))
        .cluster("shadow", Cluster::default().body("same"))
        .upstream(Cluster::default().body("same"));
    h.filter(built("switchyard"), &config.to_string())
        .expect("switchyard loads");
    h
}

fn jason(path: &str) -> Request {
    let token = mint("RS256", &claims("jason", NOW_S));
    Request::get(path).header("authorization", format!("Bearer {token}"))
}

#[test]
fn a_request_held_by_auth_then_by_a_fault_delay_resumes_through_every_policy() {
    // The key set is asked for on the first tick, 1 ms after configure (not
    // in configure: Envoy's configuration canary would take the shared
    // lease and die), and arrives 400 ms later; the delay then holds the
    // request 250 ms more.
    let mut h = chain(400);
    let id = h.start(jason("/slow/1"));
    h.advance(1000);
    let ex = h.exchange(id).unwrap();
    assert_eq!(ex.status(), Some(200));
    assert_eq!(
        ex.duration_ms, 651,
        "1 + 400 ms for keys + 250 ms delay, no tick rounding"
    );
    assert_eq!(ex.upstream_header("end-user").as_deref(), Some("jason"));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
    // 3 s from arrival, less the 651 ms spent waiting.
    assert_eq!(
        ex.upstream_header("x-envoy-expected-rq-timeout-ms")
            .as_deref(),
        Some("2349")
    );
}

/// With the key set loaded, auth decides in the request's own callback and
/// the router reads the identity auth wrote from the shared header copy in
/// that same callback (a write only the host saw would route jason to v1).
#[test]
fn a_later_policy_reads_what_an_earlier_one_wrote_in_the_same_callback() {
    let mut h = chain(0);
    h.advance(10);
    let ex = h.send(jason("/productpage"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.duration_ms, 0, "decided at once, nothing held");
    assert_eq!(ex.upstream_header("end-user").as_deref(), Some("jason"));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
}

#[test]
fn one_tick_serves_each_policy_at_its_own_time() {
    let mut h = chain(0);
    h.advance(30); // Off auth's 100 ms refresh grid.
    for i in 0..3 {
        let id = h.start(jason(&format!("/slow/{i}")));
        h.advance(400);
        let ex = h.exchange(id).unwrap();
        assert_eq!(
            (ex.status(), ex.duration_ms),
            (Some(200), 250),
            "request {i}"
        );
    }
    // Auth's key refresh (every second) went on meanwhile.
    assert!(h.metric("switchyard.auth.corp.jwks_fetch_ok").unwrap() >= 2);
}

#[test]
fn batched_counters_reach_the_host_at_each_flush_and_when_the_root_goes() {
    let mut cfg = config();
    cfg["stats_flush_ms"] = json!(1000);
    let mut h = chain_with(cfg, 0);
    let decisions = "switchyard.router.jason-to-v2.v2.requests";
    let timeout_set = "switchyard.timeouts.rule.default.timeout_set";
    h.advance(10); // Keys in.
    for i in 0..3 {
        let id = h.start(jason(&format!("/slow/{i}")));
        h.advance(300);
        let ex = h.exchange(id).unwrap();
        assert_eq!(
            (ex.status(), ex.duration_ms),
            (Some(200), 250),
            "request {i}: the flush's tick does not move the delay's"
        );
        assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
    }
    // 910 ms after configure: counted in the module, not yet at the host.
    assert_eq!(h.metric(decisions), Some(0));
    assert_eq!(h.metric(timeout_set), Some(0));
    h.advance(100);
    assert_eq!(h.metric(decisions), Some(3), "flushed at 1000 ms");
    assert_eq!(h.metric(timeout_set), Some(3));
    for _ in 0..2 {
        assert_eq!(h.send(jason("/a")).status(), Some(200));
    }
    assert_eq!(h.metric(decisions), Some(3), "the next flush is at 2000 ms");
    h.remove_root(0);
    assert_eq!(
        h.metric(decisions),
        Some(5),
        "what the root gathered reaches the host before it goes"
    );
    assert_eq!(h.metric(timeout_set), Some(5));
}

#[test]
fn counters_reach_the_host_at_each_increment_by_default() {
    let mut h = chain(0);
    h.advance(10);
    assert_eq!(h.send(jason("/a")).status(), Some(200));
    assert_eq!(
        h.metric("switchyard.router.jason-to-v2.v2.requests"),
        Some(1)
    );
}

#[test]
fn call_answers_reach_the_policy_that_sent_them() {
    let mut h = chain(0);
    let ex = h.send(Request::get("/public/a"));
    assert_eq!(ex.status(), Some(200));
    h.advance(2000);
    assert_eq!(h.metric("switchyard.shadow.public.match"), Some(1));
    assert_eq!(h.metric("switchyard.shadow.public.shadow_error"), Some(0));
    assert!(h.metric("switchyard.auth.corp.jwks_fetch_ok").unwrap() >= 2);
    assert_eq!(h.metric("switchyard.auth.corp.jwks_fetch_failed"), Some(0));
}

#[test]
fn a_denial_stops_the_chain_before_the_later_policies() {
    let mut h = chain(0);
    let ex = h.send(Request::get("/slow/1").header("end-user", "jason"));
    assert_eq!(
        (ex.status(), ex.duration_ms),
        (Some(401), 0),
        "no delay: timeouts never ran"
    );
    assert!(!ex.reached_upstream());
    assert_eq!(
        h.metric("switchyard.router.jason-to-v2.v2.requests"),
        Some(0)
    );
    assert_eq!(h.metric("switchyard.timeouts.fault.slow.delayed"), Some(0));
}

#[test]
fn sections_are_checked_by_their_own_filter() {
    let err = Harness::new()
        .filter(
            built("switchyard"),
            &json!({"timeouts": {"rules": [{"name": "a", "timeout_ms": 0}]}}).to_string(),
        )
        .err()
        .expect("rejected")
        .to_string();
    assert!(
        err.contains("timeouts: invalid configuration: rules[0].timeout_ms"),
        "{err}"
    );
    let err = Harness::new()
        .filter(built("switchyard"), r#"{"auth": {}, "ratelimit": {}}"#)
        .err()
        .expect("rejected")
        .to_string();
    assert!(
        err.contains("switchyard: invalid configuration: ratelimit"),
        "{err}"
    );
    // No section: a pass-through, said once in the log.
    let mut h = Harness::new();
    h.filter(built("switchyard"), "{}").expect("accepted");
    assert_eq!(h.send(Request::get("/")).status(), Some(200));
}

#[test]
fn every_policy_matches_on_the_claims_auth_verified() {
    // One claim condition in the router, the timeouts and the shadow
    // sections: each must see the claims auth verified (the timeouts and
    // shadow policies once never did, and their rules silently never matched).
    let mut c = config();
    c["router"]["routes"] = json!([{"name": "jason-by-claim",
        "match": {"claims": {"sub": {"exact": "jason"}}}, "version": "v2"}]);
    c["timeouts"]["rules"] = json!([
        {"name": "jason", "match": {"claims": {"sub": {"exact": "jason"}}}, "timeout_ms": 1500},
        {"name": "default", "match": {}, "timeout_ms": 3000}]);
    c["shadow"]["rules"] = json!([{"name": "jason", "match": {"claims": {"sub": {"exact": "jason"}}},
        "percent": 100, "target_cluster": "shadow", "mode": "mirror"}]);
    let mut h = Harness::new();
    h.cluster("idp", idp(0))
        .cluster("shadow", Cluster::default())
        .upstream(Cluster::default());
    h.filter(built("switchyard"), &c.to_string())
        .expect("switchyard loads");
    h.advance(10);
    let ex = h.send(jason("/x"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
    assert_eq!(
        ex.upstream_header("x-envoy-expected-rq-timeout-ms")
            .as_deref(),
        Some("1500"),
        "the timeouts rule on the claim applied"
    );
    assert_eq!(
        h.metric("switchyard.timeouts.rule.jason.timeout_set"),
        Some(1)
    );
    assert_eq!(
        h.metric("switchyard.shadow.jason.sampled"),
        Some(1),
        "mirrored by claim"
    );
    // Someone else matches none of the three.
    let token = mint("RS256", &claims("kim", NOW_S));
    let ex = h.send(Request::get("/x").header("authorization", format!("Bearer {token}")));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v1"));
    assert_eq!(
        ex.upstream_header("x-envoy-expected-rq-timeout-ms")
            .as_deref(),
        Some("3000")
    );
    assert_eq!(h.metric("switchyard.shadow.jason.sampled"), Some(1));
}

/// The `proxy_set_property` calls on the `switchyard.claims` property in a request's trace.
fn claims_property_writes(ex: &switchyard_harness::Exchange) -> usize {
    ex.trace
        .iter()
        .filter(|t| t.call == "proxy_set_property")
        .count()
}

#[test]
fn later_sections_get_the_claims_in_memory_and_the_property_only_when_asked() {
    let mut c = config();
    c["router"]["routes"] = json!([{"name": "jason-by-claim",
        "match": {"claims": {"sub": {"exact": "jason"}}}, "version": "v2"}]);
    let load = |c: &Value, idp_delay_ms: u64| {
        let mut h = Harness::new();
        h.cluster("idp", idp(idp_delay_ms))
            .cluster("shadow", Cluster::default())
            .upstream(Cluster::default());
        h.filter(built("switchyard"), &c.to_string())
            .expect("switchyard loads");
        h
    };
    // Held for the key set, verified in a root callback, routed after it: the
    // router still reads the claims auth verified for this stream.
    let mut h = load(&c, 300);
    let held = h.start(jason("/x"));
    let other = h.start(Request::get("/x").header(
        "authorization",
        format!("Bearer {}", mint("RS256", &claims("kim", NOW_S))),
    ));
    h.advance(1000);
    let (held, other) = (h.exchange(held).unwrap(), h.exchange(other).unwrap());
    assert_eq!(held.upstream_header("x-version").as_deref(), Some("v2"));
    assert_eq!(other.upstream_header("x-version").as_deref(), Some("v1"));
    // No property round trip inside the chain by default.
    let ex = h.send(jason("/x"));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
    assert_eq!(claims_property_writes(&ex), 0);

    // Asked for (a filter after the chain reads them): written as well.
    c["auth"]["claims_property"] = json!(true);
    let mut h = load(&c, 0);
    h.advance(10);
    let ex = h.send(jason("/x"));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
    assert_eq!(claims_property_writes(&ex), 1);

    // Auth as the only section: written only when asked, as everywhere.
    let mut h = load(&json!({"auth": config()["auth"]}), 0);
    h.advance(10);
    let ex = h.send(jason("/x"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(claims_property_writes(&ex), 0);
    let mut alone = json!({"auth": config()["auth"]});
    alone["auth"]["claims_property"] = json!(true);
    let mut h = load(&alone, 0);
    h.advance(10);
    let ex = h.send(jason("/x"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(claims_property_writes(&ex), 1);
}
