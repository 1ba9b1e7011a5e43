//! The `harness` command line: exit codes, output, one-filter runs, replay.

mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("run harness")
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_passing_scenario_exits_0() {
    common::built("router");
    let out = harness(&["run", &scenario("router.yaml")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("4 passed, 0 failed"));
}

#[test]
fn a_failed_expectation_exits_1_with_expected_and_actual() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::built("router");
    let s = write(dir.path(), "s.yaml", &format!(
        "filters: [{{wasm: {}, config: {{default_version: v1}}}}]\nrequests:\n  - name: wrong\n    headers: {{end-user: jason}}\n    expect: {{upstream_headers: {{x-version: v2}}, status: 200}}\n",
        wasm.display()
    ));
    let out = harness(&["run", s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(r#"upstream_headers.x-version: expected Some("v2"), got Some("v1")"#),
        "{}",
        text(&out)
    );
}

#[test]
fn an_unloadable_filter_or_scenario_exits_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = write(
        dir.path(),
        "a.yaml",
        "filters: [{wasm: nope.wasm}]\nrequests: [{name: x}]\n",
    );
    let out = harness(&["run", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("nope.wasm"), "{}", text(&out));

    let bad = write(dir.path(), "b.yaml", "requests: [{name: x, expekt: {}}]\n");
    let out = harness(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("expekt"), "{}", text(&out));

    let wasm = common::built("router");
    let rejected = write(
        dir.path(),
        "c.yaml",
        &format!(
            "filters: [{{wasm: {}, config: {{routes: []}}}}]\nrequests: [{{name: x}}]\n",
            wasm.display()
        ),
    );
    let out = harness(&["run", rejected.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("default_version"), "{}", text(&out));
    // What only the harness can simulate is refused by --envoy, not run wrong.
    for (file, scenario, reason) in [
        (
            "d.yaml",
            "requests: [{name: x, connection: {source: \"10.0.0.1:1\"}}]\n",
            "connection",
        ),
        (
            "e.yaml",
            "requests: [{name: x, upstream: {refused: true}}]\n",
            "whole cluster",
        ),
    ] {
        let path = write(dir.path(), file, scenario);
        let out = harness(&["run", "--envoy", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(reason), "{}", text(&out));
    }
    let both = write(
        dir.path(),
        "f.yaml",
        "requests: [{name: x, body: a, body_chunks: [b]}]\n",
    );
    let out = harness(&["run", both.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("body_chunks"), "{}", text(&out));
}

#[test]
fn an_abi_0_1_0_module_or_a_missing_import_is_reported_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(
        dir.path(),
        "old.wat",
        r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_1_0")) (func (export "malloc") (param i32) (result i32) i32.const 0))"#,
    );
    let s = write(
        dir.path(),
        "s.yaml",
        &format!(
            "filters: [{{wasm: {}}}]\nrequests: [{{name: x}}]\n",
            old.display()
        ),
    );
    let out = harness(&["run", s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("ABI 0.1.0"), "{}", text(&out));

    let odd = write(
        dir.path(),
        "odd.wat",
        r#"(module (import "env" "proxy_teleport" (func (param i32) (result i32))) (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")) (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))"#,
    );
    let s = write(
        dir.path(),
        "t.yaml",
        &format!(
            "filters: [{{wasm: {}}}]\nrequests: [{{name: x}}]\n",
            odd.display()
        ),
    );
    let out = harness(&["run", s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("env.proxy_teleport"), "{}", text(&out));
}

#[test]
fn json_output_has_one_object_per_request() {
    common::built("router");
    let out = harness(&["run", &scenario("router.yaml"), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["name"], "jason sees v2");
    assert_eq!(lines[1]["upstream_cluster"], "v2");
    assert!(lines[1]["upstream_headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "x-version" && h[1] == "v2"));
}

#[test]
fn filter_and_config_flags_replace_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.json", r#"{"default_version": "v2"}"#);
    let s = write(
        dir.path(),
        "s.yaml",
        "requests:\n  - name: all to v2\n    expect: {upstream_headers: {x-version: v2}}\n",
    );
    let wasm = common::built("router");
    let out = harness(&[
        "run",
        s.to_str().unwrap(),
        "--filter",
        wasm.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn replay_reports_the_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.json",
        r#"{"default_version": "v1", "routes": [{"split": [{"version": "v1", "weight": 3}, {"version": "v2", "weight": 1}], "sticky": {"header": "x-user-id"}}]}"#,
    );
    let wasm = common::built("router");
    let out = harness(&[
        "replay",
        "--filter",
        wasm.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--count",
        "4000",
        "--by",
        "x-version",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let share = |v: &str| -> f64 {
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(v))
            .unwrap_or_else(|| panic!("no {v} row"))
            .to_owned();
        line.split_whitespace()
            .nth(2)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    assert!((share("v2") - 25.0).abs() < 2.5, "v2 {}", share("v2"));

    let jsonl = write(
        dir.path(),
        "r.jsonl",
        "{\"headers\": {\"x-user-id\": \"a\"}}\n{\"headers\": {\"x-user-id\": \"a\"}}\n",
    );
    let out = harness(&[
        "replay",
        "--filter",
        wasm.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--requests",
        jsonl.to_str().unwrap(),
        "--by",
        "x-version",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" 2 ") && l.contains("100.00%")),
        "{stdout}"
    );
}

/// The workspace root: command-line paths below are given relative to it.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn command_line_paths_are_relative_to_the_working_directory() {
    let wasm = common::built("router");
    let relative_wasm = wasm.strip_prefix(workspace()).unwrap();
    // The scenario lives elsewhere: --filter and --config must not be looked up beside it.
    let scenarios = tempfile::tempdir().unwrap();
    let s = write(
        scenarios.path(),
        "s.yaml",
        "requests:\n  - name: all to v2\n    expect: {upstream_headers: {x-version: v2}}\n",
    );
    let configs = tempfile::tempdir_in(workspace().join("target")).unwrap();
    write(configs.path(), "c.json", r#"{"default_version": "v2"}"#);
    let relative_config = configs
        .path()
        .strip_prefix(workspace())
        .unwrap()
        .join("c.json");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(workspace())
        .args(["run", s.to_str().unwrap(), "--filter"])
        .arg(relative_wasm)
        .arg("--config")
        .arg(&relative_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(workspace())
        .args(["replay", "--count", "3", "--by", "x-version", "--filter"])
        .arg(relative_wasm)
        .arg("--config")
        .arg(&relative_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("v2"), "{}", text(&out));
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    common::built("router");
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["run", &scenario("router.yaml"), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // As `| head -0` does: the reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn every_option_of_every_command_says_what_it_takes() {
    for command in ["run", "diff", "replay"] {
        let out = harness(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut options = 0;
        for line in help.lines().filter(|l| l.trim_start().starts_with("--")) {
            options += 1;
            let (flag, rest) = line.trim().split_once("  ").unwrap_or((line, ""));
            assert!(
                rest.trim().len() > 10,
                "{command} {flag}: no description in\n{help}"
            );
        }
        let positional = help.lines().skip_while(|l| !l.starts_with("Arguments:"));
        for line in positional.skip(1).take_while(|l| !l.is_empty()) {
            assert!(line.trim().split_once("  ").is_some(), "{command}: {line}");
        }
        assert!(command == "diff" || options >= 3, "{command}: {help}");
    }
    let replay = text(&harness(&["replay", "--help"]));
    for default in [
        "[default: 10000]",
        "[default: generated]",
        "[default: by status]",
    ] {
        assert!(replay.contains(default), "{default} missing:\n{replay}");
    }
}

/// An auth scenario whose token was minted from the wall clock, as a
/// team's identity provider mints it today.
fn todays_token_scenario(dir: &Path, clock_start: Option<&str>) -> PathBuf {
    use switchyard_tests::tokens;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = tokens::mint("RS256", &tokens::claims("jason", now_s));
    let config = serde_json::json!({
        "providers": [{"name": "corp", "jwt": {"issuer": tokens::ISSUER,
            "audiences": [tokens::AUDIENCE], "jwks": tokens::jwks()}}],
        "rules": [{"match": {}, "require": ["corp"]}],
        "identity": {"header": "end-user", "from_claim": "sub"}
    });
    let scenario = serde_json::json!({
        "clock_start": clock_start,
        "filters": [{"wasm": common::built("auth"), "config": config}],
        "requests": [{"name": "today's token", "headers": {"authorization": format!("Bearer {token}")},
            "expect": {"status": 200, "upstream_headers": {"end-user": "jason"}}}]
    });
    let mut scenario = scenario;
    if clock_start.is_none() {
        scenario.as_object_mut().unwrap().remove("clock_start");
    }
    write(dir, "today.json", &scenario.to_string())
}

#[test]
fn the_clock_starts_where_the_scenario_or_the_command_line_says() {
    let dir = tempfile::tempdir().unwrap();
    // The default start (2026-01-01) is before today's token was issued.
    let s = todays_token_scenario(dir.path(), None);
    let out = harness(&["run", s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("got Some(401)"), "{}", text(&out));

    let out = harness(&["run", s.to_str().unwrap(), "--clock-start", "now"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let s = todays_token_scenario(dir.path(), Some("now"));
    let out = harness(&["run", s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // An instant long after the token expired.
    let out = harness(&[
        "run",
        s.to_str().unwrap(),
        "--clock-start",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let out = harness(&["run", s.to_str().unwrap(), "--clock-start", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("RFC 3339"), "{}", text(&out));
}

#[test]
fn the_clock_start_is_set_from_the_rust_api_before_any_filter() {
    use switchyard_harness::{ClockStart, Harness, Request};
    let at: ClockStart = "2026-12-01T09:30:00Z".parse().unwrap();
    assert_eq!(at, ClockStart::At(1_796_117_400 * 1_000_000_000));
    let mut h = Harness::new();
    h.start_clock(at).unwrap();
    assert_eq!(h.world().now_ns, 1_796_117_400 * 1_000_000_000);
    assert_eq!(h.now_ms(), 0, "scenario times count from the start");
    h.filter(common::built("router"), r#"{"default_version": "v1"}"#)
        .unwrap();
    assert!(h.send(Request::get("/")).reached_upstream());
    assert!(
        h.start_clock(ClockStart::Now).is_err(),
        "time never runs backwards"
    );
}

#[test]
fn replay_against_reports_what_a_configuration_change_changes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::built("router");
    let old = write(dir.path(), "old.json", r#"{"default_version": "v1"}"#);
    let new = write(
        dir.path(),
        "new.json",
        r#"{"default_version": "v1", "routes": [{"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"}]}"#,
    );
    // An access-log line (extra keys, a null header), a scenario entry, a list of pairs.
    let requests = write(
        dir.path(),
        "r.jsonl",
        concat!(
            "{\"headers\": {\":path\": \"/a\", \"end-user\": \"jason\", \"cookie\": null}, \"response_code\": 200}\n",
            "{\"name\": \"kim\", \"headers\": {\"end-user\": \"kim\"}}\n",
            "{\"headers\": [[\"end-user\", \"jason\"]]}\n",
        ),
    );
    let run = |json: bool| {
        let mut args = vec![
            "replay",
            "--filter",
            wasm.to_str().unwrap(),
            "--config",
            new.to_str().unwrap(),
            "--against",
            old.to_str().unwrap(),
            "--requests",
            requests.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        harness(&args)
    };
    let out = run(false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("3 requests, 2 change outcome (66.67%)"), "{t}");
    assert!(t.contains("changed: version 2"), "{t}");
    assert!(
        t.contains("router.default.v1.requests -> router.jason-to-v2.v2.requests"),
        "{t}"
    );

    let out = run(true);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "two changes and the summary");
    assert_eq!(lines[0]["index"], 0);
    assert_eq!(lines[1]["index"], 2);
    assert_eq!(lines[0]["before"]["version"], "v1");
    assert_eq!(lines[0]["after"]["version"], "v2");
    assert_eq!(lines[2]["changed"], 2);
    assert_eq!(lines[2]["distribution"]["version"]["v2"]["after"], 2);

    let bad = write(dir.path(), "bad.jsonl", "{\"nope\": 1}\n");
    let out = harness(&[
        "replay",
        "--filter",
        wasm.to_str().unwrap(),
        "--requests",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("bad.jsonl:1: no `headers` object"),
        "{}",
        text(&out)
    );
}
