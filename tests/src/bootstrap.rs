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

    /// Turns off Envoy's own path normalisation (`normalize_path`,
    /// `merge_slashes`, `path_with_escaped_slashes_action`) in every
    /// connection manager, as Envoy's defaults have it: the filters' own
    /// path check is then all that stands between a raw path and the rules.
    pub fn without_envoy_path_normalization(&mut self) -> &mut Self {
        visit_mut(&mut self.0, &mut |v| {
            if let Some(hcm) = v.as_object_mut() {
                if hcm.contains_key("http_filters") {
                    for key in [
                        "normalize_path",
                        "merge_slashes",
                        "path_with_escaped_slashes_action",
                    ] {
                        hcm.remove(key);
                    }
                }
            }
        });
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

    /// Every run of consecutive Switchyard Wasm filters (`auth`,
    /// `router`, `timeouts`, `shadow`) merged into one `switchyard.wasm`
    /// filter with a section each, so the same test runs through the one-VM
    /// chain. A policy already in the run starts a new one.
    pub fn merged_into_chain(&self) -> Self {
        let mut out = self.clone();
        visit_mut(&mut out.0, &mut |v| {
            if let Some(Value::Array(filters)) = v.get_mut("http_filters") {
                *filters = merge_runs(std::mem::take(filters));
            }
        });
        out
    }

    /// What a test hands Envoy: this bootstrap, or in a `_through_chain`
    /// test target its chain-merged form.
    pub fn for_this_run(&self) -> Self {
        if through_chain() {
            self.merged_into_chain()
        } else {
            self.clone()
        }
    }

    /// The bootstrap as Envoy reads it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.0).expect("a JSON value serialises")
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

/// True in a `<test>_through_chain` target (see Cargo.toml): the same tests
/// as `<test>`, each filter replaced by `switchyard.wasm` with its section.
pub fn through_chain() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.file_name()?
                .to_str()
                .map(|n| n.contains("_through_chain-"))
        })
        .unwrap_or(false)
}

/// The chain section of a Switchyard Wasm filter, from its module's name.
fn section_of(filter: &Value) -> Option<&'static str> {
    let file = filter
        .pointer("/typed_config/config/vm_config/code/local/filename")?
        .as_str()?;
    let name = Path::new(file).file_name()?.to_str()?;
    Some(match name {
        "auth.wasm" => "auth",
        "router.wasm" => "router",
        "timeouts.wasm" => "timeouts",
        "shadow.wasm" => "shadow",
        _ => return None,
    })
}

fn merge_runs(filters: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    // Index in `out` of the chain filter being filled, and its sections.
    let mut run: Option<(usize, serde_json::Map<String, Value>)> = None;
    let close = |out: &mut Vec<Value>,
                 run: &mut Option<(usize, serde_json::Map<String, Value>)>| {
        if let Some((at, sections)) = run.take() {
            out[at]["typed_config"]["config"]["configuration"]["value"] =
                Value::String(Value::Object(sections).to_string());
        }
    };
    for filter in filters {
        let Some(section) = section_of(&filter) else {
            close(&mut out, &mut run);
            out.push(filter);
            continue;
        };
        let config: Value = filter
            .pointer("/typed_config/config/configuration/value")
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        if run.as_ref().is_some_and(|(_, s)| s.contains_key(section)) {
            close(&mut out, &mut run);
        }
        match run.as_mut() {
            Some((_, sections)) => {
                sections.insert(section.to_owned(), config);
            }
            None => {
                let mut chain = filter;
                let c = &mut chain["typed_config"]["config"];
                let file = c["vm_config"]["code"]["local"]["filename"]
                    .as_str()
                    .map(|f| Path::new(f).with_file_name("switchyard.wasm"))
                    .expect("a Switchyard filter has a local filename");
                c["vm_config"]["code"]["local"]["filename"] =
                    Value::String(file.to_string_lossy().into_owned());
                c["root_id"] = Value::String("switchyard".into());
                c["name"] = Value::String("switchyard".into());
                c["vm_config"]["vm_id"] = Value::String(format!("switchyard-{}", out.len()));
                let mut sections = serde_json::Map::new();
                sections.insert(section.to_owned(), config);
                out.push(chain);
                run = Some((out.len() - 1, sections));
            }
        }
    }
    close(&mut out, &mut run);
    out
}
