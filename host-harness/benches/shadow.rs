//! Requests/s through `shadow.wasm` in the harness (mirror mode: the decision
//! and one header write; compare mode: the copy, recording the primary and
//! the comparison), beside the core's decision and comparison natively.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use switchyard_core::shadow::{Captured, Shadow};
use switchyard_core::HeaderList;
use switchyard_harness::{Cluster, Harness, Request};

const CONFIG: &str = r#"{
  "rules": [
    {"name": "mirror", "match": {"path": {"prefix": "/items"}}, "percent": 100, "target_cluster": "v2", "mode": "mirror"},
    {"name": "compare", "match": {"path": {"prefix": "/reviews"}}, "percent": 100, "target_cluster": "v2", "mode": "compare"}
  ],
  "safe": {"strip_headers": ["authorization", "cookie"]},
  "compare": {"ignore_headers": ["date"], "ignore_json_paths": ["/timestamp"]}
}"#;

const BODY: &str =
    r#"{"id": 7, "reviewer": {"name": "alice", "stars": 5}, "text": "fine", "timestamp": 1}"#;

fn bench(c: &mut Criterion) {
    let wasm = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/wasm32-wasip1/release/shadow.wasm"
    );
    let mut g = c.benchmark_group("shadow");
    g.throughput(Throughput::Elements(1));

    let mut h = Harness::with_fuel(None);
    h.set_trace(false);
    h.filter(wasm, CONFIG)
        .expect("shadow loads (run `make build`)");
    let answer = Cluster::default()
        .header("content-type", "application/json")
        .body(BODY);
    h.upstream(answer.clone()).cluster("v2", answer);
    let mirror = Request::get("/items/1").header("x-request-id", "r-1");
    g.bench_function("harness_mirror_request", |b| {
        b.iter(|| black_box(h.send(mirror.clone())))
    });
    let compare = Request::get("/reviews/1").header("authorization", "Bearer x");
    g.bench_function("harness_compare_request", |b| {
        b.iter(|| {
            let ex = h.send(compare.clone());
            // Let the copy go out and come back, as a tick and a call would.
            h.advance(2);
            black_box(ex)
        })
    });

    let s = Shadow::from_json(CONFIG.as_bytes()).unwrap();
    let headers = HeaderList::from_pairs([
        (":path", "/items/1"),
        (":method", "GET"),
        ("x-request-id", "r-1"),
    ]);
    g.bench_function("native_decision", |b| {
        b.iter(|| black_box(s.decide(black_box(&headers), 7)))
    });
    let captured = Captured {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: BODY.as_bytes().to_vec(),
        truncated: false,
    };
    g.bench_function("native_json_comparison", |b| {
        b.iter(|| black_box(s.compare(black_box(&captured), black_box(&captured))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
