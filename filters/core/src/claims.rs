//! Verified claims: lookup by dotted path and the `claims` conditions.
//!
//! Claims come from a verified credential (a JWT's payload, or `{"sub": name}`
//! for API keys and basic auth). The auth filter uses them in its rules and
//! hands them to later filters, whose `match` blocks and sticky splits read them.

use crate::config::ConfigError;
use crate::string_match::{StringMatchConfig, StringMatcher};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The Envoy property (filter state) the auth filter writes verified claims to,
/// as compact JSON, and later filters of the same stream read.
pub const CLAIMS_PROPERTY: &str = "switchyard.claims";

/// How one claim is compared: the string operators, plus `contains`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ClaimMatchConfig {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
    Present(bool),
    /// An array claim has this element, or a string claim has this
    /// space-separated word (OAuth's `scope: "read write"`).
    Contains(String),
}

#[derive(Debug, Clone)]
enum ClaimOp {
    String(StringMatcher),
    Contains(String),
}

/// A compiled condition on one claim.
#[derive(Debug, Clone)]
pub struct ClaimMatcher {
    path: String,
    op: ClaimOp,
    /// The configuration field, for explanations.
    field: String,
}

/// Compiles a `claims` block (`{"groups": {"contains": "admin"}}`).
pub fn compile_claims(
    config: &BTreeMap<String, ClaimMatchConfig>,
    field: &str,
) -> Result<Vec<ClaimMatcher>, ConfigError> {
    config
        .iter()
        .map(|(path, m)| {
            let field = format!("{field}.{path}");
            if path.is_empty() {
                return Err(ConfigError::new(field, "claim name must not be empty"));
            }
            let string = |c: StringMatchConfig| StringMatcher::compile(&c, &field);
            let op = match m {
                ClaimMatchConfig::Exact(v) => {
                    ClaimOp::String(string(StringMatchConfig::Exact(v.clone()))?)
                }
                ClaimMatchConfig::Prefix(v) => {
                    ClaimOp::String(string(StringMatchConfig::Prefix(v.clone()))?)
                }
                ClaimMatchConfig::Suffix(v) => {
                    ClaimOp::String(string(StringMatchConfig::Suffix(v.clone()))?)
                }
                ClaimMatchConfig::Regex(v) => {
                    ClaimOp::String(string(StringMatchConfig::Regex(v.clone()))?)
                }
                ClaimMatchConfig::Present(p) => ClaimOp::String(StringMatcher::Present(*p)),
                ClaimMatchConfig::Contains(v) => ClaimOp::Contains(v.clone()),
            };
            Ok(ClaimMatcher {
                path: path.clone(),
                op,
                field,
            })
        })
        .collect()
}

impl ClaimMatcher {
    /// Whether `claims` (`None`: no verified credential) satisfies this condition.
    /// Array claims match a string operator when any element does.
    pub fn matches(&self, claims: Option<&Value>) -> bool {
        let value = claims.and_then(|c| claim(c, &self.path));
        match &self.op {
            ClaimOp::String(StringMatcher::Present(want)) => *want == value.is_some(),
            ClaimOp::String(m) => match value {
                None => false,
                Some(Value::Array(items)) => items.iter().any(|i| scalar_matches(m, i)),
                Some(v) => scalar_matches(m, v),
            },
            ClaimOp::Contains(want) => match value {
                Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(want)),
                Some(Value::String(s)) => s.split(' ').any(|w| w == want),
                _ => false,
            },
        }
    }
}

impl ClaimMatcher {
    /// This condition as an explanation's unmet condition (`claims.<path>`).
    pub fn unmet(&self, claims: Option<&Value>) -> crate::matcher::Unmet {
        crate::matcher::Unmet {
            field: self.field.clone(),
            expected: match &self.op {
                ClaimOp::String(m) => m.describe(),
                ClaimOp::Contains(w) => format!("contains \"{w}\""),
            },
            actual: match claims {
                None => Some("no verified credential".to_owned()),
                Some(c) => claim(c, &self.path).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
            },
        }
    }
}

fn scalar_matches(m: &StringMatcher, v: &Value) -> bool {
    match v {
        Value::String(s) => m.matches(Some(s.as_bytes())),
        Value::Number(_) | Value::Bool(_) => m.matches(Some(v.to_string().as_bytes())),
        _ => false,
    }
}

/// All conditions hold (an empty list always holds).
pub fn all_match(conditions: &[ClaimMatcher], claims: Option<&Value>) -> bool {
    conditions.iter().all(|c| c.matches(claims))
}

/// The claim at `path`: a top-level name first (names may contain dots, as in
/// `https://example.com/roles`), else a dotted path into nested objects,
/// trying the longest name at each level.
pub fn claim<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    let object = claims.as_object()?;
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    path.char_indices()
        .rev()
        .filter(|&(_, c)| c == '.')
        .find_map(|(i, _)| claim(object.get(&path[..i])?, &path[i + 1..]))
}

/// A claim as a header value: strings as they are, arrays joined with commas,
/// other values as JSON. `None` when the result could not be a header value.
pub fn claim_header_value(value: &Value) -> Option<Vec<u8>> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => return None,
        other => other.to_string(),
    };
    is_header_value(text.as_bytes()).then(|| text.into_bytes())
}

/// No control characters (CR, LF, NUL…), which would split or corrupt a header.
pub fn is_header_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(json: Value) -> Vec<ClaimMatcher> {
        let config: BTreeMap<String, ClaimMatchConfig> = serde_json::from_value(json).unwrap();
        compile_claims(&config, "claims").unwrap()
    }

    #[test]
    fn dotted_paths_and_names_with_dots() {
        let c = json!({
            "sub": "jason",
            "realm": {"roles": ["a", "b"]},
            "https://example.com/roles": ["admin"],
            "https://example.com": {"tier": "gold"}
        });
        assert_eq!(claim(&c, "sub"), Some(&json!("jason")));
        assert_eq!(claim(&c, "realm.roles"), Some(&json!(["a", "b"])));
        assert_eq!(
            claim(&c, "https://example.com/roles"),
            Some(&json!(["admin"]))
        );
        assert_eq!(claim(&c, "https://example.com.tier"), Some(&json!("gold")));
        assert_eq!(claim(&c, "realm.missing"), None);
        assert_eq!(claim(&c, "sub.x"), None);
    }

    #[test]
    fn operators_on_strings_arrays_and_scopes() {
        let c =
            json!({"groups": ["dev", "admin"], "scope": "read write", "sub": "jason", "level": 3});
        assert!(all_match(
            &cond(json!({"groups": {"contains": "admin"}})),
            Some(&c)
        ));
        assert!(!all_match(
            &cond(json!({"groups": {"contains": "adm"}})),
            Some(&c)
        ));
        assert!(all_match(
            &cond(json!({"scope": {"contains": "write"}})),
            Some(&c)
        ));
        assert!(!all_match(
            &cond(json!({"scope": {"contains": "rea"}})),
            Some(&c)
        ));
        assert!(all_match(
            &cond(json!({"sub": {"exact": "jason"}, "level": {"exact": "3"}})),
            Some(&c)
        ));
        assert!(all_match(
            &cond(json!({"groups": {"prefix": "ad"}})),
            Some(&c)
        ));
        assert!(all_match(
            &cond(json!({"email": {"present": false}})),
            Some(&c)
        ));
        assert!(!all_match(&cond(json!({"sub": {"regex": "ja"}})), Some(&c)));
        assert!(!all_match(&cond(json!({"sub": {"exact": "jason"}})), None));
        assert!(all_match(&[], None));
    }

    #[test]
    fn header_values_from_claims() {
        assert_eq!(
            claim_header_value(&json!(["a", "b", 3])),
            Some(b"a,b,3".to_vec())
        );
        assert_eq!(claim_header_value(&json!(true)), Some(b"true".to_vec()));
        assert_eq!(claim_header_value(&json!("x\r\nset-cookie: y")), None);
        assert_eq!(claim_header_value(&Value::Null), None);
    }
}
