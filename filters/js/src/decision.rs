//! What a decision returns to JavaScript: plain data, camelCase, every
//! field described in `js/index.d.ts`.

use serde::Serialize;
use serde_json::Value;

/// The whole answer for one request.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// `forward`: the request goes on to the upstream; `reply`: the filter
    /// answers it itself (see `reply`).
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    pub path: PathOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowOutcome>,
    /// The request as the upstream receives it (when forwarded).
    pub upstream: Upstream,
    /// What the filter tells Envoy's router (`x-envoy-upstream-rq-timeout-ms`,
    /// retries): the router consumes these, so they are not in `upstream`.
    pub router_controls: Vec<(String, String)>,
    /// Headers the filter adds to the upstream's response.
    pub response_headers: Vec<(String, String)>,
    /// Every rule tried and why it matched or not, with `explain: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<TraceEntry>>,
}

/// A local answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub status: u16,
    /// The policy that answered: `path`, `auth`, `timeouts` or `shadow`.
    pub policy: &'static str,
    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`).
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathOutcome {
    /// The path every rule decided on (normalised), before the query.
    pub decided_on: String,
    /// The raw path was rewritten to its normal form.
    pub normalized: bool,
    /// Why an ambiguous path was refused, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthOutcome {
    /// `allow` or `deny`.
    pub verdict: &'static str,
    /// The rule the request fell under (`rules[1]`), if any.
    pub rule: Option<String>,
    /// The provider whose credential was accepted, or whose answer denied.
    pub provider: Option<String>,
    /// The denial's reason (`token_expired`, `missing_credential`…).
    pub reason: Option<&'static str>,
    /// The identity header's value, when one was set.
    pub subject: Option<String>,
    /// The verified claims (JWT payload, or `{"sub": name}`).
    pub claims: Option<Value>,
    /// `dry_run: true`: the denial was logged, and the request let through.
    pub dry_run: bool,
    /// An ext-auth service failed and `failure_mode: open` let it through.
    pub failed_open: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterOutcome {
    pub version: String,
    pub rule: String,
    /// `override`, `route`, `sticky_split`, `random_split` or `default`.
    pub reason: &'static str,
    /// The request header written (`x-version`).
    pub header: String,
    /// The response header naming the served version, if configured.
    pub served_version_header: Option<String>,
    /// The client asked for a version the override does not allow.
    pub override_rejected: bool,
    /// For a split: where the key or draw fell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitOutcome>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitOutcome {
    /// `0 <= bucket < total`; versions own consecutive ranges, in split order.
    pub bucket: u64,
    pub total: u64,
    /// Where the sticky key was read (`cookie:user`), if the split is sticky.
    pub sticky_by: Option<String>,
    /// The sticky key's value, when the request had one.
    pub sticky_key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsOutcome {
    /// The first matching rule, if any.
    pub rule: Option<String>,
    /// The budget the router is given, ms (`x-envoy-upstream-rq-timeout-ms`).
    pub budget_ms: Option<u64>,
    pub per_try_timeout_ms: Option<u64>,
    /// The deadline told to the upstream, ms.
    pub propagated_ms: Option<u64>,
    /// The caller's own deadline: `absent`, `malformed`, or its value in ms.
    pub inbound_deadline: Value,
    /// The caller's deadline was shorter than the rule's timeout.
    pub capped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultOutcome>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    pub attempts: u32,
    pub retry_on: String,
    pub grpc_retry_on: String,
    pub status_codes: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultOutcome {
    pub name: String,
    /// The injected delay, ms, when this request was sampled for it.
    pub delay_ms: Option<u64>,
    /// The request was sampled for the abort (see `reply`).
    pub aborted: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowOutcome {
    pub mirror: Option<ShadowChoice>,
    pub compare: Option<ShadowChoice>,
    /// This request is itself a shadow copy (the receiving side).
    pub received: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowChoice {
    pub rule: String,
    /// `shadowed`, `not_sampled` or `unsafe_method`.
    pub outcome: &'static str,
    pub cluster: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    pub method: String,
    pub path: String,
    /// In order, repeated names repeated; pseudo-headers left out.
    pub headers: Vec<(String, String)>,
}

/// One rule tried.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceEntry {
    pub policy: &'static str,
    pub rule: String,
    pub matched: bool,
    /// Why not: the first condition not met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmet: Option<Unmet>,
    /// What happened beyond matching (`not sampled`, `decided`, `skipped: an earlier rule decided`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unmet {
    pub field: String,
    pub expected: String,
    pub actual: Option<String>,
}

impl From<switchyard_core::matcher::Unmet> for Unmet {
    fn from(u: switchyard_core::matcher::Unmet) -> Self {
        Self {
            field: u.field,
            expected: u.expected,
            actual: u.actual,
        }
    }
}
