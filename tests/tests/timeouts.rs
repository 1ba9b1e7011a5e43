//! The timeouts filter in real Envoy after the version router, with real
//! backends that can be told to wait (`/delay/<seconds>`) or to fail.

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_tests::{paths, Backend, Bootstrap, Envoy, Reply};

struct Setup {
    envoy: Envoy,
    v1: Backend,
    v2: Backend,
}

/// Envoy with `envoy-config/timeouts.yaml` in front of `v1` and `v2`.
fn setup_with(v1: Backend, v2: Backend, edit: impl FnOnce(&mut Value)) -> Setup {
    setup_editing(v1, v2, edit, |_| {})
}

/// [`setup_with`], the bootstrap edited too (after the filter's configuration).
fn setup_editing(
    v1: Backend,
    v2: Backend,
    edit: impl FnOnce(&mut Value),
    edit_bootstrap: impl FnOnce(&mut Bootstrap),
) -> Setup {
    let mut b = Bootstrap::load(&paths::envoy_config("timeouts.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    let mut config = b.filter_config("switchyard.timeouts");
    edit(&mut config);
    b.set_filter_config("switchyard.timeouts", &config);
    edit_bootstrap(&mut b);
    Setup {
        envoy: Envoy::start(&b),
        v1,
        v2,
    }
}

fn setup() -> Setup {
    setup_with(Backend::start("v1"), Backend::start("v2"), |_| {})
}

/// GET through Envoy: (status, elapsed, body, response headers we care about).
fn timed(s: &Setup, path: &str, headers: &[(&str, &str)]) -> (u16, Duration, String) {
    let t0 = Instant::now();
    let (status, resp) = switchyard_tests::get(&s.envoy.url(path), headers);
    let fault = resp.header("x-switchyard-fault").unwrap_or("").to_owned();
    let body = resp.into_string().unwrap_or_default();
    (
        status,
        t0.elapsed(),
        format!("{fault} {body}").trim().to_owned(),
    )
}

fn within(d: Duration, low_ms: u64, high_ms: u64) -> bool {
    d >= Duration::from_millis(low_ms) && d <= Duration::from_millis(high_ms)
}

/// How long a slow upstream takes where a test shows a budget cutting it
/// short: far enough past every budget here that a loaded machine's late
/// timers (hundreds of ms with a CPU hog on both cores) still tell "ended by
/// the budget" from "waited for the upstream".
const SLOW_UPSTREAM: &str = "/delay/4";
/// The latest a request cut short by a budget may end: over a second of
/// slack past the budgets here, and well before [`SLOW_UPSTREAM`] answers.
const ENDED_BY_BUDGET_MS: u64 = 2500;

#[test]
fn the_lab_half_second_timeout_over_a_two_second_upstream_is_504() {
    let s = setup();
    // jason → v2, whose reviews rule allows 0.5 s.
    let (status, elapsed, body) = timed(
        &s,
        &format!("/reviews{SLOW_UPSTREAM}"),
        &[("end-user", "jason")],
    );
    assert_eq!(status, 504, "{body}");
    assert!(within(elapsed, 450, ENDED_BY_BUDGET_MS), "{elapsed:?}");
    assert_eq!(body, "upstream request timeout");
    // Per try 200 ms, two retries: three attempts fit in the 0.5 s, the third
    // starting near 450 ms (two tries and Envoy's back-off), so a late timer
    // on a loaded machine can leave it out; at least one retry always runs.
    assert!((2..=3).contains(&s.v2.count()), "{}", s.v2.count());
    let seen = &s.v2.received()[0];
    assert_eq!(seen.header("x-envoy-expected-rq-timeout-ms"), Some("200"));
    assert_eq!(seen.header("x-envoy-upstream-rq-timeout-ms"), None);
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.timeouts.rule.reviews-v2.timeout_set"),
        1
    );
    // Others keep the default rule's 3 s.
    let (status, _, _) = timed(&s, "/reviews/delay/1", &[]);
    assert_eq!(status, 200);
}

/// Envoy honours a client's router headers only from internal addresses
/// (since 1.3x none are by default); make loopback internal, as a mesh's
/// own addresses are, so the client's headers would count.
fn trust_loopback(b: &mut Bootstrap) {
    let hcm =
        b.0.pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
            .expect("connection manager");
    hcm["use_remote_address"] = true.into();
    hcm["internal_address_config"] =
        serde_json::json!({"cidr_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]});
}

#[test]
fn a_client_cannot_lengthen_its_own_timeout() {
    let client_asks = [
        ("end-user", "jason"),
        ("x-envoy-upstream-rq-timeout-ms", "60000"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "60000"),
        ("x-envoy-max-retries", "0"),
    ];
    // Control: without the filter, an internal client's header does count.
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let mut b = Bootstrap::load(&paths::envoy_config("timeouts.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    trust_loopback(&mut b);
    let mut without = b.clone();
    let filters = without
        .0
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .expect("http filters");
    filters.retain(|f| f["name"] != "switchyard.timeouts");
    let control = Envoy::start(&without);
    let t0 = Instant::now();
    let (status, _) = switchyard_tests::get(
        &control.url(&format!("/reviews{SLOW_UPSTREAM}")),
        &[("x-envoy-upstream-rq-timeout-ms", "100")],
    );
    assert_eq!(status, 504);
    assert!(
        t0.elapsed() < Duration::from_millis(ENDED_BY_BUDGET_MS),
        "{:?}",
        t0.elapsed()
    );
    drop(control);
    // With the filter, the policy's 0.5 s stands.
    let s = Setup {
        envoy: Envoy::start(&b),
        v1,
        v2,
    };
    let (status, elapsed, _) = timed(&s, &format!("/reviews{SLOW_UPSTREAM}"), &client_asks);
    assert_eq!(status, 504);
    assert!(within(elapsed, 450, ENDED_BY_BUDGET_MS), "{elapsed:?}");
}

#[test]
fn an_inbound_deadline_shortens_the_budget_and_travels_upstream() {
    let s = setup();
    let (status, elapsed, _) = timed(&s, SLOW_UPSTREAM, &[("x-request-timeout-ms", "300")]);
    assert_eq!(status, 504);
    assert!(within(elapsed, 250, ENDED_BY_BUDGET_MS), "{elapsed:?}");
    // What the upstream is told is what is left: the 300 ms less the time in
    // the proxy (request.time from Envoy), never more. (That time is a few
    // ms; 200 ms allows for a starved scheduler.)
    let told: u64 = s.v1.received()[0]
        .header("x-request-timeout-ms")
        .expect("propagated")
        .parse()
        .unwrap();
    assert!((100..=300).contains(&told), "{told}");
    let (status, _, _) = timed(&s, "/", &[("grpc-timeout", "1S")]);
    assert_eq!(status, 200);
    assert_eq!(
        s.v1.received()[1].header("x-envoy-expected-rq-timeout-ms"),
        s.v1.received()[1].header("x-request-timeout-ms")
    );
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.timeouts.rule.default.deadline_capped"),
        2
    );
}

#[test]
fn an_exhausted_deadline_is_504_without_touching_the_upstream() {
    let s = setup();
    let (status, elapsed, body) = timed(&s, "/", &[("x-request-timeout-ms", "3")]);
    assert_eq!((status, body.as_str()), (504, "deadline exceeded"));
    // Answered at once, not after the default rule's 3 s.
    assert!(
        elapsed < Duration::from_millis(ENDED_BY_BUDGET_MS),
        "{elapsed:?}"
    );
    assert_eq!(s.v1.count() + s.v2.count(), 0);
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.timeouts.rule.default.deadline_exceeded"),
        1
    );
}

#[test]
fn retries_recover_from_an_upstream_that_fails_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let flaky = Backend::serving(
        "v2",
        Arc::new(move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::new(503, "warming up")
            } else {
                Reply::new(200, "ok from v2")
            }
        }),
    );
    let s = setup_with(Backend::start("v1"), flaky, |_| {});
    let (status, _, body) = timed(&s, "/reviews/1", &[("end-user", "jason")]);
    assert_eq!((status, body.as_str()), (200, "ok from v2"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(s.envoy.counter("cluster.v2.upstream_rq_retry"), 1);
    // Without a retry policy (default rule) the failure is the answer.
    calls.store(0, Ordering::SeqCst);
    let s2 = setup_with(
        Backend::serving("v1", Arc::new(|_| Reply::new(503, "down"))),
        Backend::start("v2"),
        |_| {},
    );
    assert_eq!(timed(&s2, "/reviews/1", &[]).0, 503);
    assert_eq!(s2.v1.count(), 1);
}

#[test]
fn fault_delay_holds_the_aimed_requests_only() {
    let s = setup_with(Backend::start("v1"), Backend::start("v2"), |c| {
        c["faults"][0]["delay"]["fixed_ms"] = 700.into();
    });
    // Several at once: each resumes on time.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let url = s.envoy.url(&format!("/ratings/{i}"));
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let (status, _) = switchyard_tests::get(&url, &[]);
                (status, t0.elapsed())
            })
        })
        .collect();
    let mut longest = Duration::ZERO;
    for h in handles {
        let (status, elapsed) = h.join().unwrap();
        assert_eq!(status, 200);
        // Each held for its own 700 ms, side by side: held one after another,
        // the third would end past 2.1 s.
        assert!(within(elapsed, 650, 1900), "{elapsed:?}");
        longest = longest.max(elapsed);
    }
    // Not aimed at /reviews: the counter stays at the six /ratings.
    let (status, _, _) = timed(&s, "/reviews/1", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.timeouts.fault.ratings-delay.delayed"),
        6
    );
    // The budget left after the delay is what the router gets: the 3 s less
    // the delay, and less no more than the request took in all.
    let after_delay: u64 = s.v1.received()[0]
        .header("x-envoy-expected-rq-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    let least = 3000u64.saturating_sub(longest.as_millis() as u64);
    assert!(
        (least..=2300).contains(&after_delay),
        "{after_delay} (longest request {longest:?})"
    );
}

#[test]
fn a_delay_longer_than_the_budget_ends_when_the_budget_does() {
    // The lab's shape in one proxy: the 2 s delay aimed at v2's reviews, 0.5 s budget.
    let s = setup_with(Backend::start("v1"), Backend::start("v2"), |c| {
        c["faults"][0]["match"] = serde_json::json!({"path": {"prefix": "/reviews"}});
    });
    let (status, elapsed, body) = timed(&s, "/reviews/1", &[("end-user", "jason")]);
    assert_eq!((status, body.as_str()), (504, "deadline exceeded"));
    // Ended by the 0.5 s budget, not by the 2 s delay.
    assert!(within(elapsed, 450, 1800), "{elapsed:?}");
    assert_eq!(s.v2.count(), 0);
}

#[test]
fn fault_abort_answers_the_aimed_requests_only() {
    let s = setup();
    let (status, _, body) = timed(&s, "/", &[("x-chaos", "abort")]);
    assert_eq!((status, body.as_str()), (503, "chaos fault injected"));
    assert_eq!(s.v1.count(), 0);
    assert_eq!(timed(&s, "/", &[("x-chaos", "calm")]).0, 200);
    assert_eq!(
        s.envoy
            .counter("wasmcustom.switchyard.timeouts.fault.chaos.aborted"),
        1
    );
}

/// Envoy with a Lua filter before the timeouts filter that holds every
/// request for a 0.6 s call of its own (as `ext_authz` would).
fn setup_behind_a_slow_filter(budget_from: Option<&str>) -> Setup {
    let edit = |config: &mut Value| {
        if let Some(from) = budget_from {
            config["budget_from"] = from.into();
        }
    };
    setup_editing(
        Backend::start("v1"),
        Backend::start("v2"),
        edit,
        insert_slow_lua,
    )
}

fn insert_slow_lua(b: &mut Bootstrap) {
    let lua = serde_json::json!({
        "name": "slow.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": r#"
                function envoy_on_request(handle)
                  handle:httpCall("v1", {[":method"] = "GET", [":path"] = "/delay/0.6",
                    [":authority"] = "slow"}, "", 5000)
                end"#}
        }
    });
    let filters =
        b.0.pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .expect("the connection manager's filters");
    let at = filters
        .iter()
        .position(|f| f["name"] == "switchyard.timeouts")
        .expect("the timeouts filter");
    filters.insert(at, lua);
}

/// The budget the upstream was told for `/productpage`, and how long the
/// request took.
fn productpage_budget(s: &Setup) -> (u64, Duration) {
    let (status, elapsed, body) = timed(s, "/productpage", &[]);
    assert_eq!(status, 200, "{body}");
    let seen = s.v1.received();
    let page = seen
        .iter()
        .find(|r| r.path == "/productpage")
        .expect("the request reached v1");
    let budget = page
        .header("x-envoy-expected-rq-timeout-ms")
        .and_then(|v| v.parse().ok())
        .expect("the budget was set");
    (budget, elapsed)
}

#[test]
fn by_default_the_budget_counts_from_when_switchyard_first_sees_the_request() {
    let s = setup_behind_a_slow_filter(None);
    let (budget, elapsed) = productpage_budget(&s);
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    // The 3 s default rule, whole: the Lua filter's 0.6 s came before.
    assert!((2990..=3000).contains(&budget), "{budget}");
}

#[test]
fn budget_from_envoy_arrival_spends_the_time_in_earlier_envoy_filters() {
    let s = setup_behind_a_slow_filter(Some("envoy_arrival"));
    let (budget, elapsed) = productpage_budget(&s);
    // 3 s less the 0.6 s call, and less no more than the request took.
    let least = 3000u64.saturating_sub(elapsed.as_millis() as u64);
    assert!((least..=2400).contains(&budget), "{budget} ({elapsed:?})");
}
