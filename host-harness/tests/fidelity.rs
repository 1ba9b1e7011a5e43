//! The harness proves its fidelity: every scenario in `scenarios/` meets its
//! expectations in the harness and in real Envoy, and the two runs differ in
//! nothing a filter or client can observe (beyond per-run values such as
//! dates and request ids).

mod common;
use std::path::Path;
use switchyard_harness::envoy;
use switchyard_harness::scenario::Scenario;

fn check(name: &str) {
    common::built("router");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    let scenario = Scenario::load(&path).unwrap();
    let in_harness = scenario.run_in_harness().unwrap();
    let in_envoy = envoy::run(&scenario).unwrap();
    for (run, observations) in [("harness", &in_harness), ("envoy", &in_envoy)] {
        for (entry, obs) in scenario.requests.iter().zip(observations.iter()) {
            let fails = obs.check(&entry.expect);
            assert!(
                fails.is_empty(),
                "{name} in {run}: {}: {fails:?}",
                entry.name
            );
        }
    }
    let differences = envoy::differences(&in_harness, &in_envoy);
    assert!(
        differences.is_empty(),
        "{name}: harness and Envoy differ:\n{}",
        differences.join("\n")
    );
}

#[test]
fn router_matches_envoy() {
    check("router.yaml");
}

#[test]
fn sdk_examples_match_envoy() {
    check("sdk_examples.yaml");
}

#[test]
fn body_rewrite_and_config_match_envoy() {
    check("sdk_body_and_config.yaml");
}

#[test]
fn local_reply_from_a_call_callback_matches_envoy() {
    check("sdk_auth_random_forbidden.yaml");
}

#[test]
fn fail_closed_after_a_trap_matches_envoy() {
    check("failure_policy.yaml");
}

#[test]
fn abi_statuses_match_envoy() {
    check("abi_probe.yaml");
}

#[test]
fn two_roots_in_one_vm_match_envoy() {
    check("shared_vm.yaml");
}

#[test]
fn every_scenario_file_is_checked_here() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let source = include_str!("fidelity.rs");
    for n in names {
        assert!(
            source.contains(&format!("check(\"{n}\")")),
            "scenarios/{n} is not run against Envoy"
        );
    }
}

#[test]
fn diff_reports_a_real_difference() {
    // A harness observation that Envoy would not produce must be reported.
    let scenario =
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/router.yaml"))
            .unwrap();
    let a = scenario.run_in_harness().unwrap();
    let mut b = a.clone();
    b[1].upstream_headers.retain(|(k, _)| k != "x-version");
    b[2].status = Some(503);
    let d = envoy::differences(&a, &b);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[0].contains("jason sees v2: upstream_headers"));
}

#[test]
fn router_timeouts_and_retries_match_envoy() {
    check("router_timeouts_and_retries.yaml");
}

#[test]
fn timeouts_local_replies_match_envoy() {
    check("timeouts_local_replies.yaml");
}

#[test]
fn http_call_answers_match_envoy() {
    check("http_call_answers.yaml");
}

#[test]
fn bodies_in_chunks_match_envoy() {
    check("bodies_in_chunks.yaml");
}

#[test]
fn http2_downstream_matches_envoy() {
    check("http2_downstream.yaml");
}

#[test]
fn trailers_match_envoy() {
    check("trailers.yaml");
}

#[test]
fn sdk_body_in_chunks_matches_envoy() {
    check("sdk_body_in_chunks.yaml");
}

#[test]
fn grpc_calls_match_envoy() {
    check("grpc_calls.yaml");
}

#[test]
fn the_sdk_hello_world_as_a_bootstrap_service_matches_envoy() {
    check("sdk_hello_world_service.yaml");
}

#[test]
fn a_service_feeding_filters_through_shared_data_and_a_queue_matches_envoy() {
    check("service_feeds_filters.yaml");
}
