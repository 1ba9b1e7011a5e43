//! `config::from_json` names a bad field from where serde_json stopped
//! (`json_path`) rather than by tracking the path through every
//! deserializer. This checks it names the same field, with the same message,
//! as `serde_path_to_error` (which it replaced) on every configuration the
//! project ships — Envoy bootstraps and the parity vectors — each broken in
//! every place: each value given the wrong type, each key removed, an
//! unknown key added to each object.

// A test: its helpers fail loudly (clippy.toml exempts only #[test] bodies).
#![allow(clippy::unwrap_used, clippy::panic)]

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::path::Path;
use switchyard_core::auth::AuthConfig;
use switchyard_core::config::{from_json, ConfigError};
use switchyard_core::router::RouterConfig;
use switchyard_core::shadow::ShadowConfig;
use switchyard_core::timeouts::TimeoutsConfig;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Every shipped configuration, as (policy section, JSON).
fn shipped() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut add = |policy: &str, config: Value| {
        if policy == "chain" {
            for (section, v) in config.as_object().into_iter().flatten() {
                if section != "path_normalization" && v.is_object() {
                    out.push((section.clone(), v.clone()));
                }
            }
        } else {
            out.push((policy.to_owned(), config));
        }
    };
    let vectors: Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/vectors/decisions.json")).unwrap(),
    )
    .unwrap();
    for (name, config) in vectors["configs"].as_object().unwrap() {
        let policy = match name.as_str() {
            "lab_router" => "router",
            other => other,
        };
        add(policy, config.clone());
    }
    // The JSON after each `value: |` in the Envoy bootstraps.
    for (file, policy) in [
        ("router.yaml", "router"),
        ("auth.yaml", "auth"),
        ("timeouts.yaml", "timeouts"),
        ("shadow.yaml", "shadow"),
        ("switchyard.yaml", "chain"),
    ] {
        let text = std::fs::read_to_string(root().join("envoy-config").join(file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_end().ends_with("value: |") {
                continue;
            }
            let indent = |l: &str| l.len() - l.trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .copied()
                .collect();
            if let Ok(config) = serde_json::from_str::<Value>(&block.join("\n")) {
                add(policy, config);
            }
        }
    }
    out
}

/// Every way to break `config`: (description, broken JSON).
fn broken(config: &Value) -> Vec<(String, Value)> {
    let wrong = [
        json!("x"),
        json!(7),
        json!(-1),
        json!(1.5),
        json!({}),
        json!([]),
        json!(true),
        json!(null),
    ];
    let mut out = Vec::new();
    let mut pointers = Vec::new();
    collect(config, String::new(), &mut pointers);
    for p in &pointers {
        for w in &wrong {
            let mut c = config.clone();
            *c.pointer_mut(p).unwrap() = w.clone();
            out.push((format!("{p} = {w}"), c));
        }
        if let Some(Value::Object(_)) = config.pointer(p) {
            let mut c = config.clone();
            c.pointer_mut(p)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("zz_unknown".into(), json!(1));
            out.push((format!("{p} + zz_unknown"), c));
            for key in config.pointer(p).unwrap().as_object().unwrap().keys() {
                let mut c = config.clone();
                c.pointer_mut(p)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(key);
                out.push((format!("{p} - {key}"), c));
            }
        }
    }
    out
}

fn collect(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                collect(
                    child,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// What `serde_path_to_error` answered.
fn tracked<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, T>(&mut de)
        .map(|_| ())
        .map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(
                if path == "." { String::new() } else { path },
                e.inner().to_string(),
            )
        })
}

fn compare<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> usize {
    let ours = from_json::<T>(bytes).map(|_| ());
    let theirs = tracked::<T>(bytes);
    match (ours, theirs) {
        (Ok(()), Ok(())) => 0,
        (Err(ours), Err(theirs)) => {
            assert_eq!(ours.message, theirs.message, "{what}");
            // An unknown variant is an error about a key: the path names the key
            // (as for an unknown field), where path_to_error stopped at its object.
            let named_key = ours.message.starts_with("unknown variant")
                && ours.field.starts_with(&theirs.field);
            assert!(
                ours.field == theirs.field || named_key,
                "{what}: {ours:?} vs {theirs:?}"
            );
            1
        }
        (ours, theirs) => panic!("{what}: {ours:?} vs {theirs:?}"),
    }
}

#[test]
fn every_broken_shipped_config_names_the_field_path_to_error_named() {
    let configs = shipped();
    assert!(
        configs.len() >= 10,
        "found {} configurations",
        configs.len()
    );
    let mut errors = 0;
    for (policy, config) in &configs {
        for (what, bad) in broken(config) {
            // Compact and pretty: positions on one line and across lines.
            for text in [
                serde_json::to_vec(&bad).unwrap(),
                serde_json::to_vec_pretty(&bad).unwrap(),
            ] {
                let what = format!("{policy}: {what}");
                errors += match policy.as_str() {
                    "router" => compare::<RouterConfig>(&what, &text),
                    "auth" => compare::<AuthConfig>(&what, &text),
                    "timeouts" => compare::<TimeoutsConfig>(&what, &text),
                    "shadow" => compare::<ShadowConfig>(&what, &text),
                    other => panic!("unknown policy {other}"),
                };
            }
        }
    }
    assert!(
        errors > 1000,
        "only {errors} broken configurations were refused"
    );
}
