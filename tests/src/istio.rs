//! Validates Istio manifests the way a Kubernetes API server would, without
//! a cluster: each document's `spec` against the `openAPIV3Schema` of its
//! kind and version in Istio's published CRDs (`../shared/istio/`).
//!
//! API servers reject unknown fields (strict field validation, and pruning
//! of structural schemas), so every object schema that lists `properties` and
//! does not preserve unknown fields is closed with `additionalProperties:
//! false`. CEL rules (`x-kubernetes-validations`) are not evaluated.

use crate::paths::project_root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The CRD schemas by `(apiVersion, kind)`, e.g. `("networking.istio.io/v1", "VirtualService")`.
pub struct CrdSchemas {
    schemas: BTreeMap<(String, String), Value>,
}

pub fn crd_file() -> PathBuf {
    let path = project_root()
        .parent()
        .expect("project root has a parent")
        .join("shared/istio/customresourcedefinitions.gen.yaml");
    assert!(path.exists(), "Istio CRDs not found at {}", path.display());
    path
}

/// Every YAML document in a file, as JSON values (empty documents skipped).
pub fn documents(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

impl CrdSchemas {
    pub fn load() -> Self {
        let mut schemas = BTreeMap::new();
        for crd in documents(&crd_file()) {
            let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let mut schema = version["schema"]["openAPIV3Schema"].clone();
                close_objects(&mut schema);
                let api_version =
                    format!("{group}/{}", version["name"].as_str().unwrap_or_default());
                schemas.insert((api_version, kind.clone()), schema);
            }
        }
        Self { schemas }
    }

    /// Checks one manifest; `Err` lists every violation with its location.
    pub fn validate(&self, doc: &Value) -> Result<(), Vec<String>> {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let schema = self
            .schemas
            .get(&(api_version.to_owned(), kind.to_owned()))
            .ok_or_else(|| vec![format!("no CRD serves {kind} in {api_version}")])?;
        let mut errors = Vec::new();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        if !is_dns1123_subdomain(name) {
            errors.push(format!(
                "metadata.name {name:?} is not a DNS-1123 subdomain"
            ));
        }
        let spec_schema = &schema["properties"]["spec"];
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(spec_schema)
            .map_err(|e| vec![format!("CRD schema for {kind} does not compile: {e}")])?;
        errors.extend(
            validator
                .iter_errors(&doc["spec"])
                .map(|e| format!("spec{}: {e}", e.instance_path())),
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn close_objects(schema: &mut Value) {
    if let Value::Object(map) = schema {
        let preserves = map
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves
        {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        map.values_mut().for_each(close_objects);
    } else if let Value::Array(items) = schema {
        items.iter_mut().for_each(close_objects);
    }
}

fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Every manifest under `envoy-config/istio/`, with its file name.
pub fn manifests() -> Vec<(String, Value)> {
    let dir = project_root().join("envoy-config/istio");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            documents(f).into_iter().map(move |d| (name.clone(), d))
        })
        .collect()
}
