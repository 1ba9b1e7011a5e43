//! The router's configuration: the public JSON contract. Validation and
//! compilation are in `Router::compile`, each error naming the field.

use crate::matcher::MatchConfig;
use serde::Deserialize;

/// The router's configuration, as written in JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The request header the decision is written to; a client-sent value is replaced.
    #[serde(default = "default_version_header")]
    pub version_header: String,
    /// The version when no route matches.
    pub default_version: String,
    /// Optional list of every known version; when given, nothing else may be used.
    #[serde(default)]
    pub versions: Option<Vec<String>>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Lets a client pin a version, to one of `allow`.
    #[serde(default, rename = "override")]
    pub override_: Option<OverrideConfig>,
    /// Response header naming the version that served; `null` turns it off.
    #[serde(default = "default_served_version_header")]
    pub served_version_header: Option<String>,
    /// How the path is normalised before any rule sees it; applied by the
    /// filter once, before every policy (see `switchyard_core::path`).
    #[serde(default)]
    pub path_normalization: Option<crate::path::PathNormalization>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in stats and logs; defaults to `route-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub match_: MatchConfig,
    /// A fixed version. Exactly one of `version` and `split`.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub split: Option<Vec<SplitConfig>>,
    /// Makes a split stable per user.
    #[serde(default)]
    pub sticky: Option<StickyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    pub version: String,
    pub weight: u32,
}

/// Where a sticky split reads the user's key: exactly one of these.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum StickyConfig {
    Header(String),
    Cookie(String),
    /// A verified claim (`sub`, or a dotted path), from the auth filter.
    Claim(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    pub header: String,
    pub allow: Vec<String>,
}

fn default_version_header() -> String {
    "x-version".into()
}

fn default_served_version_header() -> Option<String> {
    Some("x-served-version".into())
}
