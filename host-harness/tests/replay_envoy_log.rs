//! `harness replay` on a log real Envoy wrote: Envoy 1.40 with the version
//! router and the access log of `envoy-config/fragments/access-log.yaml` serves
//! recorded traffic; replayed under the configuration Envoy ran, every
//! request gets the version Envoy routed it to, and a new configuration's
//! impact is reported request by request.

mod common;

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use switchyard_harness::impact::{self, Fields};
use switchyard_harness::ClockStart;
use switchyard_tests::{paths, Backend, Bootstrap, Envoy};

fn lab(v1_weight: u32) -> Value {
    json!({"default_version": "v1", "routes": [
        {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"},
        {"name": "canary", "match": {"path": {"prefix": "/reviews"}},
         "split": [{"version": "v1", "weight": v1_weight}, {"version": "v2", "weight": 100 - v1_weight}],
         "sticky": {"cookie": "user"}}]})
}

/// Serves `requests` through Envoy with the lab at 90/10 and returns the
/// log lines Envoy wrote.
fn record(log: &std::path::Path, requests: usize) -> Vec<Value> {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let mut b = Bootstrap::load(&paths::envoy_config("router.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_filter_config("switchyard.router", &lab(90));
    let fragment: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(paths::envoy_config("fragments/access-log.yaml")).unwrap(),
    )
    .unwrap();
    let mut access_log = fragment["access_log"].clone();
    access_log[0]["typed_config"]["path"] = json!(log.to_str().unwrap());
    b.0["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["access_log"] = access_log;
    let envoy = Envoy::start(&b);
    for i in 0..requests {
        let cookie = format!("user=u{i}; theme=dark");
        let mut headers = vec![("cookie", cookie.as_str())];
        if i % 10 == 0 {
            headers.push(("end-user", "jason"));
        }
        let path = if i % 7 == 0 { "/" } else { "/reviews/1" };
        let (status, _) = switchyard_tests::get(&envoy.url(path), &headers);
        assert_eq!(status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= requests {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {requests} log lines",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_log_real_envoy_wrote_replays_as_envoy_routed_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let n = 300;
    let lines = record(&log, n);
    let entries = impact::read_requests(&log).unwrap();
    assert_eq!(entries.len(), n);
    // The logged request is the client's: no header the router wrote.
    assert!(entries
        .iter()
        .all(|e| !e.headers.0.iter().any(|(k, _)| k == "x-version")));
    assert!(entries[0]
        .headers
        .0
        .iter()
        .any(|(k, v)| k == "end-user" && v == "jason"));
    assert!(
        !entries[1].headers.0.iter().any(|(k, _)| k == "end-user"),
        "absent, not \"-\""
    );

    // Replayed with the configuration Envoy ran, nothing changes, and each
    // version's count is what Envoy routed.
    let wasm = common::built("router");
    let old = lab(90).to_string().into_bytes();
    let same = impact::compare(
        &wasm,
        &old,
        &old,
        &entries,
        &Fields::default(),
        ClockStart::Fixed,
        || {},
    )
    .unwrap();
    assert!(same.changes.is_empty());
    let routed = |cluster: &str| {
        lines
            .iter()
            .filter(|l| l["upstream_cluster"] == cluster)
            .count()
    };
    let replayed = |v: &str| same.distribution["version"].get(v).map_or(0, |c| c.0);
    assert_eq!(
        (replayed("v1"), replayed("v2")),
        (routed("v1"), routed("v2"))
    );

    // 90/10 → 50/50: only canary requests move, all from v1 to v2, and the
    // CLI says so.
    let new = lab(50).to_string().into_bytes();
    let moved = impact::compare(
        &wasm,
        &old,
        &new,
        &entries,
        &Fields::default(),
        ClockStart::Fixed,
        || {},
    )
    .unwrap();
    assert!(!moved.changes.is_empty());
    for c in &moved.changes {
        assert_eq!(c.changed, ["version"]);
        assert_eq!(
            (c.before.version.as_deref(), c.after.version.as_deref()),
            (Some("v1"), Some("v2"))
        );
        assert_eq!(c.after.rule, "router.canary.v2.requests");
        let line = &lines[c.index];
        assert_eq!(line["upstream_cluster"], "v1", "before is what Envoy did");
    }
    let new_file = dir.path().join("new.json");
    std::fs::write(&new_file, &new).unwrap();
    let old_file = dir.path().join("old.json");
    std::fs::write(&old_file, &old).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["replay", "--filter"])
        .arg(&wasm)
        .arg("--config")
        .arg(&new_file)
        .arg("--against")
        .arg(&old_file)
        .arg("--requests")
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = format!("{n} requests, {} change outcome", moved.changes.len());
    assert!(text.contains(&summary), "{text}");
    assert!(
        text.contains("router.canary.v1.requests -> router.canary.v2.requests"),
        "{text}"
    );
}
