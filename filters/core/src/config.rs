//! Parsing JSON configuration into typed values, with errors that name the field.

use crate::json_path;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

/// A configuration problem, located by a JSON-path-like field name
/// (`routes[2].match.headers.end-user.regex`) so one log line is enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserialises `bytes` as JSON, reporting the path of the offending field
/// (found from where the parser stopped: [`crate::json_path`]).
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).map_err(|err| {
        let at = json_path::error_offset(bytes, &err);
        let field = json_path::path_at(bytes, at, err.is_syntax());
        ConfigError::new(field, err.to_string())
    })?;
    de.end().map_err(|err| {
        ConfigError::new("", format!("trailing data after the JSON value: {err}"))
    })?;
    Ok(value)
}

/// A JSON object as a map, refusing a key given twice: `serde`'s maps keep
/// the last, so `{"end-user": {"exact": "a"}, "end-user": {"prefix": ""}}`
/// would silently mean something other than what was read first. (Struct
/// fields are already refused twice by `serde` itself.)
pub(crate) fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("duplicate key `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// True for a lower-case HTTP header name Envoy will accept (RFC 9110 token).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// `name` when it is a valid lower-case header name; otherwise an error naming `field`.
pub(crate) fn header_name(name: &str, field: &str) -> Result<String, ConfigError> {
    if is_header_name(name) {
        Ok(name.to_owned())
    } else {
        Err(ConfigError::new(
            field,
            "not a valid lower-case header name",
        ))
    }
}

/// A rule's or fault's name: it becomes part of stat names, so 1 to 64 characters.
pub(crate) fn check_rule_name(name: &str, field: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 {
        return Err(ConfigError::new(field, "must be 1 to 64 characters"));
    }
    Ok(())
}

/// True for a non-empty value that is safe in a header and a stat name.
pub(crate) fn is_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        weight: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let err = from_json::<Outer>(br#"{"inner": [{"weight": 1}, {"weight": -1}]}"#).unwrap_err();
        assert_eq!(err.field, "inner[1].weight");
        let err = from_json::<Outer>(br#"{"inner": [], "extra": 1}"#).unwrap_err();
        assert!(err.message.contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn rejects_invalid_json() {
        assert!(from_json::<Outer>(b"{not json").is_err());
        assert!(from_json::<Outer>(br#"{"inner": []} {}"#).is_err());
    }

    #[test]
    fn header_names_are_lower_case_tokens() {
        assert!(is_header_name("x-version"));
        assert!(!is_header_name("X-Version"));
        assert!(!is_header_name("bad header"));
        assert!(!is_header_name(""));
    }
}
