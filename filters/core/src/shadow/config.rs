//! The shadow filter's configuration: the public JSON contract and its
//! validation, each error naming the field.

use crate::matcher::MatchConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// First match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The header whose value decides sampling (default `x-request-id`).
    #[serde(default)]
    pub sample_by: Option<String>,
    /// Set to the rule's cluster for Envoy's `request_mirror_policies`
    /// `cluster_header` (default `x-shadow-cluster`).
    #[serde(default)]
    pub cluster_header: Option<String>,
    /// Marks a shadow copy (`true`); default `x-shadow`.
    #[serde(default)]
    pub tag_header: Option<String>,
    #[serde(default)]
    pub safe: SafeConfig,
    #[serde(default)]
    pub compare: CompareConfig,
    /// Behaviour in front of a shadow target.
    #[serde(default)]
    pub receiver: Option<ReceiverConfig>,
    /// How the path is normalised before any rule sees it; applied by the
    /// filter once, before every policy (see `switchyard_core::path`).
    #[serde(default)]
    pub path_normalization: Option<crate::path::PathNormalization>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub match_: MatchConfig,
    pub percent: f64,
    pub target_cluster: String,
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Envoy's mirror policy sends the copy; responses are not compared.
    #[default]
    Mirror,
    /// The filter sends the copy and compares the two responses.
    Compare,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeConfig {
    /// Only these methods are ever shadowed.
    #[serde(default = "safe_methods")]
    pub methods: Vec<String>,
    /// Removed from the shadow copy.
    #[serde(default)]
    pub strip_headers: Vec<String>,
}

impl Default for SafeConfig {
    fn default() -> Self {
        Self {
            methods: safe_methods(),
            strip_headers: Vec::new(),
        }
    }
}

fn safe_methods() -> Vec<String> {
    ["GET", "HEAD", "OPTIONS"].map(String::from).to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    #[serde(default)]
    pub ignore_headers: Vec<String>,
    /// JSON pointers (`/timestamp`, `/items/0/id`) removed before comparing.
    #[serde(default)]
    pub ignore_json_paths: Vec<String>,
    #[serde(default = "max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default = "timeout_ms")]
    pub timeout_ms: u64,
    /// Mismatches logged per rule (then only counted).
    #[serde(default = "log_diffs")]
    pub log_diffs: u32,
    /// Comparisons waiting at once, at most; more are not sampled.
    #[serde(default = "max_pending")]
    pub max_pending: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            ignore_headers: Vec::new(),
            ignore_json_paths: Vec::new(),
            max_body_bytes: max_body_bytes(),
            timeout_ms: timeout_ms(),
            log_diffs: log_diffs(),
            max_pending: max_pending(),
        }
    }
}

fn max_body_bytes() -> usize {
    65_536
}
fn timeout_ms() -> u64 {
    2000
}
fn log_diffs() -> u32 {
    10
}
fn max_pending() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Answer shadow requests with an unsafe method with this status
    /// instead of letting them through (so a shadow never writes).
    #[serde(default)]
    pub answer_unsafe: Option<u16>,
}
