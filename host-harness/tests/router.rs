//! The real `router.wasm` in the harness: a filter test reads like
//! the scenario it checks.

mod common;

use common::FilterPolicy;
use switchyard_harness::{Cluster, Harness, Request};

const LAB: &str = r#"{
  "default_version": "v1",
  "routes": [
    {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"},
    {"name": "canary", "match": {"path": {"prefix": "/reviews"}},
     "split": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}
  ]
}"#;

fn router() -> Harness {
    let mut h = Harness::new();
    h.filter_policy("router", LAB).expect("router loads");
    h.cluster("v1", Cluster::default().header("x-backend", "v1"));
    h.cluster("v2", Cluster::default().header("x-backend", "v2"));
    h.route("x-version", "v2", "v2")
        .route("x-version", "v1", "v1");
    h
}

#[test]
fn jason_is_routed_to_v2() {
    let mut h = router();
    let ex = h.send(Request::get("/productpage").header("end-user", "jason"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
    assert_eq!(ex.upstream.as_ref().unwrap().cluster, "v2");
    assert_eq!(
        ex.response_header("x-served-version").as_deref(),
        Some("v2")
    );
    assert_eq!(
        h.metric("switchyard.router.jason-to-v2.v2.requests"),
        Some(1)
    );
    assert_eq!(
        h.world().route_cache_clears,
        0,
        "Envoy re-picks the route itself after an ABI 0.2.1 module changes a request header: \
         the foreign call (which copies the host's function registry) is not made"
    );
}

/// `version_router.wasm`, the router's earlier name, still runs the router:
/// bootstraps and images that name it keep working.
#[test]
fn the_earlier_module_name_is_the_same_router() {
    let (current, earlier) = (common::built("router"), common::built("version_router"));
    assert_eq!(
        std::fs::read(&current).unwrap(),
        std::fs::read(&earlier).unwrap()
    );
    let mut h = Harness::new();
    h.filter(&earlier, LAB).expect("version_router.wasm loads");
    h.cluster("v2", Cluster::default())
        .route("x-version", "v2", "v2");
    let ex = h.send(Request::get("/productpage").header("end-user", "jason"));
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v2"));
}

#[test]
fn spoofed_version_is_replaced() {
    let mut h = router();
    let ex = h.send(
        Request::get("/")
            .header("x-version", "v2")
            .header("X-Version", "v3"),
    );
    assert_eq!(
        ex.upstream
            .as_ref()
            .unwrap()
            .headers
            .0
            .iter()
            .filter(|(k, _)| k == "x-version")
            .count(),
        1
    );
    assert_eq!(ex.upstream_header("x-version").as_deref(), Some("v1"));
}

#[test]
fn split_holds_over_many_requests() {
    let mut h = router();
    h.set_trace(false);
    let v2 = (0..1000)
        .filter(|_| {
            h.send(Request::get("/reviews/1"))
                .upstream_header("x-version")
                .as_deref()
                == Some("v2")
        })
        .count();
    assert!((95..=105).contains(&v2), "{v2} of 1000 on v2");
}

#[test]
fn bad_configuration_is_rejected_naming_the_field() {
    let mut h = Harness::new();
    let err = h
        .filter_policy(
            "router",
            r#"{"default_version": "v1", "routes": [{"split": []}]}"#,
        )
        .err()
        .expect("rejected");
    let text = err.to_string();
    assert!(text.contains("on_configure returned false"), "{text}");
    assert!(text.contains("routes[0].split"), "{text}");
}

#[test]
fn non_utf8_and_missing_pseudo_headers_do_not_trap() {
    let mut h = router();
    let mut req = Request::get("/")
        .header("end-user", [0xff, 0xfe])
        .header("cookie", [0xc3, 0x28]);
    req.headers.remove(":path");
    let ex = h.send(req);
    assert_eq!(ex.status(), Some(200));
    assert!(h.failure(0).is_none());
    assert!(!ex
        .logs
        .iter()
        .any(|l| l.level == switchyard_harness::LogLevel::Critical));
}

#[test]
fn memory_does_not_grow_across_requests() {
    let mut h = router();
    h.set_trace(false);
    for _ in 0..200 {
        h.send(Request::get("/reviews").header("end-user", "jason"));
    }
    let before = h.memory_sizes();
    for _ in 0..5000 {
        h.send(
            Request::get("/reviews")
                .header("end-user", "jason")
                .header("cookie", "a=1"),
        );
    }
    assert_eq!(
        h.memory_sizes(),
        before,
        "linear memory grew over 5,000 requests"
    );
}
