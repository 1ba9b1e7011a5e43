//! The shared decision vectors (`tests/vectors/decisions.json`), resolved
//! for Rust runners: named configurations expanded, `{{jwks}}` filled in
//! with the test keys' JWKS, `{{jwt:ALG:SUB[:expired]}}` minted by
//! `jsonwebtoken` on the runner's clock. The Node runner does the same with
//! jose (`filters/js/test/vectors.mjs`).

use crate::tokens::{self, claims};
use serde_json::{json, Value};

/// The whole file.
pub fn load() -> Value {
    let path = crate::paths::project_root().join("tests/vectors/decisions.json");
    serde_json::from_slice(&std::fs::read(&path).expect("vectors file")).expect("vectors are JSON")
}

/// The named configuration with `@name` references and `{{jwks}}` expanded.
pub fn config(file: &Value, name: &str) -> Value {
    fn expand(file: &Value, v: &Value) -> Value {
        match v {
            Value::String(s) if s == "{{jwks}}" => tokens::jwks(),
            Value::String(s) if s.starts_with('@') => expand(file, &file["configs"][&s[1..]]),
            Value::Array(items) => items.iter().map(|i| expand(file, i)).collect(),
            Value::Object(m) => m
                .iter()
                .map(|(k, x)| (k.clone(), expand(file, x)))
                .collect(),
            other => other.clone(),
        }
    }
    expand(file, &file["configs"][name])
}

/// `value` with every token placeholder minted for a clock at `now_s`.
pub fn with_tokens(value: &str, now_s: u64) -> String {
    let mut out = value.to_owned();
    while let Some(start) = out.find("{{jwt:") {
        let end = start + out[start..].find("}}").expect("closed placeholder") + 2;
        let spec: Vec<&str> = out[start + 6..end - 2].split(':').collect();
        let (alg, sub) = (spec[0], spec[1]);
        let c = if spec.get(2) == Some(&"expired") {
            let mut c = claims(sub, now_s - 7200);
            c["exp"] = json!(now_s - 3600);
            c
        } else {
            claims(sub, now_s)
        };
        out.replace_range(start..end, &tokens::mint(alg, &c));
    }
    out
}

/// The request's headers as sent, in order: repeated values apart, cookies
/// folded into one `cookie` header, tokens minted.
pub fn headers(v: &Value, now_s: u64) -> Vec<(String, String)> {
    let r = &v["request"];
    let mut out = Vec::new();
    for (name, value) in r["headers"].as_object().into_iter().flatten() {
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for one in values {
            out.push((
                name.clone(),
                with_tokens(one.as_str().expect("string"), now_s),
            ));
        }
    }
    if let Some(cookies) = r["cookies"].as_object() {
        let folded: Vec<String> = cookies
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().expect("string")))
            .collect();
        out.push(("cookie".into(), folded.join("; ")));
    }
    out
}

pub fn method(v: &Value) -> &str {
    v["request"]["method"].as_str().unwrap_or("GET")
}

pub fn path(v: &Value) -> &str {
    v["request"]["path"].as_str().unwrap_or("/")
}

/// A header lookup on what a runner saw.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a runner saw for one vector; each lookup takes a lower-case header
/// name (`:path` for the path the upstream got).
pub struct Observed<'a> {
    pub status: Option<u16>,
    pub upstream: Lookup<'a>,
    /// The router controls Envoy's router consumed; `None` when the runner
    /// cannot see them (real Envoy forwards none), so `expect.router` is skipped.
    pub router: Option<Lookup<'a>>,
    pub response: Lookup<'a>,
    pub body: String,
}

/// Every way `seen` differs from the vector's `expect`, one line each.
pub fn mismatches(expect: &Value, seen: &Observed<'_>) -> Vec<String> {
    let mut wrong = Vec::new();
    if seen.status.map(u64::from) != expect["status"].as_u64() {
        wrong.push(format!("status {:?} ({})", seen.status, seen.body.trim()));
    }
    let mut compare = |what: &str, lookup: Lookup<'_>| {
        for (header, want) in expect[what].as_object().into_iter().flatten() {
            let got = lookup(header);
            if got.as_deref() != want.as_str() {
                wrong.push(format!("{what} {header}: {got:?}, want {want}"));
            }
        }
    };
    compare("upstream", seen.upstream);
    if let Some(router) = seen.router {
        compare("router", router);
    }
    compare("response", seen.response);
    if let Some(needle) = expect["body"].as_str() {
        if !seen.body.contains(needle) {
            wrong.push(format!("body {:?} lacks {needle:?}", seen.body));
        }
    }
    wrong
}
