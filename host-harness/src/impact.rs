//! What a configuration change does to recorded traffic: every request runs
//! through the same filter under the old and the new configuration, and
//! each request's outcome (status, version, identity, budget, shadowed, and
//! the rule that decided, read from the counters it moved) is compared.
//! `harness replay --against OLD.json` prints the [`Report`].

use crate::harness::{FilterSpec, Harness, HarnessError};
use crate::scenario::{RequestEntry, Scenario};
use crate::world::ClockStart;
use serde::Serialize;
use std::collections::BTreeMap;

/// Which headers carry the outcome (Switchyard's defaults).
#[derive(Debug, Clone)]
pub struct Fields {
    /// The version the router wrote for Envoy's route table.
    pub version_header: String,
    /// The verified identity auth forwards.
    pub identity_header: String,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            version_header: "x-version".into(),
            identity_header: "end-user".into(),
        }
    }
}

/// One request's outcome under one configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The status the client got (`None`: reset).
    pub status: Option<u16>,
    pub version: Option<String>,
    pub identity: Option<String>,
    /// The router timeout the filter set (`x-envoy-upstream-rq-timeout-ms`).
    pub budget_ms: Option<String>,
    /// A shadow copy was taken.
    pub shadowed: bool,
    /// The counters this request moved, without the `switchyard.` prefix
    /// (e.g. `router.jason-to-v2.v2.requests`): the rule that decided, by name.
    pub rule: String,
}

impl Outcome {
    /// The fields that differ from `other`, by name.
    pub fn changes(&self, other: &Outcome) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.status != other.status {
            out.push("status");
        }
        if self.version != other.version {
            out.push("version");
        }
        if self.identity != other.identity {
            out.push("identity");
        }
        if self.budget_ms != other.budget_ms {
            out.push("budget");
        }
        if self.shadowed != other.shadowed {
            out.push("shadowed");
        }
        out
    }

    fn label(&self, what: &str) -> String {
        let v = match what {
            "status" => self.status.map(|s| s.to_string()),
            "version" => self.version.clone(),
            "identity" => self.identity.clone(),
            "budget" => self.budget_ms.clone(),
            _ => Some(self.shadowed.to_string()),
        };
        v.unwrap_or_else(|| "(none)".into())
    }
}

/// A request whose outcome changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Its line in the recorded traffic (0-based among requests).
    pub index: usize,
    pub headers: Vec<(String, String)>,
    pub before: Outcome,
    pub after: Outcome,
    pub changed: Vec<&'static str>,
}

/// Everything `replay --against` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub requests: usize,
    pub changes: Vec<Change>,
    /// Changed requests per field.
    pub changed_fields: BTreeMap<&'static str, usize>,
    /// Per field, value → (requests before, requests after).
    pub distribution: BTreeMap<&'static str, BTreeMap<String, (usize, usize)>>,
    /// Changed requests grouped by (rule before, rule after).
    pub by_rule: BTreeMap<(String, String), usize>,
}

/// Runs `entries` through `filter` with `old` and with `new` configuration.
/// `progress` is told after each request (for a progress bar).
pub fn compare(
    filter: &std::path::Path,
    old: &[u8],
    new: &[u8],
    entries: &[RequestEntry],
    fields: &Fields,
    clock: ClockStart,
    mut progress: impl FnMut(),
) -> Result<Report, HarnessError> {
    let load = |config: &[u8]| -> Result<Harness, HarnessError> {
        let mut h = Harness::new();
        h.set_trace(false);
        h.start_clock(clock)?;
        h.add_filter(FilterSpec::new(filter).config(config.to_vec()))?;
        Ok(h)
    };
    let (mut before, mut after) = (load(old)?, load(new)?);
    let mut report = Report {
        requests: entries.len(),
        ..Report::default()
    };
    for (index, entry) in entries.iter().enumerate() {
        let b = outcome(&mut before, entry, fields);
        let a = outcome(&mut after, entry, fields);
        for what in ["status", "version", "identity", "budget", "shadowed"] {
            let d = report.distribution.entry(what).or_default();
            d.entry(b.label(what)).or_default().0 += 1;
            d.entry(a.label(what)).or_default().1 += 1;
        }
        let changed = b.changes(&a);
        if !changed.is_empty() {
            for c in &changed {
                *report.changed_fields.entry(c).or_default() += 1;
            }
            *report
                .by_rule
                .entry((b.rule.clone(), a.rule.clone()))
                .or_default() += 1;
            report.changes.push(Change {
                index,
                headers: entry.headers.0.clone(),
                before: b,
                after: a,
                changed,
            });
        }
        progress();
    }
    Ok(report)
}

fn outcome(h: &mut Harness, entry: &RequestEntry, fields: &Fields) -> Outcome {
    let counters =
        |h: &Harness| -> Vec<i64> { h.world().metrics.iter().map(|m| m.value).collect() };
    let seen = counters(h);
    let ex = h.send(Scenario::request(entry));
    let w = h.world();
    let moved: Vec<&str> = w
        .metrics
        .iter()
        .enumerate()
        .filter(|(i, m)| m.value > seen.get(*i).copied().unwrap_or(0))
        .map(|(_, m)| m.name.as_str())
        .collect();
    Outcome {
        status: ex.status(),
        version: ex.upstream_header(&fields.version_header),
        identity: ex.upstream_header(&fields.identity_header),
        budget_ms: ex
            .upstream
            .as_ref()
            .and_then(|u| u.router_headers.get_str("x-envoy-upstream-rq-timeout-ms")),
        shadowed: moved
            .iter()
            .any(|m| m.starts_with("switchyard.shadow.") && m.ends_with(".sampled")),
        rule: if moved.is_empty() {
            "(no counter)".into()
        } else {
            moved
                .iter()
                .map(|m| m.strip_prefix("switchyard.").unwrap_or(m))
                .collect::<Vec<_>>()
                .join(" ")
        },
    }
}

/// Reads recorded requests, one JSON object per line: `{"headers": {...},
/// "body": "..."}` as a scenario's requests, or a line of Envoy's JSON access
/// log in the documented format (`envoy-config/fragments/access-log.yaml`). Keys other
/// than `headers` and `body` (a log's `response_code`, `start_time`, …) are
/// ignored, and so are null header values (a header the request lacked).
/// A line that is a valid request entry is read as one, all its keys kept.
pub fn read_requests(path: &std::path::Path) -> Result<Vec<RequestEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: String| format!("{}:{}: {e}", path.display(), i + 1);
        // A scenario's request entry as written (connection, trailers, … included).
        if let Ok(entry) = serde_json::from_str::<RequestEntry>(line) {
            out.push(entry);
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        let headers = match v.get("headers") {
            Some(serde_json::Value::Object(m)) => m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Ok((k.clone(), other.to_string())),
                })
                .collect::<Result<Vec<_>, String>>()?,
            Some(other) => {
                let list: crate::scenario::Pairs =
                    serde_json::from_value(other.clone()).map_err(|e| at(e.to_string()))?;
                list.0
            }
            None => return Err(at("no `headers` object".into())),
        };
        let mut entry: RequestEntry =
            serde_json::from_value(serde_json::json!({})).map_err(|e| at(e.to_string()))?;
        entry.headers = crate::scenario::Pairs(headers);
        entry.body = v.get("body").and_then(|b| b.as_str()).map(str::to_owned);
        out.push(entry);
    }
    Ok(out)
}
