//! Envoy's router, as far as filters can steer it: the global and per-try
//! timeouts and the retry policy that request headers set (and the router
//! removes), `x-envoy-expected-rq-timeout-ms` for the upstream, and which
//! attempt outcomes are retried.

use crate::model::{Headers, Response};

/// Envoy's default route timeout.
pub(crate) const ROUTE_TIMEOUT_MS: u64 = 15_000;
/// Envoy's default retry back-off base; the harness waits the whole base
/// (Envoy draws a jittered wait below it) so runs stay deterministic.
pub(crate) const RETRY_BACKOFF_MS: u64 = 25;

/// Router controls Envoy's connection manager removes from an external
/// client's request before filters run (`cleanInternalHeaders`); a filter
/// may set them, a client may not.
pub(crate) const INTERNAL_ONLY_HEADERS: &[&str] = &[
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// One request's timeouts and retry policy, as the router reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    /// 0: no timeout.
    pub global_ms: u64,
    /// 0: none (also when not below the global timeout, as Envoy ignores it).
    pub per_try_ms: u64,
    pub max_retries: u32,
    retry_on: Vec<String>,
    retry_grpc_on: Vec<String>,
    status_codes: Vec<u16>,
}

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome<'a> {
    Answered(&'a Response),
    /// Reset after the request went out.
    Reset,
    /// The connection was refused: the request never went out.
    Refused,
    PerTryTimeout,
}

fn list(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .get_str(name)
        .map(|v| {
            v.split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn number(headers: &Headers, name: &str) -> Option<u64> {
    headers.get_str(name)?.trim().parse().ok()
}

// The request headers Envoy's router reads as its controls and removes
// before the request goes upstream.
pub(crate) use switchyard_core::timeouts::ROUTER_CONSUMED_HEADERS as CONSUMED;

impl Policy {
    /// Reads the router headers and removes them, as Envoy's router does
    /// before the request goes upstream, then tells the upstream its budget.
    pub fn take_from(headers: &mut Headers) -> Self {
        let global_ms =
            number(headers, "x-envoy-upstream-rq-timeout-ms").unwrap_or(ROUTE_TIMEOUT_MS);
        let per_try_ms = number(headers, "x-envoy-upstream-rq-per-try-timeout-ms")
            .filter(|p| global_ms == 0 || *p < global_ms)
            .unwrap_or(0);
        let retry_on = list(headers, "x-envoy-retry-on");
        let retry_grpc_on = list(headers, "x-envoy-retry-grpc-on");
        let any = !retry_on.is_empty() || !retry_grpc_on.is_empty();
        let max_retries = if any {
            number(headers, "x-envoy-max-retries").map_or(1, |n| n as u32)
        } else {
            0
        };
        let status_codes = list(headers, "x-envoy-retriable-status-codes")
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        for name in CONSUMED {
            headers.remove(name);
        }
        let expected = if per_try_ms > 0 {
            per_try_ms
        } else {
            global_ms
        };
        if expected > 0 {
            headers.replace(
                "x-envoy-expected-rq-timeout-ms",
                expected.to_string().as_bytes(),
            );
        }
        Self {
            global_ms,
            per_try_ms,
            max_retries,
            retry_on,
            retry_grpc_on,
            status_codes,
        }
    }

    fn on(&self, condition: &str) -> bool {
        self.retry_on.iter().any(|c| c == condition)
    }

    /// Whether the router retries an attempt that ended this way.
    pub fn retries(&self, outcome: Outcome<'_>) -> bool {
        let timeout_or_reset = self.on("5xx") || self.on("gateway-error") || self.on("reset");
        match outcome {
            Outcome::PerTryTimeout | Outcome::Reset => timeout_or_reset,
            Outcome::Refused => {
                timeout_or_reset || self.on("connect-failure") || self.on("reset-before-request")
            }
            Outcome::Answered(r) => {
                let s = r.status;
                let grpc = r
                    .headers
                    .get_str("grpc-status")
                    .or_else(|| r.trailers.as_ref()?.get_str("grpc-status"))
                    .and_then(|g| g.parse::<u32>().ok())
                    .and_then(grpc_condition);
                (self.on("5xx") && s >= 500)
                    || (self.on("gateway-error") && matches!(s, 502..=504))
                    || (self.on("retriable-4xx") && s == 409)
                    || (self.on("retriable-status-codes") && self.status_codes.contains(&s))
                    || grpc.is_some_and(|g| self.retry_grpc_on.iter().any(|c| c == g))
            }
        }
    }
}

fn grpc_condition(status: u32) -> Option<&'static str> {
    Some(match status {
        1 => "cancelled",
        4 => "deadline-exceeded",
        8 => "resource-exhausted",
        13 => "internal",
        14 => "unavailable",
        _ => return None,
    })
}

/// A reply the router makes up, framed as Envoy frames its local replies.
fn made_up(status: u16, body: &str) -> Response {
    Response::new(status)
        .header("content-length", body.len().to_string())
        .header("content-type", "text/plain")
        .body(body)
}

/// The router's answer when the budget ran out (also an HTTP call's timeout).
pub(crate) fn timeout_response() -> Response {
    made_up(504, "upstream request timeout")
}

/// The router's answer when the upstream reset before answering (`Reset`)
/// or no connection could be made (`Refused`); Envoy words it differently
/// once it has retried.
pub(crate) fn failure_response(outcome: Outcome<'_>, retried: bool) -> Response {
    let reason = match outcome {
        Outcome::Refused => "remote connection failure",
        _ => "connection termination",
    };
    let said = if retried {
        "retried and the latest reset reason"
    } else {
        "reset reason"
    };
    made_up(
        503,
        &format!("upstream connect error or disconnect/reset before headers. {said}: {reason}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pairs: &[(&str, &str)]) -> (Policy, Headers) {
        let mut h = Headers::default();
        for (k, v) in pairs {
            h.add(k, v.as_bytes());
        }
        (Policy::take_from(&mut h), h)
    }

    #[test]
    fn reads_and_removes_router_headers_like_envoy() {
        let (p, h) = policy(&[
            ("x-envoy-upstream-rq-timeout-ms", "500"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "200"),
            ("x-envoy-max-retries", "2"),
            ("x-envoy-retry-on", "5xx,reset"),
        ]);
        assert_eq!((p.global_ms, p.per_try_ms, p.max_retries), (500, 200, 2));
        assert!(!h.contains("x-envoy-upstream-rq-timeout-ms") && !h.contains("x-envoy-retry-on"));
        assert_eq!(
            h.get_str("x-envoy-expected-rq-timeout-ms").as_deref(),
            Some("200")
        );
        // A per-try timeout not below the global one is ignored.
        let (p, h) = policy(&[
            ("x-envoy-upstream-rq-timeout-ms", "300"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "300"),
        ]);
        assert_eq!((p.per_try_ms, p.max_retries), (0, 0));
        assert_eq!(
            h.get_str("x-envoy-expected-rq-timeout-ms").as_deref(),
            Some("300")
        );
        // Retry-on without a count retries once.
        assert_eq!(policy(&[("x-envoy-retry-on", "5xx")]).0.max_retries, 1);
        assert_eq!(policy(&[]).0.global_ms, ROUTE_TIMEOUT_MS);
    }

    #[test]
    fn retried_outcomes_follow_the_conditions() {
        let (p, _) = policy(&[("x-envoy-retry-on", "gateway-error")]);
        assert!(p.retries(Outcome::Answered(&Response::new(503))));
        assert!(!p.retries(Outcome::Answered(&Response::new(500))));
        assert!(p.retries(Outcome::PerTryTimeout) && p.retries(Outcome::Reset));
        // Only a connection that never carried the request is a connect failure.
        let (p, _) = policy(&[("x-envoy-retry-on", "connect-failure")]);
        assert!(p.retries(Outcome::Refused));
        assert!(!p.retries(Outcome::Reset) && !p.retries(Outcome::PerTryTimeout));
        let (p, _) = policy(&[("x-envoy-retry-on", "reset")]);
        assert!(p.retries(Outcome::Refused) && p.retries(Outcome::Reset));
        let (p, _) = policy(&[
            ("x-envoy-retry-on", "retriable-status-codes"),
            ("x-envoy-retriable-status-codes", "409"),
        ]);
        assert!(p.retries(Outcome::Answered(&Response::new(409))));
        let (p, _) = policy(&[("x-envoy-retry-grpc-on", "unavailable")]);
        let mut r = Response::new(200);
        r.headers.add("grpc-status", b"14");
        assert!(p.retries(Outcome::Answered(&r)));
    }
}
