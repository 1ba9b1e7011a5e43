//! Bootstrap services from the Rust API: a service never sees a stream,
//! feeds filters of its `vm_id` through shared data and a queue, and (per
//! worker) shares a VM with filters of the same vm_id, module and VM
//! configuration while a singleton runs apart, as in Envoy.

mod common;

use switchyard_harness::{FilterSpec, Harness, Request};

fn feed(singleton: bool) -> Harness {
    let wasm = common::built("fixture_service_feed");
    let mut h = Harness::new();
    h.add_service(
        FilterSpec::new(&wasm)
            .name("feed_service")
            .vm_id("feed")
            .config("service")
            .service(singleton),
    )
    .unwrap();
    h.add_filter(
        FilterSpec::new(&wasm)
            .name("feed_filter")
            .vm_id("feed")
            .config("filter"),
    )
    .unwrap();
    h
}

#[test]
fn a_service_feeds_filters_whether_singleton_or_per_worker() {
    for singleton in [true, false] {
        let mut h = feed(singleton);
        let first = h.send(Request::get("/one"));
        assert_eq!(
            first.upstream_header("x-greeting").as_deref(),
            Some("hello from the service")
        );
        assert_eq!(first.upstream_header("x-seen"), None);
        h.advance(10);
        let second = h.send(Request::get("/two"));
        assert_eq!(
            second.upstream_header("x-seen").as_deref(),
            Some("1"),
            "singleton {singleton}"
        );
        assert!(h
            .logs()
            .iter()
            .any(|l| l.plugin == "feed_service" && l.message == "service: request 1 was /one"));
        // The service's root never got a stream callback.
        assert!(!second
            .trace
            .iter()
            .any(|t| t.call == "on_request_headers" && t.vm == 0));
    }
}

#[test]
fn a_singleton_runs_in_its_own_vm_and_a_per_worker_service_shares_the_filters() {
    assert_eq!(
        feed(true).vm_count(),
        2,
        "a singleton is on Envoy's main thread"
    );
    assert_eq!(
        feed(false).vm_count(),
        1,
        "a per-worker service shares the worker's VM"
    );
}
