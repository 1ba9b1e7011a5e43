//! The proxy-wasm Rust SDK's published examples run and behave in the
//! harness as they do in Envoy.

mod common;
use common::built;
use switchyard_harness::{Cluster, FilterSpec, Harness, Request};

fn calls(ex: &switchyard_harness::Exchange) -> Vec<&str> {
    ex.trace.iter().map(|t| t.call).collect()
}

#[test]
fn hello_world_ticks_on_the_virtual_clock_with_wasi_time_and_random() {
    // The published example as a bootstrap service: chrono's Utc::now reads
    // WASI's clock_time_get, getrandom WASI's random_get.
    let mut h = Harness::new();
    h.add_service(FilterSpec::new(built("sdk_hello_world")))
        .unwrap();
    let ticks = |h: &Harness| -> Vec<String> {
        h.logs()
            .iter()
            .filter(|l| l.message.starts_with("It's "))
            .map(|l| l.message.clone())
            .collect()
    };
    assert!(h.logs().iter().any(|l| l.message == "Hello, World!"));
    h.advance(4_999);
    assert!(ticks(&h).is_empty());
    h.advance(1);
    let first = ticks(&h);
    assert_eq!(first.len(), 1);
    assert!(
        first[0].starts_with("It's 2026-01-01 00:00:05 UTC, your lucky number is "),
        "{first:?}"
    );
    h.advance(10_000);
    let all = ticks(&h);
    assert_eq!(all.len(), 3);
    assert!(
        all[2].starts_with("It's 2026-01-01 00:00:15 UTC,"),
        "{all:?}"
    );
    // The draws come from the harness's seeded random_get: the same every run.
    let mut again = Harness::new();
    again
        .add_service(FilterSpec::new(built("sdk_hello_world")))
        .unwrap();
    again.advance(15_000);
    assert_eq!(ticks(&again), all);
    // A service never sees a request.
    let ex = h.send(Request::get("/"));
    assert!(ex.reached_upstream());
    assert!(!ex.trace.iter().any(|t| t.call == "on_request_headers"));
}

#[test]
fn http_headers_answers_hello_locally_and_runs_its_response_callbacks() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_headers"), "").unwrap();
    let ex = h.send(Request::get("/hello"));
    assert!(!ex.reached_upstream());
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.response.as_ref().unwrap().body_str(), "Hello, World!\n");
    assert_eq!(ex.response_header("hello").as_deref(), Some("World"));
    assert_eq!(
        ex.response_header("powered-by").as_deref(),
        Some("proxy-wasm")
    );
    // The local response went through the same filter's response callback, after on_request_headers returned.
    let seq = calls(&ex);
    let local = seq
        .iter()
        .position(|c| *c == "proxy_send_local_response")
        .unwrap();
    let resp = seq
        .iter()
        .position(|c| *c == "on_response_headers")
        .unwrap();
    assert!(local < resp);
    assert!(ex.logged("<- hello: World"));
    assert!(ex.logged("completed."));
}

#[test]
fn http_headers_sees_pseudo_headers_first_and_lower_case_names() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_headers"), "").unwrap();
    let ex = h.send(
        Request::get("/other")
            .header("X-Custom", "1")
            .header("Host", "svc.local"),
    );
    assert!(ex.reached_upstream());
    let lines: Vec<&str> = ex
        .logs
        .iter()
        .filter(|l| l.message.contains(" -> "))
        .map(|l| l.message.as_str())
        .collect();
    assert!(lines[0].ends_with("-> :authority: svc.local"), "{lines:?}");
    assert!(
        lines.iter().take(4).all(|l| l.contains("-> :")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("-> x-custom: 1")),
        "{lines:?}"
    );
    assert_eq!(
        ex.response_header("powered-by").as_deref(),
        Some("proxy-wasm")
    );
    // on_log precedes on_done / on_delete.
    let callbacks: Vec<&str> = ex
        .trace
        .iter()
        .filter(|t| t.status == switchyard_harness::world::CALLBACK)
        .map(|t| t.call)
        .collect();
    assert_eq!(callbacks.last(), Some(&"on_log"), "{callbacks:?}");
}

fn auth_random(random_byte: u8) -> Harness {
    let mut h = Harness::new();
    h.filter(built("sdk_http_auth_random"), "").unwrap();
    h.cluster(
        "httpbin",
        Cluster::default().body(std::str::from_utf8(&[random_byte]).unwrap()),
    );
    h
}

#[test]
fn http_auth_random_allows_even_bytes() {
    let mut h = auth_random(2);
    let ex = h.send(Request::get("/"));
    assert_eq!(ex.status(), Some(200));
    assert!(ex.reached_upstream());
    assert_eq!(ex.http_calls.len(), 1);
    let call = &ex.http_calls[0];
    assert_eq!((call.cluster.as_str(), call.timeout_ms), ("httpbin", 1000));
    assert_eq!(call.headers.get_str(":path").as_deref(), Some("/bytes/1"));
    assert_eq!(
        ex.response_header("powered-by").as_deref(),
        Some("proxy-wasm")
    );
}

#[test]
fn http_auth_random_forbids_odd_bytes() {
    let mut h = auth_random(3);
    let ex = h.send(Request::get("/"));
    assert_eq!(ex.status(), Some(403));
    assert!(!ex.reached_upstream());
    assert_eq!(
        ex.response.as_ref().unwrap().body_str(),
        "Access forbidden.\n"
    );
}

#[test]
fn a_paused_request_waits_for_the_call_and_its_body_callback_waits_too() {
    let mut h = auth_random(2);
    h.manual_http_calls(true);
    let id = h.start(Request::new("POST", "/upload").body("payload"));
    h.advance(500);
    let so_far = h.exchange(id).unwrap();
    assert!(!so_far.completed);
    assert!(
        !calls(&so_far).contains(&"on_request_body"),
        "Pause from headers stops body callbacks"
    );
    let token = h.pending_calls()[0].token;
    h.answer_call(
        token,
        Some(switchyard_harness::Response::new(200).body(vec![4])),
    );
    let ex = h.exchange(id).unwrap();
    assert!(ex.completed);
    assert_eq!(ex.upstream.as_ref().unwrap().body, b"payload");
    assert!(calls(&ex).contains(&"on_request_body"));
}

#[test]
fn a_call_that_times_out_or_resets_is_reported_as_zero_headers() {
    for cluster in [
        Cluster::default().body("\u{2}").delay_ms(5_000),
        Cluster::reset(),
    ] {
        let mut h = Harness::new();
        h.filter(built("sdk_http_auth_random"), "").unwrap();
        h.cluster("httpbin", cluster.clone());
        let ex = h.send(Request::get("/"));
        assert_eq!(ex.status(), Some(403), "{cluster:?}");
        if cluster.delay_ms > 0 {
            assert_eq!(ex.duration_ms, 1_000, "answered at the call's 1 s timeout");
        }
    }
}

#[test]
fn an_unknown_cluster_is_a_bad_argument_and_the_sdk_panic_fails_closed() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_auth_random"), "").unwrap(); // no "httpbin" cluster
    let ex = h.send(Request::get("/"));
    eprintln!("{:?}\n{:?}", ex.trace, ex.logs);
    assert_eq!(ex.status(), Some(503));
    assert!(!ex.reached_upstream());
    assert!(ex
        .trace
        .iter()
        .any(|t| t.call == "proxy_http_call" && t.status == 2));
    let failure = h.failure(0).expect("VM failed");
    assert!(failure.contains("BadArgument"), "{failure}");
    // The VM stays dead: later requests also fail closed.
    assert_eq!(h.send(Request::get("/")).status(), Some(503));
}

#[test]
fn fail_open_skips_a_dead_filter() {
    let mut h = Harness::new();
    h.add_filter(
        FilterSpec::new(built("sdk_http_auth_random"))
            .failure_policy(switchyard_harness::FailurePolicy::FailOpen),
    )
    .unwrap();
    let ex = h.send(Request::get("/"));
    assert_eq!(ex.status(), Some(200));
    assert!(ex.reached_upstream());
}

#[test]
fn http_body_sees_the_whole_body_and_rewrites_it() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_body"), "").unwrap();
    h.upstream(
        Cluster::default()
            .header("content-length", "16")
            .body("this is a secret"),
    );
    let ex = h.send(Request::get("/"));
    let response = ex.response.unwrap();
    assert_eq!(
        response.body_str(),
        "Original message body (16 bytes) redacted.\n"
    );
    assert!(!response.headers.contains("content-length"));
    h.upstream(Cluster::default().body("nothing to hide"));
    assert_eq!(
        h.send(Request::get("/")).response.unwrap().body_str(),
        "nothing to hide"
    );
}

#[test]
fn http_config_reads_the_plugin_configuration() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_config"), "hello from config")
        .unwrap();
    let ex = h.send(Request::get("/"));
    assert_eq!(
        ex.response_header("custom-header").as_deref(),
        Some("hello from config")
    );
}

#[test]
fn several_filters_run_in_chain_order() {
    let mut h = Harness::new();
    h.filter(built("sdk_http_config"), "first").unwrap();
    h.filter(built("sdk_http_headers"), "").unwrap();
    // http_headers answers /hello; the response then passes http_config (earlier in the chain) too.
    let ex = h.send(Request::get("/hello"));
    assert_eq!(ex.local_reply.as_ref().map(|(i, _)| *i), Some(1));
    assert_eq!(
        ex.response_header("custom-header").as_deref(),
        Some("first")
    );
    let order: Vec<usize> = ex
        .trace
        .iter()
        .filter(|t| t.call == "on_request_headers")
        .map(|t| t.vm)
        .collect();
    assert_eq!(order, [0, 1]);
    let order: Vec<usize> = ex
        .trace
        .iter()
        .filter(|t| t.call == "on_response_headers")
        .map(|t| t.vm)
        .collect();
    assert_eq!(order, [1, 0], "responses run in reverse order");
}
