//! Strict JSON for untrusted documents (JWT headers and claims, JWKS).
//!
//! `serde_json::Value` keeps the last of duplicate keys, while other parsers
//! keep the first: a token with `{"sub":"alice","sub":"admin"}` would mean
//! different things to different verifiers. Duplicates are rejected here.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses `bytes` as one JSON value, rejecting duplicate object keys at any depth.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(StrictValue)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_values() {
        let v = parse_strict(br#"{"a":[1,-2,3.5,"x",null,true],"b":{"c":"d"}}"#).unwrap();
        assert_eq!(v["a"][1], -2);
        assert_eq!(v["b"]["c"], "d");
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        let err = parse_strict(br#"{"sub":"alice","sub":"admin"}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key `sub`"), "{err}");
        assert!(parse_strict(br#"{"a":{"b":1,"b":2}}"#).is_err());
        assert!(parse_strict(br#"[{"x":1},{"x":1,"x":1}]"#).is_err());
        // An escaped spelling of the same key is still the same key.
        assert!(parse_strict(br#"{"sub":"a","s\u0075b":"b"}"#).is_err());
    }

    #[test]
    fn rejects_trailing_data_and_bad_json() {
        assert!(parse_strict(br#"{"a":1} x"#).is_err());
        assert!(parse_strict(b"{").is_err());
    }
}
