//! Time budgets (groundwork for the timeouts filter): configuration,
//! validation, inbound deadline parsing and the budget arithmetic. The
//! filter's adapter, faults and counters come with the rest of the issue.

use crate::config::{from_json, is_header_name, ConfigError};
use crate::headers::RequestHeaders;
use crate::matcher::{MatchConfig, RequestMatch};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub deadline: Option<DeadlineConfig>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Headers carrying the caller's remaining budget: `grpc-timeout` in its
    /// own units, any other in milliseconds. First present and valid wins.
    pub inbound: Vec<String>,
    #[serde(default)]
    pub propagate: Option<String>,
    #[serde(default)]
    pub min_remaining_ms: u64,
}

/// Conditions Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` accept.
pub const RETRY_CONDITIONS: &[&str] = &[
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
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    matcher: RequestMatch,
    pub timeout_ms: u64,
    pub per_try_timeout_ms: Option<u64>,
    pub retries: Option<(u32, String)>,
}

/// A validated timeouts configuration.
#[derive(Debug)]
pub struct Timeouts {
    pub rules: Vec<Rule>,
    pub deadline: Option<DeadlineConfig>,
}

fn positive(v: i64, field: String) -> Result<u64, ConfigError> {
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ConfigError::new(field, "must be a positive number of milliseconds"))
}

impl Timeouts {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(&from_json::<TimeoutsConfig>(bytes)?)
    }

    pub fn compile(config: &TimeoutsConfig) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            let timeout_ms = positive(r.timeout_ms, format!("{field}.timeout_ms"))?;
            let per_try_timeout_ms = r
                .per_try_timeout_ms
                .map(|v| positive(v, format!("{field}.per_try_timeout_ms")))
                .transpose()?;
            let retries = match &r.retries {
                None => None,
                Some(rt) => {
                    if rt.on.is_empty() {
                        return Err(ConfigError::new(
                            format!("{field}.retries.on"),
                            "list at least one retry condition",
                        ));
                    }
                    for (j, c) in rt.on.iter().enumerate() {
                        if !RETRY_CONDITIONS.contains(&c.as_str()) {
                            return Err(ConfigError::new(
                                format!("{field}.retries.on[{j}]"),
                                format!("unknown retry condition {c:?}"),
                            ));
                        }
                    }
                    Some((rt.attempts, rt.on.join(",")))
                }
            };
            rules.push(Rule {
                name: r.name.clone(),
                matcher: RequestMatch::compile(&r.match_, &format!("{field}.match"))?,
                timeout_ms,
                per_try_timeout_ms,
                retries,
            });
        }
        if let Some(d) = &config.deadline {
            for (i, h) in d.inbound.iter().enumerate() {
                if !is_header_name(h) {
                    return Err(ConfigError::new(
                        format!("deadline.inbound[{i}]"),
                        "not a valid lower-case header name",
                    ));
                }
            }
            if let Some(p) = &d.propagate {
                if !is_header_name(p) {
                    return Err(ConfigError::new(
                        "deadline.propagate",
                        "not a valid lower-case header name",
                    ));
                }
            }
        }
        Ok(Self {
            rules,
            deadline: config.deadline.clone(),
        })
    }

    /// The first rule matching the request.
    pub fn rule(&self, req: &(impl RequestHeaders + ?Sized)) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matcher.matches(req))
    }

    /// The caller's remaining budget, from the first inbound header that is
    /// present and well-formed.
    pub fn inbound_budget_ms(&self, req: &(impl RequestHeaders + ?Sized)) -> Budget {
        let Some(d) = &self.deadline else {
            return Budget::Absent;
        };
        let mut malformed = false;
        for h in &d.inbound {
            let Some(v) = req.header(h) else { continue };
            let parsed = if h == "grpc-timeout" {
                parse_grpc_timeout(v)
            } else {
                parse_ms(v)
            };
            match parsed {
                Some(ms) => return Budget::Ms(ms),
                None => malformed = true,
            }
        }
        if malformed {
            Budget::Malformed
        } else {
            Budget::Absent
        }
    }
}

/// A caller's inbound deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Absent,
    Ms(u64),
    /// Present but unreadable (ignored, and counted, by the filter).
    Malformed,
}

/// The effective upstream timeout: the smaller of the rule's timeout and the
/// caller's budget, minus the time already spent in the proxy.
pub fn effective_timeout_ms(
    rule_ms: Option<u64>,
    budget_ms: Option<u64>,
    spent_ms: u64,
) -> Option<u64> {
    let limit = match (rule_ms, budget_ms) {
        (Some(r), Some(b)) => r.min(b),
        (r, b) => r.or(b)?,
    };
    Some(limit.saturating_sub(spent_ms))
}

fn parse_ms(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// gRPC's `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n),
/// rounded up to whole milliseconds.
pub fn parse_grpc_timeout(v: &[u8]) -> Option<u64> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => n * 3_600_000,
        b'M' => n * 60_000,
        b'S' => n * 1000,
        b'm' => n,
        b'u' => n.div_ceil(1000),
        b'n' => n.div_ceil(1_000_000),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::HeaderList;

    #[test]
    fn grpc_timeout_in_every_unit_and_malformed_values() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(3_600_000));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(120_000));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(3000));
        assert_eq!(parse_grpc_timeout(b"250m"), Some(250));
        assert_eq!(parse_grpc_timeout(b"1500u"), Some(2));
        assert_eq!(parse_grpc_timeout(b"1n"), Some(1));
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"10s",
            b"123456789m",
            b"-5m",
            b"1.5S",
            b"\xffS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    fn timeouts() -> Timeouts {
        Timeouts::from_json(
            br#"{"rules": [
              {"name": "reviews-v2", "match": {"headers": {"x-version": {"exact": "v2"}}, "path": {"prefix": "/reviews"}},
               "timeout_ms": 500, "per_try_timeout_ms": 200, "retries": {"attempts": 2, "on": ["5xx", "reset", "connect-failure"]}},
              {"name": "default", "match": {}, "timeout_ms": 3000}],
             "deadline": {"inbound": ["grpc-timeout", "x-request-timeout-ms"], "propagate": "x-request-timeout-ms", "min_remaining_ms": 5}}"#,
        )
        .unwrap()
    }

    #[test]
    fn first_matching_rule_and_budget_arithmetic() {
        let t = timeouts();
        let v2 = HeaderList::from_pairs([(":path", "/reviews/1"), ("x-version", "v2")]);
        let r = t.rule(&v2).unwrap();
        assert_eq!(
            (r.name.as_str(), r.timeout_ms, r.per_try_timeout_ms),
            ("reviews-v2", 500, Some(200))
        );
        assert_eq!(r.retries, Some((2, "5xx,reset,connect-failure".into())));
        assert_eq!(
            t.rule(&HeaderList::from_pairs([(":path", "/x")]))
                .unwrap()
                .name,
            "default"
        );
        let req =
            HeaderList::from_pairs([("grpc-timeout", "300m"), ("x-request-timeout-ms", "100")]);
        assert_eq!(t.inbound_budget_ms(&req), Budget::Ms(300));
        let req =
            HeaderList::from_pairs([("grpc-timeout", "bogus"), ("x-request-timeout-ms", "100")]);
        assert_eq!(t.inbound_budget_ms(&req), Budget::Ms(100));
        assert_eq!(
            t.inbound_budget_ms(&HeaderList::from_pairs([("x-request-timeout-ms", "1e3")])),
            Budget::Malformed
        );
        assert_eq!(effective_timeout_ms(Some(500), Some(300), 20), Some(280));
        assert_eq!(effective_timeout_ms(Some(500), None, 20), Some(480));
        assert_eq!(effective_timeout_ms(None, Some(3), 5), Some(0));
        assert_eq!(effective_timeout_ms(None, None, 5), None);
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let err = |json: &str| Timeouts::from_json(json.as_bytes()).unwrap_err().field;
        assert_eq!(
            err(r#"{"rules": [{"name": "a", "timeout_ms": 0}]}"#),
            "rules[0].timeout_ms"
        );
        assert_eq!(
            err(r#"{"rules": [{"name": "a", "timeout_ms": -1}]}"#),
            "rules[0].timeout_ms"
        );
        assert_eq!(
            err(r#"{"rules": [{"name": "a", "timeout_ms": 5, "per_try_timeout_ms": 0}]}"#),
            "rules[0].per_try_timeout_ms"
        );
        assert_eq!(
            err(
                r#"{"rules": [{"name": "a", "timeout_ms": 5, "retries": {"attempts": 1, "on": ["sometimes"]}}]}"#
            ),
            "rules[0].retries.on[0]"
        );
        assert_eq!(
            err(r#"{"deadline": {"inbound": ["Grpc Timeout"]}}"#),
            "deadline.inbound[0]"
        );
    }
}
