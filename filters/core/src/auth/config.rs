//! The auth filter's configuration, as written in JSON. Field names are the
//! public interface; `Auth::compile` validates everything serde cannot.

use crate::claims::ClaimMatchConfig;
use crate::matcher::MatchConfig;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub providers: Vec<ProviderConfig>,
    /// First match wins; a request no rule matches is denied (403).
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    /// Decide, log and count, but let every request through.
    #[serde(default)]
    pub dry_run: bool,
    /// Verified tokens and basic-auth decisions kept per VM.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Tokens longer than this are rejected before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// How the path is normalised before any rule sees it; applied by the
    /// filter once, before every policy (see `switchyard_core::path`).
    #[serde(default)]
    pub path_normalization: Option<crate::path::PathNormalization>,
    /// Whether verified claims are written to the `switchyard.claims`
    /// property for Envoy filters after this one. Off unless asked, as
    /// `jwt_authn` writes its payload only with `payload_in_metadata`: the
    /// write costs 3.8k instructions a request in Envoy, and later sections
    /// of `switchyard.wasm` get the claims in memory without it.
    #[serde(default)]
    pub claims_property: bool,
}

fn default_cache_entries() -> usize {
    1024
}

fn default_max_token_bytes() -> usize {
    8192
}

/// A named credential check: exactly one of `jwt`, `api_key`, `basic`, `ext_auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub api_key: Option<ApiKeyConfig>,
    #[serde(default)]
    pub basic: Option<BasicConfig>,
    #[serde(default)]
    pub ext_auth: Option<ExtAuthConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`, when given.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` must name one of these, when given.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// An inline JWKS. Exactly one of `jwks` and `remote_jwks`.
    #[serde(default)]
    pub jwks: Option<Value>,
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwksConfig>,
    /// Where the token is read, first found wins; default `authorization: Bearer …`.
    #[serde(default = "default_token_sources")]
    pub from: Vec<TokenSource>,
    /// Accepted `alg` values; default every supported algorithm.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
}

fn default_token_sources() -> Vec<TokenSource> {
    vec![TokenSource {
        header: Some("authorization".into()),
        prefix: Some("Bearer ".into()),
        cookie: None,
        query: None,
    }]
}

fn default_clock_skew_s() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u64,
    /// Bounds each fetch, and how long a request waits for the first key set.
    #[serde(default = "default_jwks_timeout_ms")]
    pub timeout_ms: u64,
    /// How long the last good key set keeps serving while every refresh
    /// fails: past it the keys are dropped and tokens get 503
    /// `jwks_unavailable` until a fetch succeeds (a provider gone for good
    /// must not vouch for revoked keys forever).
    #[serde(default = "default_max_stale_s")]
    pub max_stale_s: u64,
}

fn default_max_stale_s() -> u64 {
    86_400
}

fn default_refresh_s() -> u64 {
    300
}

fn default_jwks_timeout_ms() -> u64 {
    2000
}

/// One place a token may be: exactly one of `header`, `cookie`, `query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    #[serde(default)]
    pub header: Option<String>,
    /// Stripped from the header value, compared without regard to case.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub header: String,
    pub keys: Vec<ApiKeyEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub name: String,
    /// Hex SHA-256 of the key; keys themselves never appear in configuration.
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    pub users: Vec<BasicUser>,
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "switchyard".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    pub name: String,
    pub bcrypt: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthConfig {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    #[serde(default = "default_ext_auth_timeout_ms")]
    pub timeout_ms: u64,
    /// Request headers sent to the service (with `x-forwarded-method`,
    /// `x-forwarded-uri` and `x-forwarded-host` always).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Response headers of an allowing answer copied onto the request.
    #[serde(default)]
    pub copy_response_headers: Vec<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// The response header naming the user; default the identity header's name.
    #[serde(default)]
    pub identity_header: Option<String>,
}

fn default_ext_auth_timeout_ms() -> u64 {
    200
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// The service failing or timing out denies (503).
    #[default]
    Closed,
    /// The service failing or timing out allows, counted.
    Open,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default, rename = "match")]
    pub match_: MatchConfig,
    /// `"anonymous"`: no credential needed. Exactly one of `allow`, `require`, `require_any`.
    #[serde(default)]
    pub allow: Option<String>,
    /// Every listed provider must accept the request.
    #[serde(default)]
    pub require: Option<Vec<String>>,
    /// One listed provider must accept it, tried in order.
    #[serde(default)]
    pub require_any: Option<Vec<String>>,
    /// Conditions on the verified claims; failing them is 403.
    #[serde(default, deserialize_with = "crate::config::unique_keys")]
    pub claims: BTreeMap<String, ClaimMatchConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Set from the verified credential; always removed from client requests.
    pub header: String,
    /// The JWT claim naming the user.
    #[serde(default = "default_from_claim")]
    pub from_claim: String,
    /// Header name → claim path; also removed from client requests.
    #[serde(default, deserialize_with = "crate::config::unique_keys")]
    pub claims_to_headers: BTreeMap<String, String>,
}

fn default_from_claim() -> String {
    "sub".into()
}
