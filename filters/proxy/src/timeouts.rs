//! proxy-wasm glue for the timeouts filter: strip client-sent router
//! controls, admit the request through the core, and either answer it, hold
//! it (fault delay) or hand the router its budget and retry policy.
//!
//! Held requests are resumed by the root: its tick is armed for the earliest
//! wake-up only while something waits, so an idle filter never ticks.

use crate::chain::{Arrival, Handle, Policy, Stream};
use crate::host::{self, Counter, Level};
use crate::stats;
use crate::vm::Action;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use switchyard_core::timeouts::{
    Admission, Budget, BudgetFrom, Forward, Reply, ReplyKind, Step, Timeouts,
};

const NAME: &str = "timeouts";

struct RuleCounters {
    timeout_set: Counter,
    deadline_capped: Counter,
    deadline_exceeded: Counter,
}

struct Counters {
    /// One per rule, then one for requests no rule matched.
    rules: Vec<RuleCounters>,
    delayed: Vec<Counter>,
    aborted: Vec<Counter>,
    deadline_malformed: Counter,
    header_errors: Counter,
}

impl Counters {
    fn define(t: &Timeouts) -> Self {
        let rule = |patterns: [&str; 3], name: &[&str]| {
            let [set, capped, exceeded] = patterns.map(|p| Counter::define(&stats::name(p, name)));
            RuleCounters {
                timeout_set: set,
                deadline_capped: capped,
                deadline_exceeded: exceeded,
            }
        };
        let fault = |pattern: &str| -> Vec<Counter> {
            t.faults
                .iter()
                .map(|f| Counter::define(&stats::name(pattern, &[&f.name])))
                .collect()
        };
        Self {
            rules: t
                .rules
                .iter()
                .map(|r| rule(stats::timeouts::RULE, &[&r.name]))
                .chain([rule(stats::timeouts::NO_RULE, &[])])
                .collect(),
            delayed: fault(stats::timeouts::FAULT_DELAYED),
            aborted: fault(stats::timeouts::FAULT_ABORTED),
            deadline_malformed: Counter::define(stats::timeouts::DEADLINE_MALFORMED),
            header_errors: Counter::define(stats::timeouts::HEADER_ERRORS),
        }
    }

    fn rule(&self, adm: &Admission) -> Option<&RuleCounters> {
        self.rules
            .get(adm.rule.unwrap_or(self.rules.len().saturating_sub(1)))
    }
}

/// A request held by a fault delay until `wake_ms`.
struct Held {
    context_id: u32,
    admission: Admission,
    wake_ms: u64,
}

struct Shared {
    timeouts: Timeouts,
    handle: Handle,
    counters: Counters,
    held: RefCell<Vec<Held>>,
    /// [`crate::request::name_bits`] of every header a forwarded request
    /// may have to lose: most requests have none, known with one test.
    removable: u64,
    /// The clock time the root's tick is armed for, if it is.
    armed_for: Cell<Option<u64>>,
}

pub(crate) struct TimeoutsRoot {
    handle: Handle,
    shared: Option<Rc<Shared>>,
}

/// The timeouts filter's root: this policy alone.
pub fn filter() -> crate::chain::ChainRoot {
    crate::chain::ChainRoot::single(|h| Box::new(TimeoutsRoot::new(h)))
}

impl TimeoutsRoot {
    pub(crate) fn new(handle: Handle) -> Self {
        Self {
            handle,
            shared: None,
        }
    }
}

impl Policy for TimeoutsRoot {
    fn path_normalization(&self) -> Option<switchyard_core::path::PathNormalization> {
        self.shared.as_ref()?.timeouts.path_normalization
    }

    fn wants_first_sight(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.timeouts.budget_from == BudgetFrom::Switchyard)
    }

    fn configure(&mut self, config: Option<&[u8]>) -> bool {
        let Some(timeouts) = crate::configure(
            NAME,
            "rules, deadline or faults are",
            config,
            Timeouts::from_json,
        ) else {
            return false;
        };
        self.shared = Some(Rc::new(Shared {
            counters: Counters::define(&timeouts),
            removable: crate::request::name_bits(timeouts.removable_headers()),
            timeouts,
            handle: self.handle.clone(),
            held: RefCell::new(Vec::new()),
            armed_for: Cell::new(None),
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.wake_due(host::now_ms());
        }
    }

    fn create_stream(&self, context_id: u32) -> Box<dyn Stream> {
        Box::new(TimeoutsStream {
            shared: self.shared.clone(),
            context_id,
        })
    }
}

impl Shared {
    /// Carries out `step` for the stream that is the effective context.
    fn apply(&self, adm: &Admission, step: Step, context_id: u32) -> Action {
        match step {
            Step::Wait(wake_ms) => {
                self.held.borrow_mut().push(Held {
                    context_id,
                    admission: adm.clone(),
                    wake_ms,
                });
                self.arm(host::now_ms(), false);
                Action::Pause
            }
            Step::Reply(reply) => {
                self.reply(adm, &reply);
                Action::Pause
            }
            Step::Forward(fwd) => {
                self.forward(adm, &fwd);
                Action::Continue
            }
        }
    }

    fn reply(&self, adm: &Admission, reply: &Reply) {
        match reply.kind {
            ReplyKind::DeadlineExceeded => {
                if let Some(c) = self.counters.rule(adm) {
                    c.deadline_exceeded.increment();
                }
            }
            ReplyKind::Abort => {
                if let Some(c) = adm.fault.and_then(|f| self.counters.aborted.get(f)) {
                    c.increment();
                }
            }
        }
        let fault = adm
            .fault
            .and_then(|f| self.timeouts.faults.get(f))
            .filter(|_| reply.kind == ReplyKind::Abort);
        let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"text/plain")];
        if let Some(f) = fault {
            headers.push(("x-switchyard-fault", f.name.as_bytes()));
        }
        // gRPC statuses only mean something to gRPC callers; Envoy maps the
        // HTTP status for them when none is given.
        let grpc_status = reply.grpc_status.filter(|_| adm.grpc);
        if host::send_local_response_grpc(
            u32::from(reply.status),
            reply.details,
            reply.body.as_bytes(),
            &headers,
            grpc_status,
        )
        .is_err()
        {
            host::log(
                Level::Error,
                &format!("{NAME}: could not send the local response"),
            );
        }
    }

    /// Removes every router control a client sent, then writes the router's
    /// timeout and retry headers and the propagated deadline, so only the
    /// policy sets them. (Done here, not on arrival: a request answered
    /// locally never needs it.)
    fn forward(&self, adm: &Admission, fwd: &Forward) {
        let mut failed = false;
        // Client-sent controls first: a header the policy then writes is
        // replaced anyway, so nothing needs sparing, and a request that sent
        // none (most) is known by one mask test.
        if crate::request::may_have_any(self.removable) {
            failed |= !crate::request::remove_each(self.timeouts.removal_candidates(adm));
        }
        self.timeouts.each_router_header(adm, fwd, |name, value| {
            failed |= crate::request::set_last(name, value).is_err();
        });
        if failed {
            self.counters.header_errors.increment();
        }
        if let Some(c) = self.counters.rule(adm) {
            if fwd.timeout_ms.is_some() {
                c.timeout_set.increment();
            }
            if adm.capped {
                c.deadline_capped.increment();
            }
        }
    }

    /// Arms the root's tick for the earliest held request, or stops it.
    /// `force` re-arms even for the same wake-up (the tick just fired, and
    /// Envoy would repeat its old period).
    fn arm(&self, now: u64, force: bool) {
        let next = self.held.borrow().iter().map(|h| h.wake_ms).min();
        if next == self.armed_for.get() && !force {
            return;
        }
        let period = next.map_or(0, |n| n.saturating_sub(now).clamp(1, u64::from(u32::MAX)));
        if self.handle.set_tick_period_ms(period as u32).is_err() {
            host::log(
                Level::Error,
                &format!("{NAME}: the host refused a tick period; delayed requests will wait"),
            );
        }
        self.armed_for.set(next);
    }

    /// Steps every held request that is due.
    fn wake_due(&self, now: u64) {
        let due: Vec<Held> = {
            let mut held = self.held.borrow_mut();
            let (due, rest) = std::mem::take(&mut *held)
                .into_iter()
                .partition(|h| h.wake_ms <= now);
            *held = rest;
            due
        };
        for h in due {
            if host::set_effective_context(h.context_id).is_err() {
                continue; // The stream is gone.
            }
            let step = self.timeouts.step(&h.admission, now);
            if let Action::Continue = self.apply(&h.admission, step, h.context_id) {
                self.handle.resume(h.context_id);
            }
        }
        self.arm(now, true);
    }

    /// A stream ended; it may have been held (a client gave up during a delay).
    fn forget(&self, context_id: u32) {
        let mut held = self.held.borrow_mut();
        let before = held.len();
        held.retain(|h| h.context_id != context_id);
        let changed = held.len() != before;
        drop(held);
        if changed {
            self.arm(host::now_ms(), false);
        }
    }
}

struct TimeoutsStream {
    shared: Option<Rc<Shared>>,
    context_id: u32,
}

impl Stream for TimeoutsStream {
    fn on_done(&mut self) -> bool {
        if let Some(shared) = &self.shared {
            shared.forget(self.context_id);
        }
        true
    }

    fn on_http_request_headers(&mut self, arrival: Arrival) -> Action {
        let Some(shared) = self.shared.as_deref() else {
            return Action::Continue;
        };
        let t = &shared.timeouts;
        let now_ns = host::now_ns();
        let now = now_ns / 1_000_000;
        let started_ns = match t.budget_from {
            BudgetFrom::Switchyard => arrival.first_seen_ns,
            BudgetFrom::EnvoyArrival => host::request_start_ns(),
        };
        // Whole milliseconds spent since arrival, from nanoseconds so that
        // rounding never charges a fresh request a millisecond. A start time
        // an hour off is not this request's: count from now.
        let spent_ms = started_ns
            .and_then(|start| now_ns.checked_sub(start))
            .map(|ns| ns / 1_000_000)
            .filter(|ms| *ms < 3_600_000)
            .unwrap_or(0);
        let arrived = now.saturating_sub(spent_ms);
        let draw = crate::next_split_draw();
        let adm = crate::decide_on_request(
            t.header_names(),
            t.reads_claims(),
            shared.counters.header_errors,
            |req| t.admit(req, arrived, now, draw),
        );
        if adm.budget == Budget::Malformed {
            shared.counters.deadline_malformed.increment();
        }
        if adm.delay_until_ms.is_some() {
            if let Some(c) = adm.fault.and_then(|f| shared.counters.delayed.get(f)) {
                c.increment();
            }
        }
        let step = t.step(&adm, now);
        shared.apply(&adm, step, self.context_id)
    }
}
