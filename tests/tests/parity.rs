//! The shared decision vectors in real Envoy: every vector, through
//! `switchyard.wasm` (a single policy's configuration as its only section)
//! in `envoy-config/switchyard.yaml`, before real v1 and v2 backends. The
//! harness (`host-harness/tests/parity.rs`) and the JavaScript package
//! (`filters/js/test/parity.test.mjs`) meet the same expectations.
//! `expect.router` is not checked here: Envoy's router consumes those
//! headers, which is the point of them (the harness records them).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use switchyard_tests::{paths, raw, vectors, Backend, Bootstrap, Envoy};

struct Gateway {
    envoy: Envoy,
    v1: Backend,
    v2: Backend,
}

fn gateway(chain: &Value) -> Gateway {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let mut b = Bootstrap::load(&paths::envoy_config("switchyard.yaml"));
    // The vectors state what the filter decides, so Envoy's own path
    // normalisation (which answers some ambiguous paths before the filter
    // sees them) is off, as in the harness.
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port)
        .set_filter_config("switchyard", chain)
        .without_envoy_path_normalization();
    Gateway {
        envoy: Envoy::start(&b),
        v1,
        v2,
    }
}

#[test]
fn envoy_answers_every_shared_vector() {
    let file = vectors::load();
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    // One Envoy per distinct configuration.
    let mut groups: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for v in file["vectors"].as_array().expect("vectors") {
        let policy = v["policy"].as_str().unwrap_or("").to_owned();
        let config = v["config"].as_str().expect("config name").to_owned();
        groups.entry((policy, config)).or_default().push(v);
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for ((policy, config), vs) in &groups {
        let cfg = vectors::config(&file, config);
        let chain = if policy.is_empty() {
            cfg
        } else {
            json!({ policy.as_str(): cfg })
        };
        let g = gateway(&chain);
        for v in vs {
            let name = v["name"].as_str().unwrap_or("?");
            let headers = vectors::headers(v, now_s);
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, x)| (k.as_str(), x.as_str()))
                .collect();
            let before = (g.v1.count(), g.v2.count());
            let resp = raw::send(
                g.envoy.port,
                vectors::method(v),
                vectors::path(v).as_bytes(),
                &pairs,
            );
            let upstream = if g.v1.count() > before.0 {
                g.v1.received().pop()
            } else if g.v2.count() > before.1 {
                g.v2.received().pop()
            } else {
                None
            };
            let upstream_header = |h: &str| {
                let u = upstream.as_ref()?;
                if h == ":path" {
                    Some(u.path.clone())
                } else {
                    u.header(h).map(str::to_owned)
                }
            };
            let wrong = vectors::mismatches(
                &v["expect"],
                &vectors::Observed {
                    status: Some(resp.status),
                    upstream: &upstream_header,
                    router: None,
                    response: &|h| resp.header(h).map(str::to_owned),
                    body: resp.body.clone(),
                },
            );
            if !wrong.is_empty() {
                failures.push(format!("{name}: {}", wrong.join("; ")));
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "the vectors file lost its vectors");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
