//! The shared decision vectors (`tests/vectors/decisions.json`) against the
//! real `.wasm` filters: what `@switchyard/policy` must also answer
//! (`filters/js/test/parity.test.mjs`), so the package and the Envoy filter
//! cannot drift apart. With `SWITCHYARD_CHAIN=1`, single-policy vectors run
//! through `switchyard.wasm`.

mod common;

use serde_json::{json, Value};
use switchyard_harness::world::EPOCH_START_NS;
use switchyard_harness::{Exchange, Harness, Request};
use switchyard_tests::paths::project_root;
use switchyard_tests::tokens::{self, claims};

const NOW_S: u64 = EPOCH_START_NS / 1_000_000_000;

fn vectors() -> Value {
    let path = project_root().join("tests/vectors/decisions.json");
    serde_json::from_slice(&std::fs::read(&path).expect("vectors file")).expect("vectors are JSON")
}

/// A named config with `@name` references and `{{jwks}}` expanded.
fn config(file: &Value, name: &str) -> Value {
    fn expand(file: &Value, v: &Value) -> Value {
        match v {
            Value::String(s) if s == "{{jwks}}" => tokens::jwks(),
            Value::String(s) if s.starts_with('@') => expand(file, &file["configs"][&s[1..]]),
            Value::Array(items) => items.iter().map(|i| expand(file, i)).collect(),
            Value::Object(m) => m
                .iter()
                .map(|(k, x)| (k.clone(), expand(file, x)))
                .collect(),
            other => other.clone(),
        }
    }
    expand(file, &file["configs"][name])
}

/// `{{jwt:ALG:SUB}}` and `{{jwt:ALG:SUB:expired}}`, minted on the harness clock.
fn with_tokens(value: &str) -> String {
    let mut out = value.to_owned();
    while let Some(start) = out.find("{{jwt:") {
        let end = start + out[start..].find("}}").expect("closed placeholder") + 2;
        let spec: Vec<&str> = out[start + 6..end - 2].split(':').collect();
        let (alg, sub) = (spec[0], spec[1]);
        let c = if spec.get(2) == Some(&"expired") {
            let mut c = claims(sub, NOW_S - 7200);
            c["exp"] = json!(NOW_S - 3600);
            c
        } else {
            claims(sub, NOW_S)
        };
        out.replace_range(start..end, &tokens::mint(alg, &c));
    }
    out
}

fn request(v: &Value) -> Request {
    let r = &v["request"];
    let mut req = Request::new(
        r["method"].as_str().unwrap_or("GET"),
        r["path"].as_str().unwrap_or("/"),
    );
    if let Some(headers) = r["headers"].as_object() {
        for (name, value) in headers {
            match value {
                Value::Array(values) => {
                    for one in values {
                        req = req.header(name, with_tokens(one.as_str().expect("string")));
                    }
                }
                one => req = req.header(name, with_tokens(one.as_str().expect("string"))),
            }
        }
    }
    if let Some(cookies) = r["cookies"].as_object() {
        let folded: Vec<String> = cookies
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().expect("string")))
            .collect();
        req = req.header("cookie", folded.join("; "));
    }
    req
}

fn run(file: &Value, v: &Value) -> Exchange {
    let cfg = config(file, v["config"].as_str().expect("config name")).to_string();
    let (wasm, cfg) = match v["policy"].as_str() {
        Some(p) => common::policy(if p == "router" { "version_router" } else { p }, &cfg),
        None => (common::built("switchyard"), cfg),
    };
    let mut h = Harness::new();
    h.filter(wasm, &cfg).expect("filter loads");
    h.send(request(v))
}

#[test]
fn the_filters_answer_every_shared_vector() {
    let file = vectors();
    let mut failures = Vec::new();
    let all = file["vectors"].as_array().expect("vectors");
    for v in all {
        let name = v["name"].as_str().unwrap_or("?");
        let ex = run(&file, v);
        let expect = &v["expect"];
        let mut wrong = Vec::new();
        let status = ex.status();
        if status != expect["status"].as_u64().map(|s| s as u16) {
            wrong.push(format!("status {status:?}"));
        }
        for (header, want) in expect["upstream"].as_object().into_iter().flatten() {
            let got = ex.upstream_header(header);
            if got.as_deref() != want.as_str() {
                wrong.push(format!("upstream {header}: {got:?}, want {want}"));
            }
        }
        for (header, want) in expect["router"].as_object().into_iter().flatten() {
            let got = ex
                .upstream
                .as_ref()
                .and_then(|u| u.router_headers.get_str(header));
            if got.as_deref() != want.as_str() {
                wrong.push(format!("router {header}: {got:?}, want {want}"));
            }
        }
        for (header, want) in expect["response"].as_object().into_iter().flatten() {
            let got = ex.response_header(header);
            if got.as_deref() != want.as_str() {
                wrong.push(format!("response {header}: {got:?}, want {want}"));
            }
        }
        if let Some(needle) = expect["body"].as_str() {
            let body = ex
                .response
                .as_ref()
                .map(|r| r.body_str())
                .unwrap_or_default();
            if !body.contains(needle) {
                wrong.push(format!("body {body:?} lacks {needle:?}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{name}: {}", wrong.join("; ")));
        }
    }
    assert!(all.len() >= 30, "the vectors file lost its vectors");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
