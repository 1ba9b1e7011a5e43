//! The one-VM chain's configuration: `{"auth": …, "router": …, "timeouts":
//! …, "shadow": …}`, each section exactly a single filter's configuration.
//!
//! Each section is handed to its policy's own parser, so a policy in the
//! chain accepts and rejects what the single filter would (duplicate keys
//! are refused for the whole document). Beside the sections, the top level
//! may set `path_normalization`, which the chain applies once for all, and
//! `stats_flush_ms`, how long its counters may wait to reach the host.

use crate::config::ConfigError;
use crate::json::parse_strict;
use crate::path::PathNormalization;
use serde_json::Value;

/// The chain's own keys beside the sections.
const PATH_NORMALIZATION: &str = "path_normalization";
const STATS_FLUSH_MS: &str = "stats_flush_ms";

/// The longest `stats_flush_ms` accepted: a counter a minute late is
/// already later than any scrape interval would hide.
pub const MAX_STATS_FLUSH_MS: u32 = 60_000;

/// The policies the chain can run, in the order it runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Auth,
    Router,
    Timeouts,
    Shadow,
}

impl Policy {
    pub const ORDER: [Policy; 4] = [
        Policy::Auth,
        Policy::Router,
        Policy::Timeouts,
        Policy::Shadow,
    ];

    /// The configuration key of this policy's section.
    pub fn section(self) -> &'static str {
        match self {
            Policy::Auth => "auth",
            Policy::Router => "router",
            Policy::Timeouts => "timeouts",
            Policy::Shadow => "shadow",
        }
    }
}

/// The sections present, in chain order, each as the JSON its filter reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    pub sections: Vec<(Policy, Vec<u8>)>,
    /// The top level's `path_normalization`, if set (sections may set it
    /// too; see [`PathNormalization::settle`]).
    pub path_normalization: Option<PathNormalization>,
    /// `stats_flush_ms`: 0 (the default) sends each counter increment to
    /// the host as it happens; above 0, increments are summed in the module
    /// and sent every that many milliseconds (a host call per counter per
    /// flush, not per request).
    pub stats_flush_ms: u32,
}

impl Sections {
    /// Splits the chain configuration. A missing (or `null`) section is off;
    /// an unknown key, a section that is not an object or a duplicate key
    /// anywhere is rejected.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let doc = parse_strict(bytes).map_err(|e| ConfigError::new("", e.to_string()))?;
        let Value::Object(mut doc) = doc else {
            return Err(ConfigError::new(
                "",
                "expected an object with auth, router, timeouts and shadow sections",
            ));
        };
        if let Some(key) = doc.keys().find(|k| {
            k.as_str() != PATH_NORMALIZATION
                && k.as_str() != STATS_FLUSH_MS
                && !Policy::ORDER.iter().any(|p| p.section() == k.as_str())
        }) {
            return Err(ConfigError::new(
                key.as_str(),
                "unknown section; expected auth, router, timeouts, shadow, path_normalization or stats_flush_ms",
            ));
        }
        let path = match doc.remove(PATH_NORMALIZATION) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<PathNormalization>(v)
                    .map_err(|e| ConfigError::new(PATH_NORMALIZATION, e.to_string()))?,
            ),
        };
        let stats_flush_ms = match doc.remove(STATS_FLUSH_MS) {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .and_then(|ms| u32::try_from(ms).ok())
                .filter(|ms| *ms <= MAX_STATS_FLUSH_MS)
                .ok_or_else(|| {
                    ConfigError::new(
                        STATS_FLUSH_MS,
                        format!(
                            "expected whole milliseconds from 0 (each increment at once) to {MAX_STATS_FLUSH_MS}, got {v}"
                        ),
                    )
                })?,
        };
        let mut sections = Vec::new();
        for policy in Policy::ORDER {
            match doc.remove(policy.section()) {
                None | Some(Value::Null) => {}
                Some(section @ Value::Object(_)) => sections.push((
                    policy,
                    serde_json::to_vec(&section)
                        .map_err(|e| ConfigError::new(policy.section(), e.to_string()))?,
                )),
                Some(_) => {
                    return Err(ConfigError::new(
                        policy.section(),
                        "must be an object: the configuration of that filter",
                    ))
                }
            }
        }
        Ok(Self {
            sections,
            path_normalization: path,
            stats_flush_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(s: &Sections) -> Vec<Policy> {
        s.sections.iter().map(|(p, _)| *p).collect()
    }

    #[test]
    fn sections_come_out_in_chain_order_with_their_content() {
        let cfg = br#"{"shadow": {"rules": []}, "auth": {"providers":  [ ]}, "router": {"default_version":"v1"}}"#;
        let s = Sections::from_json(cfg).unwrap();
        assert_eq!(
            policies(&s),
            [Policy::Auth, Policy::Router, Policy::Shadow],
            "auth → router → timeouts → shadow, whatever the key order"
        );
        assert_eq!(s.sections[0].1, br#"{"providers":[]}"#);
        assert_eq!(s.sections[1].1, br#"{"default_version":"v1"}"#);
    }

    #[test]
    fn missing_and_null_sections_are_off() {
        assert!(Sections::from_json(b"{}").unwrap().sections.is_empty());
        let s = Sections::from_json(br#"{"auth": null, "timeouts": {}}"#).unwrap();
        assert_eq!(policies(&s), [Policy::Timeouts]);
    }

    #[test]
    fn bad_chain_configuration_names_the_key() {
        let unknown = Sections::from_json(br#"{"default_version": "v1"}"#).unwrap_err();
        assert_eq!(unknown.field, "default_version", "{unknown}");
        let not_object = Sections::from_json(br#"{"router": "v1"}"#).unwrap_err();
        assert_eq!(not_object.field, "router");
        let twice = Sections::from_json(br#"{"auth": {}, "auth": {}}"#).unwrap_err();
        assert!(twice.message.contains("duplicate"), "{twice}");
        let inner = Sections::from_json(br#"{"router": {"a": 1, "a": 2}}"#).unwrap_err();
        assert!(inner.message.contains("duplicate"), "{inner}");
        assert!(Sections::from_json(b"[]").is_err());
        assert!(Sections::from_json(b"{} x").is_err());
    }

    #[test]
    fn path_normalization_may_be_set_at_the_top_level() {
        use crate::path::AmbiguousPaths;
        let s = Sections::from_json(br#"{"router": {}}"#).unwrap();
        assert_eq!(s.path_normalization, None);
        let top = br#"{"path_normalization": {"ambiguous": "normalize"}, "router": {}}"#;
        let s = Sections::from_json(top).unwrap();
        assert_eq!(
            s.path_normalization.map(|p| p.ambiguous),
            Some(AmbiguousPaths::Normalize)
        );
        let bad = Sections::from_json(br#"{"path_normalization": {"ambiguous": 1}}"#).unwrap_err();
        assert_eq!(bad.field, "path_normalization", "{bad}");
    }

    #[test]
    fn stats_flush_ms_is_whole_milliseconds_up_to_a_minute() {
        assert_eq!(Sections::from_json(b"{}").unwrap().stats_flush_ms, 0);
        let s = Sections::from_json(br#"{"stats_flush_ms": 1000, "router": {}}"#).unwrap();
        assert_eq!(
            (s.stats_flush_ms, policies(&s)),
            (1000, vec![Policy::Router])
        );
        let most = Sections::from_json(br#"{"stats_flush_ms": 60000}"#).unwrap();
        assert_eq!(most.stats_flush_ms, MAX_STATS_FLUSH_MS);
        for bad in ["60001", "-1", "0.5", "\"1s\"", "4294967296"] {
            let cfg = format!(r#"{{"stats_flush_ms": {bad}}}"#);
            let err = Sections::from_json(cfg.as_bytes()).unwrap_err();
            assert_eq!(err.field, "stats_flush_ms", "{bad}: {err}");
        }
    }
}
