//! Every checked-in Envoy bootstrap and Istio manifest is exercised: Envoy
//! validates the bootstraps, the CRD schemas validate the manifests, the
//! policy core accepts every embedded plugin configuration, and the legacy
//! EnvoyFilter patch runs in real Envoy.

use serde_json::{json, Value};
use switchyard_core::auth::Auth;
use switchyard_core::chain::Sections;
use switchyard_core::router::Router;
use switchyard_core::shadow::Shadow;
use switchyard_core::timeouts::Timeouts;
use switchyard_tests::istio::{manifests, CrdSchemas};
use switchyard_tests::{client, paths, send, Backend, Bootstrap, Envoy};

#[test]
fn envoy_validates_every_bootstrap() {
    let dir = paths::project_root().join("envoy-config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            if let Err(out) = Envoy::validate(&path) {
                panic!("{} failed validation:\n{out}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "no bootstraps found in {}", dir.display());
}

#[test]
fn every_bootstrap_chains_the_filters_in_policy_order() {
    // auth → version router → timeouts → shadow → Envoy's router, whichever
    // are present; `switchyard` (the one-VM chain) runs all four in that order.
    const ORDER: &[&str] = &[
        "switchyard",
        "switchyard.auth",
        "switchyard.router",
        "switchyard.timeouts",
        "switchyard.shadow",
        "envoy.filters.http.router",
    ];
    let dir = paths::project_root().join("envoy-config");
    let mut chains = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let b = Bootstrap::load(&path);
        let filters = b.0.pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        );
        let names: Vec<&str> = filters
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .collect();
        let ranks: Vec<usize> = names
            .iter()
            .map(|n| {
                ORDER
                    .iter()
                    .position(|o| o == n)
                    .unwrap_or_else(|| panic!("{}: unexpected filter {n}", path.display()))
            })
            .collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]) && ranks.last() == Some(&(ORDER.len() - 1)),
            "{}: {names:?}",
            path.display()
        );
        chains += 1;
    }
    assert!(chains >= 3);
}

#[test]
fn every_istio_manifest_matches_its_crd_schema() {
    let schemas = CrdSchemas::load();
    let docs = manifests();
    let mut kinds: Vec<&str> = Vec::new();
    for (file, doc) in &docs {
        if let Err(errors) = schemas.validate(doc) {
            panic!(
                "{file}: {} {} is invalid:\n  {}",
                doc["kind"],
                doc["metadata"]["name"],
                errors.join("\n  ")
            );
        }
        kinds.push(doc["kind"].as_str().unwrap());
    }
    for kind in [
        "WasmPlugin",
        "TrafficExtension",
        "EnvoyFilter",
        "Gateway",
        "VirtualService",
        "DestinationRule",
    ] {
        assert!(kinds.contains(&kind), "no {kind} among the manifests");
    }
}

#[test]
fn the_validator_rejects_what_an_api_server_rejects() {
    let schemas = CrdSchemas::load();
    let (_, plugin) = manifests()
        .into_iter()
        .find(|(_, d)| d["kind"] == "WasmPlugin")
        .unwrap();
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut d = plugin.clone();
        f(&mut d);
        schemas.validate(&d)
    };
    assert!(mutate(&|_| {}).is_ok());
    let typo = mutate(&|d| d["spec"]["phse"] = "AUTHZ".into()).unwrap_err();
    assert!(typo.iter().any(|e| e.contains("phse")), "{typo:?}");
    assert!(mutate(&|d| d["spec"]["phase"] = "BEFORE_ROUTING".into()).is_err());
    assert!(mutate(&|d| d["spec"]["sha256"] = "not-a-digest".into()).is_err());
    assert!(mutate(&|d| d["metadata"]["name"] = "Bad_Name".into()).is_err());
    assert!(mutate(&|d| d["apiVersion"] = "extensions.istio.io/v9".into()).is_err());
}

/// (file, plugin name, configuration) of every Wasm plugin a manifest carries.
fn plugin_configs() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (file, doc) in manifests() {
        let spec = &doc["spec"];
        let (name, config) = match doc["kind"].as_str() {
            Some("WasmPlugin") => (&spec["pluginName"], spec["pluginConfig"].clone()),
            Some("TrafficExtension") => (
                &spec["wasm"]["pluginName"],
                spec["wasm"]["pluginConfig"].clone(),
            ),
            Some("EnvoyFilter")
                if spec.pointer("/configPatches/0/applyTo") == Some(&json!("HTTP_FILTER")) =>
            {
                let filter = spec.pointer("/configPatches/0/patch/value/typed_config/config");
                let text = filter.and_then(|f| f.pointer("/configuration/value"));
                (
                    filter.map_or(&Value::Null, |f| &f["name"]),
                    serde_json::from_str(text.and_then(Value::as_str).unwrap_or("null")).unwrap(),
                )
            }
            _ => continue,
        };
        out.push((file, name.as_str().unwrap_or_default().to_owned(), config));
    }
    out
}

#[test]
fn every_plugin_config_is_accepted_by_the_policy_core() {
    let configs = plugin_configs();
    let count = |name: &str| configs.iter().filter(|(_, n, _)| n == name).count();
    assert_eq!(
        (
            count("router"),
            count("auth"),
            count("timeouts"),
            count("shadow")
        ),
        (3, 1, 1, 1),
        "{configs:?}"
    );
    assert_eq!(count("switchyard"), 1, "{configs:?}");
    // The chain's sections are checked as the single filters' configurations.
    let mut expanded = Vec::new();
    for (file, name, config) in configs {
        if name != "switchyard" {
            expanded.push((file, name, config));
            continue;
        }
        let sections = Sections::from_json(config.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let names: Vec<&str> = sections.sections.iter().map(|(p, _)| p.section()).collect();
        assert_eq!(names, ["auth", "router", "timeouts", "shadow"], "{file}");
        for (policy, bytes) in sections.sections {
            let name = policy.section();
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            expanded.push((format!("{file} ({name})"), name.into(), value));
        }
    }
    for (file, name, config) in expanded {
        let json = config.to_string();
        match name.as_str() {
            "router" => {
                let router =
                    Router::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
                // The VirtualService routes on the header the router writes.
                assert_eq!(router.version_header(), "x-version", "{file}");
            }
            "auth" => {
                let auth =
                    Auth::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
                // The router's `end-user` match must only ever see a verified value.
                assert!(
                    auth.stripped_headers().iter().any(|h| h == "end-user"),
                    "{file}"
                );
            }
            "timeouts" => {
                let t =
                    Timeouts::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
                // The lab's policy: reviews on v2 get 0.5 s, ratings a 2 s delay.
                assert_eq!(t.rules[0].timeout_ms, 500, "{file}");
                assert_eq!(t.faults[0].name, "ratings-delay", "{file}");
            }
            "shadow" => {
                let shadow =
                    Shadow::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
                // Mirror targets are Istio cluster names.
                assert!(
                    shadow
                        .rules
                        .iter()
                        .all(|r| r.target_cluster.starts_with("outbound|")),
                    "{file}"
                );
            }
            other => panic!("{file}: unknown plugin {other:?}"),
        }
    }
}

#[test]
fn gateway_phases_run_auth_then_router_then_timeouts() {
    let docs = manifests();
    let phase = |plugin: &str| {
        docs.iter()
            .find(|(_, d)| d["kind"] == "WasmPlugin" && d["spec"]["pluginName"] == plugin)
            .map(|(_, d)| d["spec"]["phase"].as_str().unwrap().to_owned())
            .unwrap()
    };
    // Istio's order: AUTHN, AUTHZ, STATS, then unspecified (just before the router).
    assert_eq!(
        (
            phase("auth").as_str(),
            phase("router").as_str(),
            phase("timeouts").as_str()
        ),
        ("AUTHN", "AUTHZ", "UNSPECIFIED_PHASE")
    );
    // Shadow runs after timeouts in the same phase: higher priority runs first.
    let priority = |plugin: &str| {
        docs.iter()
            .find(|(_, d)| d["spec"]["pluginName"] == plugin)
            .map(|(_, d)| d["spec"]["priority"].as_i64().unwrap_or(0))
            .unwrap()
    };
    assert_eq!(phase("shadow"), "UNSPECIFIED_PHASE");
    assert!(priority("timeouts") > priority("shadow"));
    // Every Istio cluster the auth filter calls is declared (`outbound|port||host`).
    let (_, auth) = docs
        .iter()
        .find(|(_, d)| d["spec"]["pluginName"] == "auth")
        .unwrap();
    let entries: Vec<&Value> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "ServiceEntry")
        .map(|(_, d)| d)
        .collect();
    let cluster = auth["spec"]["pluginConfig"]["providers"][0]["jwt"]["remote_jwks"]["cluster"]
        .as_str()
        .unwrap();
    let host = cluster.rsplit("||").next().unwrap();
    assert!(
        entries.iter().any(|e| e["spec"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == host)),
        "{cluster}"
    );
}

#[test]
fn the_mirror_policy_reads_the_header_the_shadow_filter_writes() {
    let docs = manifests();
    // (plugin, its shadow configuration, the EnvoyFilter adding the mirror policy)
    for (plugin, shadow, patch) in [
        ("shadow", "", "switchyard-shadow-mirror"),
        ("switchyard", "shadow", "switchyard-mirror"),
    ] {
        let config = docs
            .iter()
            .find(|(_, d)| d["spec"]["pluginName"] == plugin)
            .map(|(_, d)| &d["spec"]["pluginConfig"])
            .unwrap();
        let config = if shadow.is_empty() {
            config
        } else {
            &config[shadow]
        };
        let mirror = docs
            .iter()
            .find(|(_, d)| d["metadata"]["name"] == patch)
            .map(|(_, d)| {
                &d["spec"]["configPatches"][0]["patch"]["value"]["route"]["request_mirror_policies"]
                    [0]
            })
            .unwrap_or_else(|| panic!("no EnvoyFilter {patch}"));
        assert_eq!(
            mirror["cluster_header"], config["cluster_header"],
            "{plugin}"
        );
        assert!(config["cluster_header"].is_string(), "{plugin}");
    }
    // The same in the Envoy bootstrap the end-to-end tests run.
    let b = Bootstrap::load(&paths::envoy_config("shadow.yaml"));
    let route = b
        .0
        .pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes/0/route")
        .unwrap();
    assert_eq!(
        route["request_mirror_policies"][0]["cluster_header"],
        b.filter_config("switchyard.shadow")["cluster_header"]
    );
    let chain = Bootstrap::load(&paths::envoy_config("switchyard.yaml"));
    for route in 0..2 {
        let route = chain
            .0
            .pointer(&format!("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes/{route}/route"))
            .unwrap();
        assert_eq!(
            route["request_mirror_policies"][0]["cluster_header"],
            chain.filter_config("switchyard")["shadow"]["cluster_header"]
        );
    }
}

#[test]
fn virtual_service_subsets_exist_in_the_destination_rule() {
    let docs = manifests();
    let subsets: Vec<&str> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "DestinationRule")
        .flat_map(|(_, d)| {
            // A DestinationRule for TLS origination has no subsets.
            d["spec"]["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| s["name"].as_str().unwrap())
        })
        .collect();
    let (_, vs) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "VirtualService")
        .unwrap();
    for route in vs["spec"]["http"].as_array().unwrap() {
        for dest in route["route"].as_array().unwrap() {
            let subset = dest["destination"]["subset"].as_str().unwrap();
            assert!(
                subsets.contains(&subset),
                "subset {subset} missing from the DestinationRule"
            );
        }
    }
}

#[test]
fn the_envoy_filter_patch_runs_in_envoy() {
    let (_, ef) = manifests()
        .into_iter()
        .find(|(_, d)| d["metadata"]["name"] == "switchyard-router" && d["kind"] == "EnvoyFilter")
        .unwrap();
    let mut filter = ef["spec"]["configPatches"][0]["patch"]["value"].clone();
    // The gateway mounts the module at an absolute path; point it at our build.
    filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
        paths::wasm("router").to_string_lossy().into_owned().into();
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let mut b = Bootstrap::load(&paths::envoy_config("router.yaml"));
    b.set_cluster_port("v1", v1.port)
        .set_cluster_port("v2", v2.port);
    let hcm =
        b.0.pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
            .unwrap();
    let filters = hcm["http_filters"].as_array_mut().unwrap();
    let router_at = filters
        .iter()
        .position(|f| f["name"] == "envoy.filters.http.router")
        .unwrap();
    filters.retain(|f| f["name"] != "switchyard.router");
    filters.insert(router_at - 1, filter); // INSERT_BEFORE the router
    let envoy = Envoy::start(&b);
    let (status, resp) = send(client().get(&envoy.url("/")).set("end-user", "jason"));
    assert_eq!((status, resp.header("x-echo-version")), (200, Some("v2")));
    let (_, resp) = send(client().get(&envoy.url("/")).set("x-version", "v2"));
    assert_eq!(resp.header("x-echo-version"), Some("v1"));
}

#[test]
fn every_bootstrap_has_envoy_normalise_paths_and_every_istio_manifest_says_what_it_relies_on() {
    let dir = paths::project_root().join("envoy-config");
    let mut bootstraps = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let b = Bootstrap::load(&path);
        let hcm =
            b.0.pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
                .unwrap_or_else(|| panic!("{}: no connection manager", path.display()));
        assert_eq!(hcm["normalize_path"], true, "{}", path.display());
        assert_eq!(hcm["merge_slashes"], true, "{}", path.display());
        assert_eq!(
            hcm["path_with_escaped_slashes_action"],
            "REJECT_REQUEST",
            "{}",
            path.display()
        );
        bootstraps += 1;
    }
    assert!(bootstraps >= 5);
    let istio = dir.join("istio");
    for entry in std::fs::read_dir(&istio).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("wasm") || text.contains("Wasm") {
            assert!(
                text.contains("pathNormalization BASE"),
                "{} runs a filter and does not say which path normalisation it relies on",
                path.display()
            );
        }
    }
}
