//! Time budgets: per-rule upstream timeouts and retries, inbound deadlines
//! that cap them and travel upstream, and faults (delay, abort) aimed by the
//! shared `match` block.
//!
//! A request's budget runs from its arrival (by default when Switchyard
//! first saw it, see [`BudgetFrom`]): the smaller of the rule's timeout and
//! the caller's deadline. Time spent since (an earlier policy's I/O) or in
//! an injected delay counts against it, so the
//! router only gets what is left and a delay longer than the budget ends in
//! 504 when the budget does, not when the delay does.
//!
//! The adapter asks [`Timeouts::admit`] once per request and then
//! [`Timeouts::step`] until it gets [`Step::Forward`] or [`Step::Reply`];
//! [`Step::Wait`] names the clock time to ask again.

mod config;
#[cfg(test)]
mod tests;

pub use config::{
    AbortConfig, BudgetFrom, DeadlineConfig, DelayConfig, FaultConfig, RetriesConfig, RuleConfig,
    TimeoutsConfig, RETRY_CONDITIONS,
};

use crate::config::{from_json, ConfigError};
use crate::headers::RequestHeaders;
use crate::matcher::RequestMatch;
use crate::sampling::Sampler;

/// Headers a client may use to steer Envoy's router timeouts and retries;
/// removed from every request so only the policy sets them.
pub const CLIENT_CONTROL_HEADERS: &[&str] = &[
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-rq-timeout-alt-response",
];

/// The controls Envoy's router reads from the request it forwards and removes
/// before the request goes upstream: what the timeouts policy writes reaches
/// the router, never the service. The harness and the JavaScript package model
/// Envoy with this list.
pub const ROUTER_CONSUMED_HEADERS: [&str; 6] = [
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
];

/// The budget when only a caller's deadline applies (no rule matched):
/// Envoy's default route timeout, so a deadline cannot lengthen it.
pub const DEFAULT_DEADLINE_MAX_MS: u64 = 15_000;

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    matcher: RequestMatch,
    pub timeout_ms: u64,
    pub per_try_timeout_ms: Option<u64>,
    pub retries: Option<Retries>,
}

/// A rule's retry policy, rendered as the router's request headers.
#[derive(Debug, PartialEq, Eq)]
pub struct Retries {
    pub attempts: u32,
    /// `x-envoy-retry-on` (HTTP conditions), empty when none.
    pub http_on: String,
    /// `x-envoy-retry-grpc-on` (gRPC status conditions), empty when none.
    pub grpc_on: String,
    /// `x-envoy-retriable-status-codes`, empty when none.
    pub status_codes: String,
}

#[derive(Debug)]
pub struct Fault {
    pub name: String,
    matcher: RequestMatch,
    pub delay: Option<(u64, Sampler)>,
    pub abort: Option<Abort>,
}

#[derive(Debug)]
pub struct Abort {
    pub status: u16,
    pub grpc_status: Option<u32>,
    sampler: Sampler,
}

#[derive(Debug)]
pub struct Deadline {
    pub inbound: Vec<String>,
    pub propagate: Option<String>,
    pub min_remaining_ms: u64,
    pub max_ms: u64,
}

/// A validated timeouts configuration.
#[derive(Debug)]
pub struct Timeouts {
    pub rules: Vec<Rule>,
    pub faults: Vec<Fault>,
    pub deadline: Option<Deadline>,
    sample_by: String,
    header_names: Vec<String>,
    /// The `path_normalization` this configuration set, if it did (the
    /// filter applies it before every policy).
    pub path_normalization: Option<crate::path::PathNormalization>,
    /// Where the budget's clock starts.
    pub budget_from: BudgetFrom,
}

/// A caller's inbound deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Absent,
    Ms(u64),
    /// Present but unreadable (ignored, and counted, by the filter).
    Malformed,
}

/// One request's admission: what the policy decided when its headers came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Index of the first matching rule.
    pub rule: Option<usize>,
    /// Index of the first matching fault.
    pub fault: Option<usize>,
    /// The caller's deadline as read.
    pub budget: Budget,
    /// The caller's deadline is shorter than the rule's timeout.
    pub capped: bool,
    /// Clock time (ms) the budget runs out, if there is one.
    pub deadline_at_ms: Option<u64>,
    /// Clock time the injected delay ends, if sampled.
    pub delay_until_ms: Option<u64>,
    /// The fault's abort was sampled (applied once any delay is over).
    pub abort: bool,
    pub grpc: bool,
    /// The caller sent a header the upstream reads as its deadline (the
    /// `propagate` header, or `grpc-timeout` on a gRPC request).
    pub carried_deadline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Pause the request and call `step` again at this clock time (ms).
    Wait(u64),
    /// Answer locally.
    Reply(Reply),
    /// Let the request go on, with these router headers.
    Forward(Forward),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    DeadlineExceeded,
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub status: u16,
    /// For gRPC requests; `None` lets the proxy map the HTTP status.
    pub grpc_status: Option<u32>,
    pub body: &'static str,
    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`).
    pub details: &'static str,
}

/// What the router is told about a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// `x-envoy-upstream-rq-timeout-ms`: the budget left now.
    pub timeout_ms: Option<u64>,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`, only when below `timeout_ms`
    /// (Envoy ignores it otherwise).
    pub per_try_timeout_ms: Option<u64>,
    /// The budget the upstream is told (per try when retries are bounded).
    pub propagate_ms: Option<u64>,
}

const DEADLINE_EXCEEDED: Reply = Reply {
    kind: ReplyKind::DeadlineExceeded,
    status: 504,
    grpc_status: Some(4),
    body: "deadline exceeded",
    details: "switchyard_timeouts_deadline_exceeded",
};

impl Timeouts {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(&from_json::<TimeoutsConfig>(bytes)?)
    }

    pub fn compile(config: &TimeoutsConfig) -> Result<Self, ConfigError> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| config::compile_rule(r, &format!("rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let faults = config
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| config::compile_fault(f, &format!("faults[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = config
            .deadline
            .as_ref()
            .map(config::compile_deadline)
            .transpose()?;
        let sample_by = config::compile_sample_by(config.sample_by.as_deref())?;
        let mut header_names: Vec<String> = Vec::new();
        let mut add = |name: &str| {
            if !header_names.iter().any(|n| n == name) {
                header_names.push(name.to_owned());
            }
        };
        for m in rules
            .iter()
            .map(|r| &r.matcher)
            .chain(faults.iter().map(|f| &f.matcher))
        {
            m.header_names().for_each(&mut add);
        }
        if let Some(d) = &deadline {
            d.inbound.iter().for_each(|h| add(h));
        }
        if faults.iter().any(Fault::samples) {
            add(&sample_by);
        }
        add("content-type");
        Ok(Self {
            path_normalization: config.path_normalization,
            budget_from: config.budget_from,
            rules,
            faults,
            deadline,
            sample_by,
            header_names,
        })
    }

    /// Every request header a decision reads, so the adapter fetches only these.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// True when a rule or fault matches on verified claims, so the host
    /// fetches them only then.
    pub fn reads_claims(&self) -> bool {
        self.rules.iter().any(|r| r.matcher.reads_claims())
            || self.faults.iter().any(|f| f.matcher.reads_claims())
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

    /// Decides a request's rule, budget and fault once its headers are in.
    /// `arrived_ms` is when the proxy received it (clock ms), `now_ms` the
    /// clock now, and `random` a fresh draw for requests without a sampling key.
    pub fn admit(
        &self,
        req: &(impl RequestHeaders + ?Sized),
        arrived_ms: u64,
        now_ms: u64,
        random: u64,
    ) -> Admission {
        let rule = self.rules.iter().position(|r| r.matcher.matches(req));
        let budget = self.inbound_budget_ms(req);
        let rule_ms = rule.map(|r| self.rules[r].timeout_ms);
        let (limit_ms, capped) = match (rule_ms, budget, &self.deadline) {
            (Some(r), Budget::Ms(b), _) => (Some(r.min(b)), b < r),
            (None, Budget::Ms(b), Some(d)) => (Some(b.min(d.max_ms)), false),
            (r, _, _) => (r, false),
        };
        let fault = self.faults.iter().position(|f| f.matcher.matches(req));
        let grpc = req.header("content-type").is_some_and(is_grpc);
        let (delay_until_ms, abort) = match fault.map(|f| &self.faults[f]) {
            Some(f) => {
                // Read only for a request a fault is aimed at.
                let key = req.header(&self.sample_by);
                (
                    f.delay
                        .as_ref()
                        .filter(|(_, s)| s.sampled(key, random))
                        .map(|(ms, _)| now_ms.saturating_add(*ms)),
                    f.abort
                        .as_ref()
                        .is_some_and(|a| a.sampler.sampled(key, random.rotate_left(32))),
                )
            }
            None => (None, false),
        };
        Admission {
            rule,
            fault,
            budget,
            capped,
            deadline_at_ms: limit_ms.map(|l| arrived_ms.min(now_ms).saturating_add(l)),
            delay_until_ms,
            abort,
            grpc,
            carried_deadline: self.deadline.as_ref().is_some_and(|d| {
                d.propagate
                    .as_deref()
                    .is_some_and(|p| req.header(p).is_some())
                    || (grpc && req.header("grpc-timeout").is_some())
            }),
        }
    }

    /// The next thing to do with an admitted request at clock time `now_ms`.
    pub fn step(&self, adm: &Admission, now_ms: u64) -> Step {
        // Below this much budget the upstream cannot usefully answer; and a
        // router timeout of 0 would mean "none" to Envoy.
        let floor = self
            .deadline
            .as_ref()
            .map_or(1, |d| d.min_remaining_ms.max(1));
        let remaining = adm.deadline_at_ms.map(|d| d.saturating_sub(now_ms));
        if remaining.is_some_and(|r| r < floor) {
            return Step::Reply(DEADLINE_EXCEEDED);
        }
        if let Some(until) = adm.delay_until_ms.filter(|u| now_ms < *u) {
            // Wake at the delay's end or when the budget falls below the floor.
            let expiry = adm
                .deadline_at_ms
                .map(|d| d.saturating_add(1).saturating_sub(floor));
            return Step::Wait(expiry.map_or(until, |e| e.min(until)));
        }
        if adm.abort {
            if let Some(a) = adm
                .fault
                .and_then(|f| self.faults.get(f))
                .and_then(|f| f.abort.as_ref())
            {
                return Step::Reply(Reply {
                    kind: ReplyKind::Abort,
                    status: a.status,
                    grpc_status: a.grpc_status,
                    body: "fault injected",
                    details: "switchyard_timeouts_fault_abort",
                });
            }
        }
        let per_try = adm
            .rule
            .and_then(|r| self.rules[r].per_try_timeout_ms)
            .filter(|p| remaining.is_none_or(|r| *p < r));
        Step::Forward(Forward {
            timeout_ms: remaining,
            per_try_timeout_ms: per_try,
            propagate_ms: match (per_try, remaining) {
                (Some(p), _) => Some(p),
                (None, r) => r,
            },
        })
    }

    pub fn sample_by(&self) -> &str {
        &self.sample_by
    }

    /// The request headers a forwarded request gets: the router's timeout
    /// and retry controls, then the propagated deadline. Every
    /// [`CLIENT_CONTROL_HEADERS`] entry not listed here must be removed.
    pub fn router_headers(&self, adm: &Admission, fwd: &Forward) -> Vec<(&str, String)> {
        let mut out: Vec<(&str, String)> = Vec::with_capacity(8);
        self.each_router_header(adm, fwd, |name, value| {
            out.push((name, String::from_utf8_lossy(value).into_owned()));
        });
        out
    }

    /// [`router_headers`](Self::router_headers) one at a time, numbers
    /// written on the stack: the proxy adapter sets each as it comes, with
    /// no allocation a request.
    pub fn each_router_header<'s>(
        &'s self,
        adm: &Admission,
        fwd: &Forward,
        mut write: impl FnMut(&'s str, &[u8]),
    ) {
        let mut number = itoa::Buffer::new();
        if let Some(ms) = fwd.timeout_ms {
            write(
                "x-envoy-upstream-rq-timeout-ms",
                number.format(ms).as_bytes(),
            );
        }
        if let Some(ms) = fwd.per_try_timeout_ms {
            write(
                "x-envoy-upstream-rq-per-try-timeout-ms",
                number.format(ms).as_bytes(),
            );
        }
        if let Some(rt) = adm
            .rule
            .and_then(|r| self.rules.get(r))
            .and_then(|r| r.retries.as_ref())
        {
            write("x-envoy-max-retries", number.format(rt.attempts).as_bytes());
            for (name, value) in [
                ("x-envoy-retry-on", &rt.http_on),
                ("x-envoy-retry-grpc-on", &rt.grpc_on),
                ("x-envoy-retriable-status-codes", &rt.status_codes),
            ] {
                if !value.is_empty() {
                    write(name, value.as_bytes());
                }
            }
        }
        if let (Some(d), Some(ms)) = (&self.deadline, fwd.propagate_ms) {
            if let Some(p) = &d.propagate {
                write(p.as_str(), number.format(ms).as_bytes());
            }
            if adm.grpc {
                write("grpc-timeout", grpc_timeout_value(ms).as_bytes());
            }
        }
    }

    /// The request headers a forwarded request must lose, given what
    /// [`router_headers`](Self::router_headers) wrote: every router control
    /// a client sent that the policy did not set, and a deadline header the
    /// caller sent that the policy did not vouch for (unreadable, or never
    /// read), so the upstream only ever sees a budget the policy set.
    pub fn removed_headers<'s>(
        &'s self,
        adm: &Admission,
        written: &'s [(&'s str, String)],
    ) -> impl Iterator<Item = &'s str> + Clone + 's {
        self.removal_candidates(adm)
            .filter(move |name| !written.iter().any(|(n, _)| n == name))
    }

    /// Every name [`removal_candidates`](Self::removal_candidates) may give,
    /// whatever the request: the proxy adapter tests a request for all of
    /// them at once.
    pub fn removable_headers(&self) -> impl Iterator<Item = &str> {
        let deadline = self.deadline.as_ref().into_iter().flat_map(|d| {
            d.propagate
                .as_deref()
                .into_iter()
                .chain(std::iter::once("grpc-timeout"))
        });
        CLIENT_CONTROL_HEADERS.iter().copied().chain(deadline)
    }

    /// Every header [`removed_headers`](Self::removed_headers) may remove,
    /// before the ones written are spared: the router controls, and the
    /// deadline headers the policy did not vouch for. The proxy adapter
    /// removes these before it writes, so it has nothing to spare.
    pub fn removal_candidates<'s>(
        &'s self,
        adm: &Admission,
    ) -> impl Iterator<Item = &'s str> + Clone + 's {
        // Copied out: the iterator must not borrow `adm`.
        let (carried, grpc) = (adm.carried_deadline, adm.grpc);
        let deadline = self
            .deadline
            .as_ref()
            .filter(|_| carried)
            .into_iter()
            .flat_map(move |d| {
                d.propagate
                    .as_deref()
                    .into_iter()
                    .chain(grpc.then_some("grpc-timeout"))
            });
        CLIENT_CONTROL_HEADERS.iter().copied().chain(deadline)
    }
}

impl Rule {
    /// Which requests this rule applies to (for explanations).
    pub fn matcher(&self) -> &RequestMatch {
        &self.matcher
    }
}

impl Fault {
    /// Which requests this fault is aimed at (for explanations).
    pub fn matcher(&self) -> &RequestMatch {
        &self.matcher
    }

    fn samples(&self) -> bool {
        self.delay.as_ref().is_some_and(|(_, s)| !s.always())
            || self.abort.as_ref().is_some_and(|a| !a.sampler.always())
    }
}

/// `content-type: application/grpc` and its `+proto`/`+json` variants.
pub fn is_grpc(content_type: &[u8]) -> bool {
    content_type
        .strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// A budget as a `grpc-timeout` value (at most 8 digits, as gRPC requires).
pub fn grpc_timeout_value(ms: u64) -> String {
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", (ms / 1000).min(99_999_999))
    }
}

fn parse_ms(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
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
