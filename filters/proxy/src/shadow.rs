//! proxy-wasm glue for the shadow filter.
//!
//! Mirror mode only names the cluster for Envoy's mirror policy. Compare
//! mode sends the copy itself and compares the answers. The copy is sent
//! from the root context (on its next tick, a millisecond later) so that it
//! outlives the client's stream: Envoy cancels a stream's own calls when the
//! stream ends, and the SDK routes a call's answer to the context that was
//! running when it was sent. The primary response is recorded as it passes,
//! never held.

use crate::chain::{Handle, Policy, Stream};
use crate::host::{self, Counter, Headers, Level};
use crate::stats;
use crate::vm::{Action, ResponseBodyWanted};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use switchyard_core::shadow::{
    classify_answer, status_of, Answer, Captured, Decision, Mode, Shadow,
};
use switchyard_core::HeaderList;

const NAME: &str = "shadow";
/// How often the root looks for comparisons that will never complete.
const SWEEP_MS: u32 = 200;

struct RuleCounters {
    sampled: Counter,
    matched: Counter,
    mismatch_status: Counter,
    mismatch_headers: Counter,
    mismatch_body: Counter,
    body_skipped: Counter,
    shadow_error: Counter,
    shadow_timeout: Counter,
    unsafe_method: Counter,
    dropped: Counter,
}

impl RuleCounters {
    fn define(rule: &str) -> Self {
        let c = |pattern: &str| Counter::define(&stats::name(pattern, &[rule]));
        Self {
            sampled: c(stats::shadow::SAMPLED),
            matched: c(stats::shadow::MATCH),
            mismatch_status: c(stats::shadow::MISMATCH_STATUS),
            mismatch_headers: c(stats::shadow::MISMATCH_HEADERS),
            mismatch_body: c(stats::shadow::MISMATCH_BODY),
            body_skipped: c(stats::shadow::BODY_SKIPPED),
            shadow_error: c(stats::shadow::SHADOW_ERROR),
            shadow_timeout: c(stats::shadow::SHADOW_TIMEOUT),
            unsafe_method: c(stats::shadow::UNSAFE_METHOD),
            dropped: c(stats::shadow::DROPPED),
        }
    }
}

struct Counters {
    rules: Vec<RuleCounters>,
    received: Counter,
    answered_unsafe: Counter,
    header_errors: Counter,
}

/// Header pairs as the host gives them.
type Pairs = Vec<(String, Vec<u8>)>;

/// One comparison in flight.
struct Pair {
    rule: usize,
    started_ms: u64,
    /// `GET /reviews/1`, for the diff log.
    what: String,
    primary: Option<Captured>,
    shadow: Option<Captured>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pair>,
    /// Copies to send on the next tick: (pair id, headers).
    queue: Vec<(u64, Pairs)>,
    calls: HashMap<u32, u64>,
    next_id: u64,
    /// Mismatches logged, per rule.
    logged: Vec<u32>,
    tick_ms: u32,
}

struct Shared {
    shadow: Shadow,
    handle: Handle,
    counters: Counters,
    state: RefCell<State>,
}

pub(crate) struct ShadowRoot {
    handle: Handle,
    shared: Option<Rc<Shared>>,
}

/// The shadow filter's root: this policy alone.
pub fn filter() -> crate::chain::ChainRoot {
    crate::chain::ChainRoot::single(|h| Box::new(ShadowRoot::new(h)))
}

impl ShadowRoot {
    pub(crate) fn new(handle: Handle) -> Self {
        Self {
            handle,
            shared: None,
        }
    }
}

impl Policy for ShadowRoot {
    fn path_normalization(&self) -> Option<switchyard_core::path::PathNormalization> {
        self.shared.as_ref()?.shadow.path_normalization
    }

    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize) {
        if let Some(shared) = &self.shared {
            shared.on_shadow_response(token, num_headers, body_size);
        }
    }

    fn configure(&mut self, config: Option<&[u8]>) -> bool {
        let Some(shadow) =
            crate::configure(NAME, "rules or receiver are", config, Shadow::from_json)
        else {
            return false;
        };
        let counters = Counters {
            rules: shadow
                .rules
                .iter()
                .map(|r| RuleCounters::define(&r.name))
                .collect(),
            received: Counter::define(stats::shadow::RECEIVED),
            answered_unsafe: Counter::define(stats::shadow::ANSWERED_UNSAFE),
            header_errors: Counter::define(stats::shadow::HEADER_ERRORS),
        };
        let state = State {
            logged: vec![0; shadow.rules.len()],
            ..State::default()
        };
        self.shared = Some(Rc::new(Shared {
            shadow,
            handle: self.handle.clone(),
            counters,
            state: RefCell::new(state),
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.send_queued();
            shared.sweep(host::now_ms());
            shared.arm();
        }
    }

    fn create_stream(&self, _context_id: u32) -> Box<dyn Stream> {
        Box::new(ShadowStream {
            shared: self.shared.clone(),
            pair: None,
        })
    }
}

impl Shared {
    fn rule_counters(&self, rule: usize) -> Option<&RuleCounters> {
        self.counters.rules.get(rule)
    }

    /// Ticks every millisecond while copies wait to be sent, every
    /// `SWEEP_MS` while comparisons are open, and not at all otherwise.
    fn arm(&self) {
        let mut state = self.state.borrow_mut();
        let want = if !state.queue.is_empty() {
            1
        } else if !state.pending.is_empty() {
            SWEEP_MS
        } else {
            0
        };
        if want != state.tick_ms && self.handle.set_tick_period_ms(want).is_ok() {
            state.tick_ms = want;
        }
    }

    /// Sends the queued copies; this runs on the root, so they outlive their streams.
    fn send_queued(&self) {
        let queue = std::mem::take(&mut self.state.borrow_mut().queue);
        for (id, headers) in queue {
            let Some(rule) = self.state.borrow().pending.get(&id).map(|p| p.rule) else {
                continue;
            };
            let cluster = &self.shadow.rules[rule].target_cluster;
            // A header value that is not UTF-8 is not copied (as when calls took text).
            let pairs: Vec<(&str, &[u8])> = headers
                .iter()
                .filter(|(_, v)| std::str::from_utf8(v).is_ok())
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let sent =
                host::dispatch_http_call(cluster, &pairs, None, self.shadow.compare.timeout_ms);
            let mut state = self.state.borrow_mut();
            match sent {
                Ok(token) => {
                    state.calls.insert(token, id);
                }
                Err(_) => {
                    state.pending.remove(&id);
                    drop(state);
                    if let Some(c) = self.rule_counters(rule) {
                        c.shadow_error.increment();
                    }
                }
            }
        }
    }

    /// Drops comparisons that can no longer complete (bounded memory).
    fn sweep(&self, now: u64) {
        // Envoy answers every call by its timeout; allow that much again for
        // a slow primary before giving up on a pair.
        let limit = self.shadow.compare.timeout_ms.saturating_mul(2);
        let expired: Vec<(u64, usize, bool)> = self
            .state
            .borrow()
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.started_ms) > limit)
            .map(|(id, p)| (*id, p.rule, p.shadow.is_none()))
            .collect();
        let mut state = self.state.borrow_mut();
        for (id, rule, shadow_missing) in expired {
            state.pending.remove(&id);
            state.calls.retain(|_, v| *v != id);
            if shadow_missing {
                if let Some(c) = self.rule_counters(rule) {
                    c.shadow_timeout.increment();
                }
            }
        }
    }

    fn on_shadow_response(&self, token: u32, num_headers: usize, body_size: usize) {
        let Some(id) = self.state.borrow_mut().calls.remove(&token) else {
            return;
        };
        let Some((rule, started)) = self
            .state
            .borrow()
            .pending
            .get(&id)
            .map(|p| (p.rule, p.started_ms))
        else {
            return;
        };
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            host::header_pairs(Headers::HttpCallResponse).unwrap_or_default()
        };
        let elapsed = host::now_ms().saturating_sub(started);
        let answer = classify_answer(&headers, elapsed, self.shadow.compare.timeout_ms);
        if answer != Answer::Real {
            self.state.borrow_mut().pending.remove(&id);
            if let Some(c) = self.rule_counters(rule) {
                if answer == Answer::Timeout {
                    c.shadow_timeout.increment();
                } else {
                    c.shadow_error.increment();
                }
            }
            self.arm();
            return;
        }
        let mut captured = Captured {
            status: status_of(&headers),
            headers,
            ..Captured::default()
        };
        let limit = self.shadow.compare.max_body_bytes;
        captured.push_body(
            &host::http_call_response_body(body_size.min(limit + 1)),
            limit,
        );
        if let Some(p) = self.state.borrow_mut().pending.get_mut(&id) {
            p.shadow = Some(captured);
        }
        self.finish_if_complete(id);
    }

    /// The primary's response is complete.
    fn primary_done(&self, id: u64, primary: Captured) {
        if let Some(p) = self.state.borrow_mut().pending.get_mut(&id) {
            p.primary = Some(primary);
        }
        self.finish_if_complete(id);
    }

    /// Compares a pair once both sides are in, counts and logs the outcome.
    fn finish_if_complete(&self, id: u64) {
        let pair = {
            let mut state = self.state.borrow_mut();
            match state.pending.get(&id) {
                Some(p) if p.primary.is_some() && p.shadow.is_some() => state.pending.remove(&id),
                _ => None,
            }
        };
        let Some(Pair {
            rule,
            what,
            primary: Some(primary),
            shadow: Some(shadow),
            ..
        }) = pair
        else {
            return;
        };
        let diff = self.shadow.compare(&primary, &shadow);
        if let Some(c) = self.rule_counters(rule) {
            if diff.is_match() {
                c.matched.increment();
            }
            if diff.status.is_some() {
                c.mismatch_status.increment();
            }
            if !diff.headers.is_empty() {
                c.mismatch_headers.increment();
            }
            if diff.body.is_some() {
                c.mismatch_body.increment();
            }
            if diff.body_skipped {
                c.body_skipped.increment();
            }
        }
        if !diff.is_match() {
            let mut state = self.state.borrow_mut();
            if let Some(n) = state
                .logged
                .get_mut(rule)
                .filter(|n| **n < self.shadow.compare.log_diffs)
            {
                *n += 1;
                drop(state);
                host::log(
                    Level::Info,
                    &format!(
                        "{NAME}: {} mismatch on {what}: {}",
                        self.shadow.rules[rule].name,
                        diff.summary()
                    ),
                );
            }
        }
        self.arm();
    }

    /// Registers a comparison and queues its copy; `None` when full.
    fn start_comparison(&self, rule: usize, what: String) -> Option<u64> {
        let headers = crate::request::pairs().ok()?;
        let copy = self.shadow.shadow_request(&headers);
        let mut state = self.state.borrow_mut();
        if state.pending.len() >= self.shadow.compare.max_pending {
            drop(state);
            if let Some(c) = self.rule_counters(rule) {
                c.dropped.increment();
            }
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        state.pending.insert(
            id,
            Pair {
                rule,
                started_ms: host::now_ms(),
                what,
                primary: None,
                shadow: None,
            },
        );
        state.queue.push((id, copy));
        drop(state);
        self.arm();
        Some(id)
    }

    /// The stream ended before its response completed: nothing to compare.
    fn abandon(&self, id: u64) {
        let mut state = self.state.borrow_mut();
        if state.pending.get(&id).is_some_and(|p| p.primary.is_none()) {
            state.pending.remove(&id);
            state.queue.retain(|(q, _)| *q != id);
            state.calls.retain(|_, v| *v != id);
        }
    }
}

struct ShadowStream {
    shared: Option<Rc<Shared>>,
    /// The comparison this stream's response feeds, what is recorded so
    /// far, and the hold on the body callbacks while it records.
    pair: Option<(u64, Captured, ResponseBodyWanted)>,
}

impl ShadowStream {
    /// Shadows a sampled request by its rule's mode.
    fn shadow(&mut self, shared: &Shared, headers: &HeaderList, rule: usize) {
        let s = &shared.shadow;
        let r = &s.rules[rule];
        match r.mode {
            Mode::Mirror => {
                if crate::request::set(s.cluster_header(), r.target_cluster.as_bytes()).is_err() {
                    shared.counters.header_errors.increment();
                }
            }
            Mode::Compare => {
                let method = headers
                    .0
                    .iter()
                    .find(|(k, _)| k == ":method")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let path = crate::request::header(":path")
                    .ok()
                    .flatten()
                    .map(|p| String::from_utf8_lossy(&p).into_owned())
                    .unwrap_or_default();
                self.pair = shared
                    .start_comparison(rule, format!("{method} {path}"))
                    .map(|id| (id, Captured::default(), ResponseBodyWanted::new()));
            }
        }
    }

    /// In front of a shadow target: tag, strip, and refuse writes if configured.
    fn receive(shared: &Shared, headers: &HeaderList) -> Action {
        shared.counters.received.increment();
        let s = &shared.shadow;
        let mut failed = crate::request::set(s.tag_header(), b"true").is_err();
        failed |= !crate::request::remove_each(s.strip_headers().iter().map(String::as_str));
        if failed {
            shared.counters.header_errors.increment();
        }
        if let Some(status) = s.answer_unsafe(headers) {
            shared.counters.answered_unsafe.increment();
            let _ = host::send_local_response(
                u32::from(status),
                "switchyard_shadow_unsafe_method",
                b"shadow requests may not write\n",
                &[("content-type", b"text/plain"), (s.tag_header(), b"true")],
            );
            return Action::Pause;
        }
        Action::Continue
    }
}

impl Stream for ShadowStream {
    fn on_done(&mut self) -> bool {
        if let (Some(shared), Some((id, ..))) = (&self.shared, self.pair.take()) {
            shared.abandon(id);
        }
        true
    }

    fn on_http_request_headers(&mut self, _arrival: crate::chain::Arrival) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let s = &shared.shadow;
        // Owned copies only for a request that is shadowed or received.
        let fetch =
            || crate::fetch_request_headers(s.header_names(), shared.counters.header_errors);
        if s.receiver.is_some()
            && crate::request::with_headers(|h| s.is_shadow(h))
                .unwrap_or_else(|_| s.is_shadow(&fetch()))
        {
            return Self::receive(&shared, &fetch());
        }
        // Only this filter decides what is shadowed and what is a shadow.
        if !crate::request::remove_each([s.cluster_header(), s.tag_header()]) {
            shared.counters.header_errors.increment();
        }
        let draw = crate::next_split_draw();
        let decisions = crate::decide_on_request(
            s.header_names(),
            s.reads_claims(),
            shared.counters.header_errors,
            |req| s.decide(req, draw),
        );
        for decision in [decisions.mirror, decisions.compare] {
            match decision {
                Decision::None | Decision::NotSampled(_) => {}
                Decision::Unsafe(rule) => {
                    if let Some(c) = shared.rule_counters(rule) {
                        c.unsafe_method.increment();
                    }
                }
                Decision::Shadow(rule) => {
                    if let Some(c) = shared.rule_counters(rule) {
                        c.sampled.increment();
                    }
                    self.shadow(&shared, &fetch(), rule);
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some((id, captured, _))) = (self.shared.clone(), self.pair.as_mut())
        else {
            return Action::Continue;
        };
        let headers = host::header_pairs(Headers::Response).unwrap_or_default();
        captured.status = status_of(&headers);
        captured.headers = headers;
        if end_of_stream {
            let id = *id;
            if let Some((_, c, _)) = self.pair.take() {
                shared.primary_done(id, c);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some((id, captured, _))) = (self.shared.clone(), self.pair.as_mut())
        else {
            return Action::Continue;
        };
        let limit = shared.shadow.compare.max_body_bytes;
        if !captured.truncated && body_size > 0 {
            let room = (limit + 1).saturating_sub(captured.body.len());
            captured.push_body(&host::response_body_chunk(body_size.min(room)), limit);
            if body_size > room {
                captured.truncated = true;
            }
        }
        if end_of_stream {
            let id = *id;
            if let Some((_, c, _)) = self.pair.take() {
                shared.primary_done(id, c);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let (Some(shared), Some((id, c, _))) = (self.shared.clone(), self.pair.take()) {
            shared.primary_done(id, c);
        }
        Action::Continue
    }
}
