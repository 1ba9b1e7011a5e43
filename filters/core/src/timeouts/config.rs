//! The timeouts filter's configuration: the public JSON contract and its
//! validation, each error naming the field.

use super::{Abort, Deadline, Fault, Retries, Rule, DEFAULT_DEADLINE_MAX_MS};
use crate::config::{check_rule_name, header_name, is_header_name, ConfigError};
use crate::matcher::{MatchConfig, RequestMatch};
use crate::sampling::Sampler;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// First match wins; a request no rule matches keeps the route's timeout.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub deadline: Option<DeadlineConfig>,
    /// First match wins.
    #[serde(default)]
    pub faults: Vec<FaultConfig>,
    /// The header whose value decides fault sampling (default `x-request-id`).
    #[serde(default)]
    pub sample_by: Option<String>,
    /// How the path is normalised before any rule sees it; applied by the
    /// filter once, before every policy (see `switchyard_core::path`).
    #[serde(default)]
    pub path_normalization: Option<crate::path::PathNormalization>,
    /// Where the budget's clock starts (default `switchyard`).
    #[serde(default)]
    pub budget_from: BudgetFrom,
}

/// When a request's budget starts counting down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetFrom {
    /// When Switchyard first saw the request's headers: the chain's entry,
    /// or this filter's, so time in earlier policies of the chain (auth
    /// fetching keys) and in an injected delay is spent. Like Envoy's own
    /// route timeout, it does not count earlier Envoy filters.
    #[default]
    Switchyard,
    /// When Envoy received the request (its `request.time`), so time in
    /// earlier Envoy filters (`ext_authz`, Lua calls) is spent too; one
    /// property read per request (about 12k instructions in Envoy 1.40).
    EnvoyArrival,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub match_: MatchConfig,
    pub timeout_ms: i64,
    #[serde(default)]
    pub per_try_timeout_ms: Option<i64>,
    #[serde(default)]
    pub retries: Option<RetriesConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    pub attempts: u32,
    pub on: Vec<String>,
    /// For the `retriable-status-codes` condition.
    #[serde(default)]
    pub status_codes: Vec<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Headers carrying the caller's remaining budget: `grpc-timeout` in its
    /// own units, any other in milliseconds. First present and valid wins.
    pub inbound: Vec<String>,
    /// The header that tells the upstream its budget (gRPC requests also get
    /// `grpc-timeout`).
    #[serde(default)]
    pub propagate: Option<String>,
    /// A request with less budget left is answered 504 without going upstream.
    #[serde(default)]
    pub min_remaining_ms: u64,
    /// The longest budget a caller's deadline alone may set (no rule matched).
    #[serde(default)]
    pub max_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub match_: MatchConfig,
    #[serde(default)]
    pub delay: Option<DelayConfig>,
    #[serde(default)]
    pub abort: Option<AbortConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    pub fixed_ms: i64,
    #[serde(default = "hundred")]
    pub percent: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortConfig {
    pub status: u16,
    /// The gRPC status for gRPC requests; absent, the proxy maps `status`.
    #[serde(default)]
    pub grpc_status: Option<u32>,
    #[serde(default = "hundred")]
    pub percent: f64,
}

fn hundred() -> f64 {
    100.0
}

/// Conditions Envoy's `x-envoy-retry-on` accepts.
const HTTP_RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// Conditions Envoy's `x-envoy-retry-grpc-on` accepts.
const GRPC_RETRY_CONDITIONS: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Every retry condition a rule may name.
pub const RETRY_CONDITIONS: &[&[&str]] = &[HTTP_RETRY_CONDITIONS, GRPC_RETRY_CONDITIONS];

fn positive(v: i64, field: String) -> Result<u64, ConfigError> {
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ConfigError::new(field, "must be a positive number of milliseconds"))
}

pub(super) fn compile_rule(r: &RuleConfig, field: &str) -> Result<Rule, ConfigError> {
    check_rule_name(&r.name, &format!("{field}.name"))?;
    let timeout_ms = positive(r.timeout_ms, format!("{field}.timeout_ms"))?;
    let per_try_timeout_ms = r
        .per_try_timeout_ms
        .map(|v| positive(v, format!("{field}.per_try_timeout_ms")))
        .transpose()?;
    if per_try_timeout_ms.is_some_and(|p| p >= timeout_ms) {
        return Err(ConfigError::new(
            format!("{field}.per_try_timeout_ms"),
            "must be below timeout_ms (Envoy ignores a per-try timeout that is not)",
        ));
    }
    let retries = r
        .retries
        .as_ref()
        .map(|rt| compile_retries(rt, &format!("{field}.retries")))
        .transpose()?;
    Ok(Rule {
        name: r.name.clone(),
        matcher: RequestMatch::compile(&r.match_, &format!("{field}.match"))?,
        timeout_ms,
        per_try_timeout_ms,
        retries,
    })
}

fn compile_retries(rt: &RetriesConfig, field: &str) -> Result<Retries, ConfigError> {
    if rt.attempts == 0 {
        return Err(ConfigError::new(
            format!("{field}.attempts"),
            "must be at least 1 (omit retries for none)",
        ));
    }
    if rt.on.is_empty() {
        return Err(ConfigError::new(
            format!("{field}.on"),
            "list at least one retry condition",
        ));
    }
    let (mut http, mut grpc) = (Vec::new(), Vec::new());
    for (j, c) in rt.on.iter().enumerate() {
        if HTTP_RETRY_CONDITIONS.contains(&c.as_str()) {
            http.push(c.as_str());
        } else if GRPC_RETRY_CONDITIONS.contains(&c.as_str()) {
            grpc.push(c.as_str());
        } else {
            return Err(ConfigError::new(
                format!("{field}.on[{j}]"),
                format!("unknown retry condition {c:?}"),
            ));
        }
    }
    let wants_codes = http.contains(&"retriable-status-codes");
    let has_codes = !rt.status_codes.is_empty();
    if wants_codes != has_codes {
        return Err(ConfigError::new(
            format!("{field}.status_codes"),
            "list status codes exactly when `on` has retriable-status-codes",
        ));
    }
    if let Some((k, _)) = rt
        .status_codes
        .iter()
        .enumerate()
        .find(|(_, c)| !(100..=599).contains(*c))
    {
        return Err(ConfigError::new(
            format!("{field}.status_codes[{k}]"),
            "not an HTTP status code",
        ));
    }
    Ok(Retries {
        attempts: rt.attempts,
        http_on: http.join(","),
        grpc_on: grpc.join(","),
        status_codes: rt
            .status_codes
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    })
}

pub(super) fn compile_fault(f: &FaultConfig, field: &str) -> Result<Fault, ConfigError> {
    check_rule_name(&f.name, &format!("{field}.name"))?;
    if f.delay.is_none() && f.abort.is_none() {
        return Err(ConfigError::new(field, "give a delay, an abort or both"));
    }
    let delay = f
        .delay
        .as_ref()
        .map(|d| {
            Ok::<_, ConfigError>((
                positive(d.fixed_ms, format!("{field}.delay.fixed_ms"))?,
                Sampler::new(
                    d.percent,
                    &format!("{}/delay", f.name),
                    &format!("{field}.delay.percent"),
                )?,
            ))
        })
        .transpose()?;
    let abort = f
        .abort
        .as_ref()
        .map(|a| {
            if !(200..=599).contains(&a.status) {
                return Err(ConfigError::new(
                    format!("{field}.abort.status"),
                    "must be an HTTP status from 200 to 599",
                ));
            }
            if a.grpc_status.is_some_and(|g| g > 16) {
                return Err(ConfigError::new(
                    format!("{field}.abort.grpc_status"),
                    "must be a gRPC status code from 0 to 16",
                ));
            }
            Ok(Abort {
                status: a.status,
                grpc_status: a.grpc_status,
                sampler: Sampler::new(
                    a.percent,
                    &format!("{}/abort", f.name),
                    &format!("{field}.abort.percent"),
                )?,
            })
        })
        .transpose()?;
    Ok(Fault {
        name: f.name.clone(),
        matcher: RequestMatch::compile(&f.match_, &format!("{field}.match"))?,
        delay,
        abort,
    })
}

pub(super) fn compile_deadline(d: &DeadlineConfig) -> Result<Deadline, ConfigError> {
    if d.inbound.is_empty() {
        return Err(ConfigError::new(
            "deadline.inbound",
            "list at least one header (e.g. grpc-timeout)",
        ));
    }
    for (i, h) in d.inbound.iter().enumerate() {
        header_name(h, &format!("deadline.inbound[{i}]"))?;
    }
    if let Some(p) = &d.propagate {
        if !is_header_name(p) || p == "grpc-timeout" {
            return Err(ConfigError::new(
                "deadline.propagate",
                "must be a lower-case header name other than grpc-timeout (set for gRPC requests anyway)",
            ));
        }
    }
    Ok(Deadline {
        inbound: d.inbound.clone(),
        propagate: d.propagate.clone(),
        min_remaining_ms: d.min_remaining_ms,
        max_ms: d
            .max_ms
            .map(|m| positive(m, "deadline.max_ms".into()))
            .transpose()?
            .unwrap_or(DEFAULT_DEADLINE_MAX_MS),
    })
}

pub(super) fn compile_sample_by(sample_by: Option<&str>) -> Result<String, ConfigError> {
    header_name(sample_by.unwrap_or("x-request-id"), "sample_by")
}
