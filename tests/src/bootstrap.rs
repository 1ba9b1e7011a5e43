//! Loads a checked-in Envoy bootstrap and edits it structurally for a test
//! run: ports picked by the OS, clusters pointed at test backends, filter
//! configuration replaced, Wasm paths made absolute.

use crate::paths::project_root;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Bootstrap(pub Value);

impl Bootstrap {
    /// Loads a YAML (or JSON) bootstrap and readies it for a test run:
    /// admin and listeners on loopback port 0, Wasm paths absolute.
    pub fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let value: Value = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        let mut b = Self(value);
        b.use_free_ports();
        b.resolve_wasm_paths();
        b
    }

    fn use_free_ports(&mut self) {
        self.0["admin"]["address"]["socket_address"] =
            serde_json::json!({"address": "127.0.0.1", "port_value": 0});
        for listener in self.listeners_mut() {
            listener["address"]["socket_address"] =
                serde_json::json!({"address": "127.0.0.1", "port_value": 0});
        }
    }

    fn listeners_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.0["static_resources"]["listeners"]
            .as_array_mut()
            .into_iter()
            .flatten()
    }

    fn resolve_wasm_paths(&mut self) {
        let root = project_root();
        visit_mut(&mut self.0, &mut |v| {
            if let Some(Value::String(f)) = v.pointer_mut("/code/local/filename") {
                if !Path::new(f.as_str()).is_absolute() {
                    *f = root.join(&*f).to_string_lossy().into_owned();
                }
            }
        });
    }

    /// Points every endpoint of cluster `name` at `127.0.0.1:port`.
    pub fn set_cluster_port(&mut self, name: &str, port: u16) -> &mut Self {
        let cluster = self.0["static_resources"]["clusters"]
            .as_array_mut()
            .and_then(|cs| cs.iter_mut().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no cluster {name:?} in bootstrap"));
        for ep in cluster["load_assignment"]["endpoints"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for lb in ep["lb_endpoints"].as_array_mut().into_iter().flatten() {
                lb["endpoint"]["address"]["socket_address"] =
                    serde_json::json!({"address": "127.0.0.1", "port_value": port});
            }
        }
        self
    }

    /// Replaces the JSON configuration of the Wasm HTTP filter named `filter`.
    pub fn set_filter_config(&mut self, filter: &str, config: &Value) -> &mut Self {
        let text = config.to_string();
        let mut found = false;
        visit_mut(&mut self.0, &mut |v| {
            if v["name"] == filter {
                if let Some(Value::String(s)) =
                    v.pointer_mut("/typed_config/config/configuration/value")
                {
                    *s = text.clone();
                    found = true;
                }
            }
        });
        assert!(
            found,
            "no Wasm filter {filter:?} with a configuration in bootstrap"
        );
        self
    }

    /// The JSON configuration of Wasm filter `filter`, parsed.
    pub fn filter_config(&self, filter: &str) -> Value {
        let mut out = None;
        visit(&self.0, &mut |v| {
            if v["name"] == filter {
                if let Some(Value::String(s)) =
                    v.pointer("/typed_config/config/configuration/value")
                {
                    out = serde_json::from_str(s).ok();
                }
            }
        });
        out.unwrap_or_else(|| panic!("no JSON configuration for filter {filter:?}"))
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, serde_json::to_vec_pretty(&self.0).expect("serialise"))
            .expect("write bootstrap");
    }
}

fn visit_mut(v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    f(v);
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| visit_mut(x, f)),
        Value::Object(o) => o.values_mut().for_each(|x| visit_mut(x, f)),
        _ => {}
    }
}

fn visit(v: &Value, f: &mut impl FnMut(&Value)) {
    f(v);
    match v {
        Value::Array(a) => a.iter().for_each(|x| visit(x, f)),
        Value::Object(o) => o.values().for_each(|x| visit(x, f)),
        _ => {}
    }
}
