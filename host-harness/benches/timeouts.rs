//! Requests/s through `timeouts.wasm` in the harness (module compiled once,
//! instance reused, as Envoy does), beside the same decisions made natively
//! by the policy core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use switchyard_core::timeouts::Timeouts;
use switchyard_core::HeaderList;
use switchyard_harness::{Harness, Request};

const CONFIG: &str = r#"{
  "rules": [
    {"name": "reviews-v2", "match": {"headers": {"x-version": {"exact": "v2"}}, "path": {"prefix": "/reviews"}},
     "timeout_ms": 500, "per_try_timeout_ms": 200, "retries": {"attempts": 2, "on": ["5xx", "reset", "connect-failure"]}},
    {"name": "default", "match": {}, "timeout_ms": 3000}
  ],
  "deadline": {"inbound": ["grpc-timeout", "x-request-timeout-ms"], "propagate": "x-request-timeout-ms", "min_remaining_ms": 5},
  "faults": [
    {"name": "chaos", "match": {"headers": {"x-chaos": {"exact": "abort"}}}, "abort": {"status": 503, "percent": 100}}
  ]
}"#;

fn bench(c: &mut Criterion) {
    let wasm = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/wasm32-wasip1/release/timeouts.wasm"
    );
    let mut g = c.benchmark_group("timeouts");
    g.throughput(Throughput::Elements(1));

    let mut h = Harness::with_fuel(None);
    h.set_trace(false);
    h.filter(wasm, CONFIG)
        .expect("timeouts loads (run `make build`)");
    let request = Request::get("/reviews/1")
        .header("x-version", "v2")
        .header("x-request-timeout-ms", "400");
    g.bench_function("harness_request", |b| {
        b.iter(|| black_box(h.send(request.clone())))
    });

    let t = Timeouts::from_json(CONFIG.as_bytes()).unwrap();
    let headers = HeaderList::from_pairs([
        (":path", "/reviews/1"),
        (":method", "GET"),
        ("x-version", "v2"),
        ("x-request-timeout-ms", "400"),
    ]);
    g.bench_function("native_decision", |b| {
        b.iter(|| {
            let adm = t.admit(black_box(&headers), 1000, 1002, 7);
            black_box(t.step(&adm, 1002))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
