use super::*;
use crate::headers::HeaderList;

/// The issue's example configuration.
const EXAMPLE: &str = r#"{
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
}"#;

fn example() -> Timeouts {
    Timeouts::from_json(EXAMPLE.as_bytes()).unwrap()
}

fn req(pairs: &[(&str, &str)]) -> HeaderList {
    HeaderList::from_pairs(pairs.iter().copied())
}

fn forward(step: Step) -> Forward {
    match step {
        Step::Forward(f) => f,
        other => panic!("expected Forward, got {other:?}"),
    }
}

#[test]
fn grpc_timeout_in_every_unit_and_malformed_values() {
    assert_eq!(parse_grpc_timeout(b"1H"), Some(3_600_000));
    assert_eq!(parse_grpc_timeout(b"2M"), Some(120_000));
    assert_eq!(parse_grpc_timeout(b"3S"), Some(3000));
    assert_eq!(parse_grpc_timeout(b"250m"), Some(250));
    assert_eq!(parse_grpc_timeout(b"1500u"), Some(2));
    assert_eq!(parse_grpc_timeout(b"1n"), Some(1));
    for bad in [
        &b""[..],
        b"S",
        b"10",
        b"10s",
        b"123456789m",
        b"-5m",
        b"1.5S",
        b"\xffS",
    ] {
        assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
    }
    assert_eq!(grpc_timeout_value(250), "250m");
    assert_eq!(grpc_timeout_value(100_000_000), "100000S");
    assert!(is_grpc(b"application/grpc") && is_grpc(b"application/grpc+proto"));
    assert!(!is_grpc(b"application/grpc-web") && !is_grpc(b"application/json"));
}

#[test]
fn first_matching_rule_sets_timeout_per_try_and_retries() {
    let t = example();
    let v2 = req(&[(":path", "/reviews/1"), ("x-version", "v2")]);
    let adm = t.admit(&v2, 1000, 1000, 0);
    let r = &t.rules[adm.rule.unwrap()];
    assert_eq!(r.name, "reviews-v2");
    assert_eq!(
        r.retries,
        Some(Retries {
            attempts: 2,
            http_on: "5xx,reset,connect-failure".into(),
            grpc_on: String::new(),
            status_codes: String::new(),
        })
    );
    assert_eq!(
        forward(t.step(&adm, 1000)),
        Forward {
            timeout_ms: Some(500),
            per_try_timeout_ms: Some(200),
            propagate_ms: Some(200),
        }
    );
    let other = t.admit(&req(&[(":path", "/x")]), 0, 0, 0);
    assert_eq!(t.rules[other.rule.unwrap()].name, "default");
    assert_eq!(forward(t.step(&other, 0)).timeout_ms, Some(3000));
}

#[test]
fn forwarded_requests_get_the_router_controls_and_the_propagated_deadline() {
    let t = example();
    let grpc = req(&[
        (":path", "/reviews/1"),
        ("x-version", "v2"),
        ("content-type", "application/grpc"),
    ]);
    let adm = t.admit(&grpc, 0, 0, 0);
    let headers = t.router_headers(&adm, &forward(t.step(&adm, 0)));
    let got: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("x-envoy-upstream-rq-timeout-ms", "500"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "200"),
            ("x-envoy-max-retries", "2"),
            ("x-envoy-retry-on", "5xx,reset,connect-failure"),
            ("x-request-timeout-ms", "200"),
            ("grpc-timeout", "200m"),
        ]
    );
    // No rule, no deadline: nothing set (every client control is then removed).
    let bare = Timeouts::from_json(b"{}").unwrap();
    let adm = bare.admit(&req(&[]), 0, 0, 0);
    assert!(bare
        .router_headers(&adm, &forward(bare.step(&adm, 0)))
        .is_empty());
}

#[test]
fn time_already_spent_in_the_proxy_counts() {
    let t = example();
    // Arrived at 1000, the filter sees it at 1040 (another filter's I/O).
    let adm = t.admit(&req(&[(":path", "/x")]), 1000, 1040, 0);
    assert_eq!(forward(t.step(&adm, 1040)).timeout_ms, Some(2960));
    // A per-try timeout no shorter than what is left is dropped.
    let v2 = req(&[(":path", "/reviews"), ("x-version", "v2")]);
    let adm = t.admit(&v2, 0, 350, 0);
    assert_eq!(
        forward(t.step(&adm, 350)),
        Forward {
            timeout_ms: Some(150),
            per_try_timeout_ms: None,
            propagate_ms: Some(150),
        }
    );
}

#[test]
fn inbound_deadline_caps_the_rule_and_is_counted() {
    let t = example();
    let cases = [
        (("grpc-timeout", "300m"), 300, true),
        (("grpc-timeout", "1S"), 1000, true),
        (("grpc-timeout", "2H"), 3000, false),
        (("x-request-timeout-ms", "250"), 250, true),
    ];
    for ((h, v), want, capped) in cases {
        let adm = t.admit(&req(&[(":path", "/x"), (h, v)]), 0, 0, 0);
        assert_eq!(adm.capped, capped, "{h}: {v}");
        assert_eq!(forward(t.step(&adm, 0)).timeout_ms, Some(want), "{h}: {v}");
    }
    // The first well-formed header wins; malformed ones are reported.
    let both = req(&[("grpc-timeout", "bogus"), ("x-request-timeout-ms", "100")]);
    assert_eq!(t.inbound_budget_ms(&both), Budget::Ms(100));
    let bad = t.admit(
        &req(&[(":path", "/x"), ("x-request-timeout-ms", "1e3")]),
        0,
        0,
        0,
    );
    assert_eq!(bad.budget, Budget::Malformed);
    assert_eq!(forward(t.step(&bad, 0)).timeout_ms, Some(3000));
}

#[test]
fn without_a_rule_a_deadline_is_bounded_by_max_ms() {
    let t = Timeouts::from_json(
        br#"{"deadline": {"inbound": ["x-request-timeout-ms"], "max_ms": 2000}}"#,
    )
    .unwrap();
    let short = t.admit(&req(&[("x-request-timeout-ms", "300")]), 0, 0, 0);
    assert_eq!(forward(t.step(&short, 0)).timeout_ms, Some(300));
    let long = t.admit(&req(&[("x-request-timeout-ms", "60000")]), 0, 0, 0);
    assert_eq!(forward(t.step(&long, 0)).timeout_ms, Some(2000));
    // No rule and no deadline: the route's own timeout stands.
    assert_eq!(
        forward(t.step(&t.admit(&req(&[]), 0, 0, 0), 0)),
        Forward {
            timeout_ms: None,
            per_try_timeout_ms: None,
            propagate_ms: None,
        }
    );
}

#[test]
fn exhausted_budget_is_answered_504_at_once() {
    let t = example();
    for (budget, now) in [("4", 0), ("0", 0), ("100", 96), ("100", 500)] {
        let adm = t.admit(
            &req(&[(":path", "/x"), ("x-request-timeout-ms", budget)]),
            0,
            now,
            0,
        );
        match t.step(&adm, now) {
            Step::Reply(r) => {
                assert_eq!((r.kind, r.status), (ReplyKind::DeadlineExceeded, 504));
                assert_eq!(r.grpc_status, Some(4));
            }
            other => panic!("budget {budget} at {now}: {other:?}"),
        }
    }
    let enough = t.admit(
        &req(&[(":path", "/x"), ("x-request-timeout-ms", "5")]),
        0,
        0,
        0,
    );
    assert_eq!(forward(t.step(&enough, 0)).timeout_ms, Some(5));
}

#[test]
fn delay_waits_then_forwards_what_is_left_of_the_budget() {
    let t = Timeouts::from_json(
        br#"{"rules": [{"name": "r", "timeout_ms": 3000}],
             "faults": [{"name": "d", "match": {"path": {"prefix": "/ratings"}}, "delay": {"fixed_ms": 2000}}]}"#,
    )
    .unwrap();
    let adm = t.admit(&req(&[(":path", "/ratings/1")]), 100, 100, 0);
    assert_eq!(adm.delay_until_ms, Some(2100));
    assert_eq!(t.step(&adm, 100), Step::Wait(2100));
    assert_eq!(t.step(&adm, 1500), Step::Wait(2100));
    assert_eq!(forward(t.step(&adm, 2100)).timeout_ms, Some(1000));
    // Not aimed at other paths.
    let other = t.admit(&req(&[(":path", "/reviews")]), 100, 100, 0);
    assert_eq!((other.fault, other.delay_until_ms), (None, None));
}

#[test]
fn a_delay_longer_than_the_budget_ends_in_504_when_the_budget_does() {
    // The Istio lab: a 0.5 s timeout over a 2 s delay.
    let t = Timeouts::from_json(
        br#"{"rules": [{"name": "r", "timeout_ms": 500}],
             "deadline": {"inbound": ["x-request-timeout-ms"], "min_remaining_ms": 5},
             "faults": [{"name": "d", "delay": {"fixed_ms": 2000}}]}"#,
    )
    .unwrap();
    let adm = t.admit(&req(&[]), 0, 0, 0);
    // Wakes when less than min_remaining_ms is left, not after the delay.
    assert_eq!(t.step(&adm, 0), Step::Wait(496));
    assert!(matches!(
        t.step(&adm, 496),
        Step::Reply(Reply {
            kind: ReplyKind::DeadlineExceeded,
            status: 504,
            ..
        })
    ));
}

#[test]
fn abort_comes_after_any_delay_and_carries_the_grpc_status() {
    let t = Timeouts::from_json(
        br#"{"faults": [{"name": "chaos", "match": {"headers": {"x-chaos": {"exact": "abort"}}},
                         "delay": {"fixed_ms": 50}, "abort": {"status": 503, "grpc_status": 14}}]}"#,
    )
    .unwrap();
    let adm = t.admit(&req(&[("x-chaos", "abort")]), 0, 0, 0);
    assert_eq!(t.step(&adm, 0), Step::Wait(50));
    match t.step(&adm, 50) {
        Step::Reply(r) => assert_eq!(
            (r.kind, r.status, r.grpc_status),
            (ReplyKind::Abort, 503, Some(14))
        ),
        other => panic!("{other:?}"),
    }
    let calm = t.admit(&req(&[("x-chaos", "no")]), 0, 0, 0);
    assert!(matches!(t.step(&calm, 0), Step::Forward(_)));
}

#[test]
fn fault_percent_samples_by_request_id() {
    let t = Timeouts::from_json(
        br#"{"faults": [{"name": "half", "abort": {"status": 500, "percent": 50}}]}"#,
    )
    .unwrap();
    assert!(t.header_names().iter().any(|h| h == "x-request-id"));
    let mut aborted = 0;
    for i in 0..2000 {
        let id = format!("id-{i}");
        let a = t.admit(&req(&[("x-request-id", &id)]), 0, 0, 0).abort;
        // The same id decides the same way whatever the random draw.
        assert_eq!(
            a,
            t.admit(&req(&[("x-request-id", &id)]), 0, 0, u64::MAX)
                .abort
        );
        aborted += usize::from(a);
    }
    assert!((900..=1100).contains(&aborted), "{aborted}");
}

#[test]
fn grpc_requests_are_recognised() {
    let t = example();
    let adm = t.admit(
        &req(&[(":path", "/x"), ("content-type", "application/grpc")]),
        0,
        0,
        0,
    );
    assert!(adm.grpc);
    assert!(!t.admit(&req(&[(":path", "/x")]), 0, 0, 0).grpc);
}

#[test]
fn retry_conditions_split_between_http_and_grpc() {
    let t = Timeouts::from_json(
        br#"{"rules": [{"name": "r", "timeout_ms": 900, "retries": {"attempts": 3,
             "on": ["unavailable", "5xx", "retriable-status-codes", "cancelled"], "status_codes": [409, 425]}}]}"#,
    )
    .unwrap();
    assert_eq!(
        t.rules[0].retries,
        Some(Retries {
            attempts: 3,
            http_on: "5xx,retriable-status-codes".into(),
            grpc_on: "unavailable,cancelled".into(),
            status_codes: "409,425".into(),
        })
    );
}

#[test]
fn bad_configuration_names_the_field() {
    let err = |json: &str| Timeouts::from_json(json.as_bytes()).unwrap_err().field;
    for (json, field) in [
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 0}]}"#,
            "rules[0].timeout_ms",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": -1}]}"#,
            "rules[0].timeout_ms",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 5, "per_try_timeout_ms": 0}]}"#,
            "rules[0].per_try_timeout_ms",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 5, "per_try_timeout_ms": 5}]}"#,
            "rules[0].per_try_timeout_ms",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 5, "retries": {"attempts": 1, "on": ["sometimes"]}}]}"#,
            "rules[0].retries.on[0]",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 5, "retries": {"attempts": 0, "on": ["5xx"]}}]}"#,
            "rules[0].retries.attempts",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 5, "retries": {"attempts": 1, "on": []}}]}"#,
            "rules[0].retries.on",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 5, "retries": {"attempts": 1, "on": ["retriable-status-codes"]}}]}"#,
            "rules[0].retries.status_codes",
        ),
        (
            r#"{"rules": [{"name": "", "timeout_ms": 5}]}"#,
            "rules[0].name",
        ),
        (
            r#"{"rules": [{"name": "a", "timeout_ms": 5, "match": {"path": {"regex": "("}}}]}"#,
            "rules[0].match.path.regex",
        ),
        (
            r#"{"deadline": {"inbound": ["Grpc Timeout"]}}"#,
            "deadline.inbound[0]",
        ),
        (r#"{"deadline": {"inbound": []}}"#, "deadline.inbound"),
        (
            r#"{"deadline": {"inbound": ["a"], "propagate": "grpc-timeout"}}"#,
            "deadline.propagate",
        ),
        (
            r#"{"deadline": {"inbound": ["a"], "max_ms": 0}}"#,
            "deadline.max_ms",
        ),
        (r#"{"faults": [{"name": "f"}]}"#, "faults[0]"),
        (
            r#"{"faults": [{"name": "f", "delay": {"fixed_ms": 0}}]}"#,
            "faults[0].delay.fixed_ms",
        ),
        (
            r#"{"faults": [{"name": "f", "delay": {"fixed_ms": 5, "percent": 101}}]}"#,
            "faults[0].delay.percent",
        ),
        (
            r#"{"faults": [{"name": "f", "abort": {"status": 503, "percent": -1}}]}"#,
            "faults[0].abort.percent",
        ),
        (
            r#"{"faults": [{"name": "f", "abort": {"status": 99}}]}"#,
            "faults[0].abort.status",
        ),
        (
            r#"{"faults": [{"name": "f", "abort": {"status": 503, "grpc_status": 17}}]}"#,
            "faults[0].abort.grpc_status",
        ),
        (r#"{"sample_by": "X-Id"}"#, "sample_by"),
        (r#"{"budget_from": "later"}"#, "budget_from"),
        (r#"{"rules": [{"name": "a", "timeout": 5}]}"#, "rules[0]"),
    ] {
        assert!(
            err(json).starts_with(field),
            "{json}: {} != {field}",
            err(json)
        );
    }
}

#[test]
fn the_budget_counts_from_switchyard_unless_envoy_arrival_is_asked_for() {
    let from = |json: &str| Timeouts::from_json(json.as_bytes()).unwrap().budget_from;
    assert_eq!(from("{}"), BudgetFrom::Switchyard);
    assert_eq!(
        from(r#"{"budget_from": "switchyard"}"#),
        BudgetFrom::Switchyard
    );
    assert_eq!(
        from(r#"{"budget_from": "envoy_arrival"}"#),
        BudgetFrom::EnvoyArrival
    );
}

#[test]
fn a_deadline_the_policy_did_not_vouch_for_never_reaches_the_upstream() {
    let t = Timeouts::from_json(
        br#"{"rules": [{"name": "api", "match": {"path": {"prefix": "/api/"}}, "timeout_ms": 500}],
             "deadline": {"inbound": ["x-request-timeout-ms"], "propagate": "x-request-timeout-ms"}}"#,
    )
    .unwrap();
    let removed = |headers: &[(&str, &str)]| {
        let adm = t.admit(&req(headers), 0, 0, 0);
        let fwd = forward(t.step(&adm, 0));
        let written = t.router_headers(&adm, &fwd);
        let gone: Vec<String> = t
            .removed_headers(&adm, &written)
            .map(str::to_owned)
            .collect();
        let written: Vec<String> = written.iter().map(|(n, _)| (*n).to_owned()).collect();
        (written, gone)
    };
    // Unreadable, on a path no rule covers: nothing is written, so the client's value goes.
    let (written, gone) = removed(&[(":path", "/other"), ("x-request-timeout-ms", "abc")]);
    assert!(!written.contains(&"x-request-timeout-ms".to_owned()));
    assert!(gone.contains(&"x-request-timeout-ms".to_owned()));
    // A gRPC caller's unreadable grpc-timeout goes too.
    let (_, gone) = removed(&[
        (":path", "/other"),
        ("content-type", "application/grpc"),
        ("grpc-timeout", "forever"),
    ]);
    assert!(gone.contains(&"grpc-timeout".to_owned()));
    // A readable one is replaced by the policy's own value, not removed.
    let (written, gone) = removed(&[(":path", "/api/x"), ("x-request-timeout-ms", "200")]);
    assert!(written.contains(&"x-request-timeout-ms".to_owned()));
    assert!(!gone.contains(&"x-request-timeout-ms".to_owned()));
    // Every router control the policy did not set goes, whatever the request carried.
    let (_, gone) = removed(&[(":path", "/other")]);
    assert_eq!(gone.len(), CLIENT_CONTROL_HEADERS.len());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the clocks and the caller's deadline, the arithmetic neither
        /// overflows nor goes negative, and no forwarded budget exceeds the rule's.
        #[test]
        fn deadline_arithmetic_stays_in_range(
            arrived in prop_oneof![any::<u64>(), Just(0u64), (u64::MAX - 10_000..=u64::MAX)],
            elapsed in prop_oneof![Just(0u64), 0u64..10_000, any::<u64>()], later in 0u64..100_000,
            deadline in prop_oneof![any::<u64>().prop_map(|d| d.to_string()), "[0-9]{1,20}", ".{0,8}"],
            grpc in prop_oneof![Just(None), "[0-9]{1,9}[HMSmun]".prop_map(Some)],
            delay in any::<bool>(),
        ) {
            let t = Timeouts::from_json(
                br#"{"rules": [{"name": "r", "match": {"path": {"prefix": "/r"}}, "timeout_ms": 3000, "per_try_timeout_ms": 1000}],
                     "deadline": {"inbound": ["grpc-timeout", "x-deadline-ms"], "propagate": "x-deadline-ms",
                                  "min_remaining_ms": 5, "max_ms": 20000},
                     "faults": [{"name": "d", "match": {"headers": {"x-delay": {"present": true}}}, "delay": {"fixed_ms": 2000}}]}"#,
            ).unwrap();
            let now = arrived.saturating_add(elapsed);
            let mut headers = vec![(":path", "/r/x"), ("x-deadline-ms", deadline.as_str()), ("content-type", "application/grpc")];
            if let Some(g) = &grpc {
                headers.push(("grpc-timeout", g.as_str()));
            }
            if delay {
                headers.push(("x-delay", "1"));
            }
            let adm = t.admit(&req(&headers), arrived, now, 0);
            for at in [now, now.saturating_add(later), u64::MAX] {
                match t.step(&adm, at) {
                    Step::Forward(f) => {
                        prop_assert!(f.timeout_ms.is_some_and(|ms| (1..=3000).contains(&ms)), "{:?}", f);
                        prop_assert!(f.per_try_timeout_ms.is_none_or(|ms| ms <= 1000));
                        prop_assert!(f.propagate_ms.is_some_and(|ms| ms <= 3000));
                        for (name, value) in t.router_headers(&adm, &f) {
                            let ms = value.trim_end_matches(['m', 'S']).parse::<u64>();
                            prop_assert!(ms.is_ok_and(|ms| ms <= 3000), "{name}: {value}");
                        }
                    }
                    Step::Wait(w) => prop_assert!(w >= at),
                    Step::Reply(r) => prop_assert_eq!(r.status, 504),
                }
            }
        }
    }
}
