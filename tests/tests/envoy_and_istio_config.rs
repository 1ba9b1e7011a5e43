//! Every checked-in Envoy bootstrap and Istio manifest is exercised: Envoy
//! validates the bootstraps, the CRD schemas validate the manifests, the
//! policy core accepts every embedded plugin configuration, and the legacy
//! EnvoyFilter patch runs in real Envoy.

use serde_json::Value;
use switchyard_core::router::Router;
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

/// The router configuration each manifest carries.
fn router_configs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (file, doc) in manifests() {
        let spec = &doc["spec"];
        let config = match doc["kind"].as_str() {
            Some("WasmPlugin") => spec["pluginConfig"].clone(),
            Some("TrafficExtension") => spec["wasm"]["pluginConfig"].clone(),
            Some("EnvoyFilter") => {
                let text = spec.pointer(
                    "/configPatches/0/patch/value/typed_config/config/configuration/value",
                );
                serde_json::from_str(text.and_then(Value::as_str).unwrap_or("null")).unwrap()
            }
            _ => continue,
        };
        out.push((file, config));
    }
    out
}

#[test]
fn every_plugin_config_is_accepted_by_the_policy_core() {
    let configs = router_configs();
    assert_eq!(configs.len(), 3);
    for (file, config) in configs {
        let router = Router::from_json(config.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // The VirtualService routes on the header the router writes.
        assert_eq!(router.version_header(), "x-version", "{file}");
    }
}

#[test]
fn virtual_service_subsets_exist_in_the_destination_rule() {
    let docs = manifests();
    let subsets: Vec<&str> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "DestinationRule")
        .flat_map(|(_, d)| {
            d["spec"]["subsets"]
                .as_array()
                .unwrap()
                .iter()
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
        .find(|(_, d)| d["kind"] == "EnvoyFilter")
        .unwrap();
    let mut filter = ef["spec"]["configPatches"][0]["patch"]["value"].clone();
    // The gateway mounts the module at an absolute path; point it at our build.
    filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
        paths::wasm("version_router")
            .to_string_lossy()
            .into_owned()
            .into();
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let mut b = Bootstrap::load(&paths::envoy_config("version-router.yaml"));
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
    filters.retain(|f| f["name"] != "switchyard.version_router");
    filters.insert(router_at - 1, filter); // INSERT_BEFORE the router
    let envoy = Envoy::start(&b);
    let (status, resp) = send(client().get(&envoy.url("/")).set("end-user", "jason"));
    assert_eq!((status, resp.header("x-echo-version")), (200, Some("v2")));
    let (_, resp) = send(client().get(&envoy.url("/")).set("x-version", "v2"));
    assert_eq!(resp.header("x-echo-version"), Some("v1"));
}
