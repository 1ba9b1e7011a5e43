//! The real `timeouts.wasm` in the harness on the virtual clock: rule
//! selection, the router headers it sets (and Envoy's router honours),
//! deadlines, retries, delays and aborts.

mod common;

use common::{built, FilterPolicy};
use serde_json::{json, Value};
use switchyard_harness::{Cluster, Harness, Request};

/// The example configuration.
fn example() -> Value {
    json!({
      "rules": [
        {"name": "reviews-v2", "match": {"headers": {"x-version": {"exact": "v2"}}, "path": {"prefix": "/reviews"}},
         "timeout_ms": 500, "per_try_timeout_ms": 200, "retries": {"attempts": 2, "on": ["5xx", "reset", "connect-failure"]}},
        {"name": "default", "match": {}, "timeout_ms": 3000}
      ],
      "deadline": {"inbound": ["grpc-timeout", "x-request-timeout-ms"], "propagate": "x-request-timeout-ms", "min_remaining_ms": 5},
      "faults": [
        {"name": "ratings-delay", "match": {"path": {"prefix": "/ratings"}}, "delay": {"fixed_ms": 2000, "percent": 100}},
        {"name": "chaos", "match": {"headers": {"x-chaos": {"exact": "abort"}}}, "abort": {"status": 503, "percent": 100}}
      ]
    })
}

fn harness(config: &Value) -> Harness {
    let mut h = Harness::new();
    h.filter_policy("timeouts", &config.to_string())
        .expect("timeouts loads");
    h
}

fn v2(path: &str) -> Request {
    Request::get(path).header("x-version", "v2")
}

#[test]
fn the_lab_timeout_fires_over_a_slow_upstream() {
    let mut h = harness(&example());
    h.upstream(Cluster::default().delay_ms(2000));
    let ex = h.send(v2("/reviews/1"));
    assert_eq!(ex.status(), Some(504));
    assert_eq!(
        ex.response.as_ref().unwrap().body_str(),
        "upstream request timeout"
    );
    // 500 ms budget, 200 ms per try, retried twice on the per-try timeout.
    assert_eq!(ex.duration_ms, 500);
    let up = ex.upstream.as_ref().unwrap();
    assert_eq!(up.attempts, 3);
    // The router consumed its headers and told the upstream its per-try budget.
    assert_eq!(
        ex.upstream_header("x-envoy-expected-rq-timeout-ms")
            .as_deref(),
        Some("200")
    );
    assert_eq!(ex.upstream_header("x-envoy-upstream-rq-timeout-ms"), None);
    assert_eq!(
        ex.upstream_header("x-request-timeout-ms").as_deref(),
        Some("200")
    );
    assert_eq!(
        h.metric("switchyard.timeouts.rule.reviews-v2.timeout_set"),
        Some(1)
    );
}

#[test]
fn the_first_matching_rule_decides_and_others_fall_to_the_default() {
    let mut h = harness(&example());
    h.upstream(Cluster::default().delay_ms(2500));
    // Not v2: the default rule's 3 s budget, no retries.
    let ex = h.send(Request::get("/reviews/1"));
    assert_eq!((ex.status(), ex.duration_ms), (Some(200), 2500));
    assert_eq!(ex.upstream.as_ref().unwrap().attempts, 1);
    assert_eq!(
        ex.upstream_header("x-envoy-expected-rq-timeout-ms")
            .as_deref(),
        Some("3000")
    );
    h.upstream(Cluster::default().delay_ms(3500));
    assert_eq!(h.send(Request::get("/other")).duration_ms, 3000);
    assert_eq!(
        h.metric("switchyard.timeouts.rule.default.timeout_set"),
        Some(2)
    );
    assert_eq!(
        h.metric("switchyard.timeouts.rule.reviews-v2.timeout_set"),
        Some(0)
    );
}

#[test]
fn retries_recover_from_a_failing_first_attempt() {
    let mut h = harness(&example());
    h.upstream(Cluster::default().first([Cluster::status(503), Cluster::reset()]));
    let ex = h.send(v2("/reviews/1"));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.upstream.as_ref().unwrap().attempts, 3);
    // Two back-offs of Envoy's 25 ms base.
    assert_eq!(ex.duration_ms, 50);
    // Without a retry policy the first failure is the answer.
    h.upstream(Cluster::default().first([Cluster::status(503)]));
    assert_eq!(h.send(Request::get("/x")).status(), Some(503));
}

#[test]
fn router_headers_already_on_the_request_cannot_raise_the_budget() {
    // Envoy (and the harness) drop an external client's router headers before
    // filters; an internal client's (or an earlier filter's) reach this filter.
    // The fixture plays that client: `x-set-<name>` becomes `<name>`.
    let mut h = Harness::new();
    h.filter(built("fixture_set_headers"), "")
        .expect("fixture loads")
        .filter_policy("timeouts", &example().to_string())
        .expect("timeouts loads");
    h.upstream(Cluster::default().delay_ms(10_000));
    let ex = h.send(
        Request::get("/x")
            .header("x-set-x-envoy-upstream-rq-timeout-ms", "60000")
            .header("x-set-x-envoy-expected-rq-timeout-ms", "60000")
            .header("x-set-x-envoy-max-retries", "9")
            .header("x-set-x-envoy-retry-on", "5xx"),
    );
    assert_eq!((ex.status(), ex.duration_ms), (Some(504), 3000));
    assert_eq!(ex.upstream.as_ref().unwrap().attempts, 1);
    assert_eq!(
        ex.upstream_header("x-envoy-expected-rq-timeout-ms")
            .as_deref(),
        Some("3000")
    );
    // Nor add retries of its own.
    h.upstream(Cluster::status(503));
    let ex = h.send(
        Request::get("/x")
            .header("x-set-x-envoy-max-retries", "9")
            .header("x-set-x-envoy-retry-on", "5xx"),
    );
    assert_eq!(ex.status(), Some(503));
    assert_eq!(ex.upstream.as_ref().unwrap().attempts, 1);
}

#[test]
fn an_inbound_deadline_caps_the_rule_and_travels_upstream() {
    let mut h = harness(&example());
    h.upstream(Cluster::default().delay_ms(2000));
    for (header, value, fires_at) in [
        ("x-request-timeout-ms", "300", 300),
        ("grpc-timeout", "300m", 300),
        ("grpc-timeout", "1S", 1000),
        ("grpc-timeout", "400000u", 400),
        ("grpc-timeout", "99999999n", 100),
    ] {
        let ex = h.send(Request::get("/x").header(header, value));
        assert_eq!(
            (ex.status(), ex.duration_ms),
            (Some(504), fires_at),
            "{header}: {value}"
        );
        assert_eq!(
            ex.upstream_header("x-request-timeout-ms"),
            Some(fires_at.to_string()),
            "{header}: {value}"
        );
    }
    assert_eq!(
        h.metric("switchyard.timeouts.rule.default.deadline_capped"),
        Some(5)
    );
    // A deadline longer than the rule does not lengthen it.
    let ex = h.send(Request::get("/x").header("grpc-timeout", "1M"));
    assert_eq!(
        ex.upstream_header("x-request-timeout-ms").as_deref(),
        Some("3000")
    );
}

#[test]
fn grpc_requests_get_their_deadline_in_grpc_timeout() {
    let mut h = harness(&example());
    let ex = h.send(
        Request::new("POST", "/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "2S"),
    );
    assert_eq!(ex.upstream_header("grpc-timeout").as_deref(), Some("2000m"));
    assert_eq!(
        ex.upstream_header("x-request-timeout-ms").as_deref(),
        Some("2000")
    );
    // Plain HTTP requests are not given a grpc-timeout.
    let ex = h.send(Request::get("/x").header("x-request-timeout-ms", "100"));
    assert_eq!(ex.upstream_header("grpc-timeout"), None);
}

#[test]
fn malformed_deadlines_are_ignored_and_counted() {
    let mut h = harness(&example());
    for value in ["10s", "-5m", "123456789m", "1.5S", "S", "soon"] {
        let ex = h.send(Request::get("/x").header("grpc-timeout", value));
        assert_eq!(ex.status(), Some(200), "{value}");
        assert_eq!(
            ex.upstream_header("x-request-timeout-ms").as_deref(),
            Some("3000"),
            "{value}"
        );
    }
    let ex = h.send(Request::get("/x").header("x-request-timeout-ms", [0xff, 0x31]));
    assert_eq!(ex.status(), Some(200));
    assert_eq!(h.metric("switchyard.timeouts.deadline_malformed"), Some(7));
    assert!(h.failure(0).is_none());
}

#[test]
fn an_exhausted_budget_is_answered_at_once_without_the_upstream() {
    let mut h = harness(&example());
    let ex = h.send(Request::get("/x").header("x-request-timeout-ms", "4"));
    assert_eq!((ex.status(), ex.duration_ms), (Some(504), 0));
    assert!(!ex.reached_upstream());
    assert_eq!(
        ex.response.as_ref().unwrap().body_str(),
        "deadline exceeded"
    );
    assert_eq!(
        ex.local_reply.as_ref().map(|(_, d)| d.as_str()),
        Some("switchyard_timeouts_deadline_exceeded")
    );
    // A gRPC caller gets DEADLINE_EXCEEDED.
    let ex = h.send(
        Request::new("POST", "/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "2m"),
    );
    assert!(!ex.reached_upstream());
    assert_eq!(ex.status(), Some(200));
    assert_eq!(ex.response_header("grpc-status").as_deref(), Some("4"));
    assert_eq!(
        h.metric("switchyard.timeouts.rule.default.deadline_exceeded"),
        Some(2)
    );
}

#[test]
fn many_delayed_requests_each_resume_on_time() {
    let mut h = harness(&example());
    let ids: Vec<_> = (0..50)
        .map(|i| {
            let id = h.start(Request::get(&format!("/ratings/{i}")));
            h.advance(7);
            id
        })
        .collect();
    h.advance(2000);
    for (i, id) in ids.iter().enumerate() {
        let ex = h.exchange(*id).unwrap();
        assert_eq!(ex.status(), Some(200), "stream {i}");
        assert_eq!(ex.duration_ms, 2000, "stream {i} resumed late or early");
        // The 3 s budget less the 2 s spent in the delay.
        assert_eq!(
            ex.upstream_header("x-envoy-expected-rq-timeout-ms")
                .as_deref(),
            Some("1000")
        );
    }
    assert_eq!(
        h.metric("switchyard.timeouts.fault.ratings-delay.delayed"),
        Some(50)
    );
    // Nothing held: the tick is off, so an idle filter costs nothing.
    let ticks = |h: &Harness| {
        h.world()
            .trace
            .iter()
            .filter(|t| t.call == "on_tick")
            .count()
    };
    let before = ticks(&h);
    h.advance(60_000);
    assert_eq!(ticks(&h), before);
}

#[test]
fn a_delay_longer_than_the_budget_ends_in_504_when_the_budget_does() {
    // The lab: the 2 s delay aimed at reviews, whose v2 rule allows 0.5 s.
    let mut config = example();
    config["faults"][0]["match"] = json!({"path": {"prefix": "/reviews"}});
    let mut h = harness(&config);
    let ex = h.send(v2("/reviews/1"));
    assert_eq!(ex.status(), Some(504));
    assert!(!ex.reached_upstream());
    // Woken when less than min_remaining_ms (5) is left, not after the delay.
    assert_eq!(ex.duration_ms, 496);
    // The same holds for a caller's deadline under the default rule.
    let ex = h.send(Request::get("/reviews/1").header("x-request-timeout-ms", "800"));
    assert_eq!((ex.status(), ex.duration_ms), (Some(504), 796));
    assert_eq!(
        h.metric("switchyard.timeouts.rule.reviews-v2.deadline_exceeded"),
        Some(1)
    );
}

#[test]
fn aborts_are_aimed_and_speak_grpc_to_grpc_callers() {
    let mut h = harness(&example());
    let ex = h.send(Request::get("/x").header("x-chaos", "abort"));
    assert_eq!(ex.status(), Some(503));
    assert!(!ex.reached_upstream());
    assert_eq!(
        ex.response_header("x-switchyard-fault").as_deref(),
        Some("chaos")
    );
    assert_eq!(
        h.send(Request::get("/x").header("x-chaos", "no")).status(),
        Some(200)
    );
    let ex = h.send(
        Request::new("POST", "/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("x-chaos", "abort"),
    );
    assert_eq!(ex.status(), Some(200));
    // Envoy maps 503 to UNAVAILABLE.
    assert_eq!(ex.response_header("grpc-status").as_deref(), Some("14"));
    assert_eq!(h.metric("switchyard.timeouts.fault.chaos.aborted"), Some(2));
}

#[test]
fn fault_percent_is_deterministic_by_request_id() {
    let mut config = example();
    config["faults"][1]["abort"]["percent"] = json!(30);
    let mut h = harness(&config);
    let mut aborted = Vec::new();
    for i in 0..1000 {
        let ex = h.send(
            Request::get("/x")
                .header("x-chaos", "abort")
                .header("x-request-id", format!("req-{i}")),
        );
        aborted.push(ex.status() == Some(503));
    }
    let n = aborted.iter().filter(|a| **a).count();
    assert!((250..=350).contains(&n), "{n} of 1000 aborted");
    for (i, was) in aborted.iter().enumerate().take(100) {
        let ex = h.send(
            Request::get("/x")
                .header("x-chaos", "abort")
                .header("x-request-id", format!("req-{i}")),
        );
        assert_eq!(ex.status() == Some(503), *was, "req-{i}");
    }
}

#[test]
fn a_client_leaving_during_a_delay_is_forgotten() {
    let mut h = harness(&example());
    let gone = h.start(Request::get("/ratings/1"));
    h.advance(100);
    h.abort(gone);
    let kept = h.start(Request::get("/ratings/2"));
    h.advance(2000);
    assert_eq!(h.exchange(kept).unwrap().status(), Some(200));
    let ex = h.exchange(gone).unwrap();
    assert!(ex.response.is_none() && !ex.reached_upstream());
    assert!(h.failure(0).is_none());
}

#[test]
fn bad_configuration_is_rejected_naming_the_field() {
    for (config, field) in [
        (
            json!({"rules": [{"name": "a", "timeout_ms": 0}]}),
            "rules[0].timeout_ms",
        ),
        (
            json!({"faults": [{"name": "f", "abort": {"status": 503, "percent": 140}}]}),
            "faults[0].abort.percent",
        ),
        (
            json!({"rules": [{"name": "a", "timeout_ms": 9, "retries": {"attempts": 1, "on": ["later"]}}]}),
            "rules[0].retries.on[0]",
        ),
    ] {
        let err = Harness::new()
            .filter_policy("timeouts", &config.to_string())
            .err()
            .expect("rejected")
            .to_string();
        assert!(err.contains(field), "{err}");
    }
}
