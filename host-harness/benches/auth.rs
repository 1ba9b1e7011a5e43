//! Per-request cost of `auth.wasm` in the harness (module compiled once,
//! instance reused, as Envoy does): HS256, RS256 cached and uncached (checked
//! by the host's `verify_signature`, or in wasm), and API keys.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use std::hint::black_box;
use switchyard_harness::world::EPOCH_START_NS;
use switchyard_harness::{Harness, Request};
use switchyard_tests::tokens::{self, claims, mint};

const NOW_S: u64 = EPOCH_START_NS / 1_000_000_000;

fn config(cache_entries: usize) -> Value {
    json!({
        "providers": [
            {"name": "corp", "jwt": {"issuer": tokens::ISSUER, "audiences": [tokens::AUDIENCE], "jwks": tokens::jwks()}},
            {"name": "ci", "api_key": {"header": "x-api-key", "keys": [{"name": "ci-bot", "sha256": tokens::sha256_hex(b"ci-secret")}]}}
        ],
        "rules": [{"match": {}, "require_any": ["corp", "ci"]}],
        "identity": {"header": "end-user"},
        "cache_entries": cache_entries
    })
}

fn harness(cache_entries: usize, host_crypto: bool) -> Harness {
    let mut h = Harness::with_fuel(None);
    h.set_trace(false);
    if !host_crypto {
        h.without_foreign_function("verify_signature");
    }
    let wasm = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/wasm32-wasip1/release/auth.wasm"
    );
    h.filter(wasm, &config(cache_entries).to_string())
        .expect("auth loads (run `make build`)");
    h
}

/// Distinct tokens, so that an uncached run verifies every one.
fn tokens_for(alg: &str, n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| {
            let token = mint(alg, &claims(&format!("user-{i}"), NOW_S));
            Request::get("/x").header("authorization", format!("Bearer {token}"))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);

    let cases: [(&str, &str, usize, bool); 5] = [
        ("hs256_uncached", "HS256", 0, true),
        ("rs256_cached", "RS256", 1024, true),
        ("rs256_uncached_host_crypto", "RS256", 0, true),
        ("rs256_uncached_wasm_crypto", "RS256", 0, false),
        ("es256_uncached_host_crypto", "ES256", 0, true),
    ];
    for (name, alg, cache, host) in cases {
        let mut h = harness(cache, host);
        let requests = tokens_for(alg, 64);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                let ex = h.send(requests[i].clone());
                assert_eq!(ex.status(), Some(200));
                black_box(ex)
            })
        });
    }

    let mut h = harness(1024, true);
    let request = Request::get("/x").header("x-api-key", "ci-secret");
    g.bench_function("api_key", |b| b.iter(|| black_box(h.send(request.clone()))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
