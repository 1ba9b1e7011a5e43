//! Requests/s through `router.wasm` in the harness (module compiled
//! once, instance reused, as Envoy does), beside the same decision made
//! natively by the policy core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use switchyard_core::router::Router;
use switchyard_core::HeaderList;
use switchyard_harness::{Harness, Request};

const CONFIG: &str = r#"{
  "default_version": "v1",
  "routes": [
    {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"},
    {"name": "beta-cookie", "match": {"path": {"prefix": "/api/"}, "cookies": {"beta": {"exact": "1"}}}, "version": "v2"},
    {"name": "canary", "match": {"path": {"prefix": "/"}},
     "split": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}],
     "sticky": {"header": "x-user-id"}}
  ]
}"#;

fn bench(c: &mut Criterion) {
    let wasm = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/wasm32-wasip1/release/router.wasm"
    );
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(1));

    let mut h = Harness::with_fuel(None);
    h.set_trace(false);
    h.filter(wasm, CONFIG)
        .expect("router loads (run `make build`)");
    let request = Request::get("/reviews/1")
        .header("x-user-id", "user-42")
        .header("cookie", "session=abc");
    g.bench_function("harness_request", |b| {
        b.iter(|| black_box(h.send(request.clone())))
    });

    let router = Router::from_json(CONFIG.as_bytes()).unwrap();
    let headers = HeaderList::from_pairs([
        (":path", "/reviews/1"),
        (":method", "GET"),
        ("x-user-id", "user-42"),
        ("cookie", "session=abc"),
    ]);
    g.bench_function("native_decision", |b| {
        b.iter(|| black_box(router.decide(black_box(&headers), 7).version))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
