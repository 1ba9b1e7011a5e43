//! Limits (runaway filters, memory caps), leak checks and interleaved streams.

mod common;
use common::built;
use switchyard_harness::{Cluster, Harness, Request, Response};

/// A minimal ABI 0.2.1 module whose `on_request_headers` runs `body`.
fn wat_filter(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let wat = format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body}))"#
    );
    let p = dir.join("filter.wat");
    std::fs::write(&p, wat).unwrap();
    p
}

#[test]
fn a_runaway_filter_is_stopped_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new();
    h.filter(wat_filter(dir.path(), "(loop (br 0)) i32.const 0"), "")
        .unwrap();
    let ex = h.send(Request::get("/"));
    assert_eq!(ex.status(), Some(503));
    assert!(!ex.reached_upstream());
    assert!(h.failure(0).unwrap().contains("fuel"), "{:?}", h.failure(0));
}

#[test]
fn memory_growth_beyond_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Grows by 64 pages (4 MiB); traps if the host refuses.
    let body =
        "(if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then unreachable)) i32.const 0";
    let mut roomy = Harness::new();
    roomy.filter(wat_filter(dir.path(), body), "").unwrap();
    assert_eq!(roomy.send(Request::get("/")).status(), Some(200));

    let mut tight = Harness::new();
    tight.memory_limit(2 << 20);
    tight.filter(wat_filter(dir.path(), body), "").unwrap();
    assert_eq!(tight.send(Request::get("/")).status(), Some(503));
    assert!(
        tight.failure(0).unwrap().contains("unreachable"),
        "{:?}",
        tight.failure(0)
    );
}

#[test]
fn interleaved_streams_resume_independently() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_auth_random"), "").unwrap();
    h.cluster("httpbin", Cluster::default());
    h.manual_http_calls(true);
    let first = h.start(Request::get("/first"));
    let second = h.start(Request::get("/second"));
    let calls = h.pending_calls();
    assert_eq!(calls.len(), 2);
    // Answer the second stream's call first: only it moves on.
    h.answer_call(calls[1].token, Some(Response::new(200).body(vec![2])));
    assert!(h.is_done(second));
    assert!(!h.is_done(first));
    assert_eq!(
        h.exchange(second)
            .unwrap()
            .upstream
            .unwrap()
            .headers
            .get_str(":path")
            .as_deref(),
        Some("/second")
    );
    h.answer_call(calls[0].token, Some(Response::new(200).body(vec![1])));
    assert_eq!(h.exchange(first).unwrap().status(), Some(403));
}

#[test]
fn a_logging_filter_does_not_leak_linear_memory() {
    let mut h = Harness::new();
    h.set_trace(false);
    h.filter(built("sdk_http_headers"), "").unwrap();
    for _ in 0..100 {
        h.send(Request::get("/x"));
    }
    let logs_per_request = {
        let before = h.logs().len();
        h.send(Request::get("/x"));
        h.logs().len() - before
    };
    assert!(logs_per_request > 0);
    let wasm_before = h.memory_sizes();
    for _ in 0..2000 {
        h.send(Request::get("/x"));
    }
    assert_eq!(
        h.memory_sizes(),
        wasm_before,
        "the filter's linear memory grew"
    );
}

#[test]
fn plugins_with_one_vm_id_share_a_vm_with_their_own_configuration() {
    use switchyard_harness::FilterSpec;
    let mut h = Harness::new();
    let config = |c: &str, root: &str| {
        FilterSpec::new(built("sdk_http_config"))
            .config(c)
            .root_id(root)
            .vm_id("shared")
            .name(root)
    };
    h.add_filter(config("first", "a")).unwrap();
    h.add_filter(config("second", "b")).unwrap();
    assert_eq!(h.vm_count(), 1);
    let ex = h.send(Request::get("/"));
    let values: Vec<String> = ex
        .response
        .unwrap()
        .headers
        .0
        .iter()
        .filter(|(k, _)| k == "custom-header")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    // Response callbacks run in reverse chain order; each root reads its own configuration.
    assert_eq!(values, ["second", "first"]);

    let mut separate = Harness::new();
    separate
        .add_filter(config("first", "a").vm_id("one"))
        .unwrap();
    separate
        .add_filter(config("second", "b").vm_id("two"))
        .unwrap();
    assert_eq!(separate.vm_count(), 2);
}

#[test]
fn a_trap_kills_every_plugin_on_the_vm() {
    use switchyard_harness::FilterSpec;
    let spec = |root: &str, vm: &str| {
        FilterSpec::new(built("sdk_http_auth_random"))
            .root_id(root)
            .vm_id(vm)
            .name(root)
    };
    let mut shared = Harness::new();
    shared.add_filter(spec("a", "same")).unwrap();
    shared.add_filter(spec("b", "same")).unwrap();
    assert_eq!(shared.send(Request::get("/")).status(), Some(503)); // no httpbin cluster: trap
    assert!(
        shared.failure(1).is_some(),
        "the second plugin shares the dead VM"
    );

    let mut apart = Harness::new();
    apart.add_filter(spec("a", "one")).unwrap();
    apart.add_filter(spec("b", "two")).unwrap();
    apart.send(Request::get("/"));
    assert!(apart.failure(0).is_some());
    assert!(apart.failure(1).is_none());
}
