//! One value compared (exact, prefix, suffix, regex, presence): the leaf
//! every matcher uses, the request `match` block and claim rules alike, as
//! Envoy's `common/matchers.h` serves every filter.

use crate::bytes::same;
use crate::config::ConfigError;
use regex_lite::{Regex, RegexBuilder};
use serde::Deserialize;

/// How one value is compared: exactly one of these keys.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum StringMatchConfig {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// A full match (anchored at both ends), as Envoy's `safe_regex` and Istio's `regex`.
    /// Uses `regex-lite` (no Unicode classes) to keep filters small; a value that
    /// is not UTF-8 never matches a regex.
    Regex(String),
    /// `true`: the value is present (any value); `false`: it is absent.
    Present(bool),
}

/// A compiled value comparison.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Regex(Regex),
    Present(bool),
}

/// Regexes come from operators, but a pathological one must not eat the VM.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl StringMatcher {
    pub fn compile(config: &StringMatchConfig, field: &str) -> Result<Self, ConfigError> {
        Ok(match config {
            StringMatchConfig::Exact(v) => Self::Exact(v.as_bytes().into()),
            StringMatchConfig::Prefix(v) => Self::Prefix(v.as_bytes().into()),
            StringMatchConfig::Suffix(v) => Self::Suffix(v.as_bytes().into()),
            StringMatchConfig::Present(p) => Self::Present(*p),
            StringMatchConfig::Regex(pattern) => Self::Regex(
                RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|err| {
                        ConfigError::new(format!("{field}.regex"), format!("invalid regex: {err}"))
                    })?,
            ),
        })
    }

    /// The comparison as configuration writes it, for explanations.
    pub fn describe(&self) -> String {
        // Quoted by hand: `{:?}` would link the Unicode escape tables.
        let text = |v: &[u8]| format!("\"{}\"", String::from_utf8_lossy(v));
        match self {
            Self::Exact(v) => format!("exact {}", text(v)),
            Self::Prefix(v) => format!("prefix {}", text(v)),
            Self::Suffix(v) => format!("suffix {}", text(v)),
            // Strip the anchors `compile` added.
            Self::Regex(r) => {
                let p = r.as_str();
                let p = p
                    .strip_prefix("^(?:")
                    .and_then(|p| p.strip_suffix(")$"))
                    .unwrap_or(p);
                format!("regex \"{p}\"")
            }
            Self::Present(p) => format!("present {p}"),
        }
    }

    /// Whether `value` (`None` when absent) satisfies this comparison.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (Self::Present(want), v) => *want == v.is_some(),
            (_, None) => false,
            (Self::Exact(e), Some(v)) => same(v, e),
            (Self::Prefix(p), Some(v)) => v.get(..p.len()).is_some_and(|head| same(head, p)),
            (Self::Suffix(s), Some(v)) => v
                .len()
                .checked_sub(s.len())
                .and_then(|at| v.get(at..))
                .is_some_and(|tail| same(tail, s)),
            (Self::Regex(r), Some(v)) => std::str::from_utf8(v).is_ok_and(|v| r.is_match(v)),
        }
    }
}
