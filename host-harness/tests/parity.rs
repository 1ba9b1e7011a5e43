//! The shared decision vectors (`tests/vectors/decisions.json`) against the
//! real `.wasm` filters: what `@switchyard/policy` must also answer
//! (`filters/js/test/parity.test.mjs`), so the package and the Envoy filter
//! cannot drift apart. In its `parity_through_chain` target, single-policy
//! vectors run through `switchyard.wasm`.

mod common;

use serde_json::Value;
use switchyard_harness::world::EPOCH_START_NS;
use switchyard_harness::{Exchange, Harness, Request};
use switchyard_tests::vectors;

const NOW_S: u64 = EPOCH_START_NS / 1_000_000_000;

fn request(v: &Value) -> Request {
    let mut req = Request::new(vectors::method(v), vectors::path(v));
    for (name, value) in vectors::headers(v, NOW_S) {
        req = req.header(&name, value);
    }
    req
}

fn run(file: &Value, v: &Value) -> Exchange {
    let cfg = vectors::config(file, v["config"].as_str().expect("config name")).to_string();
    let (wasm, cfg) = match v["policy"].as_str() {
        Some(p) => common::policy(if p == "router" { "router" } else { p }, &cfg),
        None => (common::built("switchyard"), cfg),
    };
    let mut h = Harness::new();
    h.filter(wasm, &cfg).expect("filter loads");
    h.send(request(v))
}

#[test]
fn the_filters_answer_every_shared_vector() {
    let file = vectors::load();
    let mut failures = Vec::new();
    let all = file["vectors"].as_array().expect("vectors");
    for v in all {
        let name = v["name"].as_str().unwrap_or("?");
        let ex = run(&file, v);
        let router = |h: &str| ex.upstream.as_ref()?.router_headers.get_str(h);
        let wrong = vectors::mismatches(
            &v["expect"],
            &vectors::Observed {
                status: ex.status(),
                upstream: &|h| ex.upstream_header(h),
                router: Some(&router),
                response: &|h| ex.response_header(h),
                body: ex
                    .response
                    .as_ref()
                    .map(|r| r.body_str())
                    .unwrap_or_default(),
            },
        );
        if !wrong.is_empty() {
            failures.push(format!("{name}: {}", wrong.join("; ")));
        }
    }
    assert!(all.len() >= 30, "the vectors file lost its vectors");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
