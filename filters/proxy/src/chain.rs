//! The root and stream every Switchyard filter runs: one or more policies in
//! chain order (auth → router → timeouts → shadow) on one VM.
//!
//! A single filter is a chain of one policy, so the single filters and
//! `switchyard.wasm` share every line of adapter code as well as the core.
//! The chain owns the two things a host gives each root only once:
//! - the tick: each policy asks for its own period; the root's one timer is
//!   armed for whichever policy is due first;
//! - stream resumption: a policy that paused a request (auth waiting for
//!   keys, a fault delay) resumes it through [`Handle::resume`], and the
//!   chain runs the later policies before the request goes on to Envoy.
//!
//! HTTP-call answers come to the context that sent the call; the chain offers
//! each to its policies, and each ignores tokens it did not issue.

use crate::counter_batch;
use crate::host::{self, Level};
use crate::path::PathGuard;
use crate::vm::Action;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use switchyard_core::path::PathNormalization;
use switchyard_core::ticks::Ticks;

/// One policy's root, as the chain drives it.
pub(crate) trait Policy {
    /// Compiles `config` (absent for a single filter given none); on failure
    /// logs one line naming the field and returns false.
    fn configure(&mut self, config: Option<&[u8]>) -> bool;
    /// The `path_normalization` its configuration set, if it did.
    fn path_normalization(&self) -> Option<PathNormalization> {
        None
    }
    /// Whether its streams need [`Arrival::first_seen_ns`] (asked once,
    /// after `configure`): the clock is read per request only if one does.
    fn wants_first_sight(&self) -> bool {
        false
    }
    fn on_tick(&mut self) {}
    /// An answer to an HTTP call sent from the root; ignore unknown tokens.
    fn on_http_call_response(&mut self, _token: u32, _num_headers: usize, _body_size: usize) {}
    fn create_stream(&self, context_id: u32) -> Box<dyn Stream>;
}

/// What the chain knows of a request's arrival, the same for every policy
/// however long an earlier one held the request.
#[derive(Clone, Copy, Default)]
pub(crate) struct Arrival {
    /// The host clock (ns) when the chain first saw the request's headers,
    /// if a policy asked for it.
    pub(crate) first_seen_ns: Option<u64>,
}

/// One policy's part of a stream: the callbacks policies use.
pub(crate) trait Stream {
    fn on_http_request_headers(&mut self, arrival: Arrival) -> Action;
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        Action::Continue
    }
    /// An answer to an HTTP call sent from this stream; ignore unknown tokens.
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
    }
    fn on_done(&mut self) -> bool {
        true
    }
}

/// Builds one policy's root. A single filter names only its own, so the
/// others are not linked into it.
pub(crate) type NewPolicy = fn(Handle) -> Box<dyn Policy>;

/// What a policy may ask of its chain.
#[derive(Clone)]
pub(crate) struct Handle {
    shared: Rc<Shared>,
    slot: usize,
}

impl Handle {
    /// Calls the policy's `on_tick` every `period_ms` from now; 0 stops.
    pub(crate) fn set_tick_period_ms(&self, period_ms: u32) -> Result<(), host::Status> {
        let now = host::now_ms();
        let mut ticks = self.shared.ticks.borrow_mut();
        ticks.ask(self.slot, u64::from(period_ms), now);
        if ticks.in_tick() {
            return Ok(()); // Armed once, when the tick ends.
        }
        arm(&mut ticks, now)
    }

    /// True when later sections of `switchyard.wasm` run on this policy's
    /// streams (in the same VM and stream context as it).
    pub(crate) fn has_later_sections(&self) -> bool {
        self.shared.in_chain && self.slot + 1 < self.shared.sections
    }

    /// Lets the paused request `context_id` go on past this policy once the
    /// current host callback is done (through the later policies first).
    pub(crate) fn resume(&self, context_id: u32) {
        self.shared
            .resumes
            .borrow_mut()
            .push((context_id, self.slot));
    }
}

/// Sets the host timer as `ticks` plans, and records it once the host took it.
fn arm(ticks: &mut Ticks, now: u64) -> Result<(), host::Status> {
    if let Some(arm) = ticks.plan(now) {
        host::set_tick_period_ms(arm.period_ms)?;
        ticks.armed(arm);
    }
    Ok(())
}

/// The stream state a resumption needs.
struct Stages {
    streams: Vec<Box<dyn Stream>>,
    /// The policy holding the request, if one is.
    paused_at: Option<usize>,
    arrival: Arrival,
}

#[derive(Default)]
struct Shared {
    /// `switchyard.wasm` (sections), not a single filter.
    in_chain: bool,
    /// How many policies the chain runs.
    sections: usize,
    ticks: RefCell<Ticks>,
    /// A refused tick period is logged once.
    tick_refusal_logged: Cell<bool>,
    /// (stream, policy) pairs to resume when the current callback ends.
    resumes: RefCell<Vec<(u32, usize)>>,
    /// Streams a policy holds. (Few at a time, and a Vec links far less
    /// code than a HashMap into every filter.)
    paused: RefCell<Vec<(u32, Rc<RefCell<Stages>>)>>,
}

impl Shared {
    /// Runs request-header callbacks from policy `from` on; a pause parks the
    /// stream until its policy resumes it.
    fn run_request_headers(
        &self,
        context_id: u32,
        stages: &Rc<RefCell<Stages>>,
        from: usize,
    ) -> Action {
        let Ok(mut st) = stages.try_borrow_mut() else {
            return Action::Continue;
        };
        let arrival = st.arrival;
        let last = st.streams.len().saturating_sub(1);
        for i in from..st.streams.len() {
            crate::request::read_after(i < last);
            let action = st.streams[i].on_http_request_headers(arrival);
            crate::request::read_after(true);
            if let Action::Pause = action {
                st.paused_at = Some(i);
                drop(st);
                self.paused.borrow_mut().push((context_id, stages.clone()));
                return Action::Pause;
            }
        }
        st.paused_at = None;
        Action::Continue
    }

    fn unpark(&self, context_id: u32) -> Option<Rc<RefCell<Stages>>> {
        let mut paused = self.paused.borrow_mut();
        let at = paused.iter().position(|(id, _)| *id == context_id)?;
        Some(paused.swap_remove(at).1)
    }

    /// Carries out the resumptions policies asked for during this callback.
    fn drain_resumes(&self) {
        loop {
            let next = {
                let mut resumes = self.resumes.borrow_mut();
                (!resumes.is_empty()).then(|| resumes.remove(0))
            };
            let Some((context_id, slot)) = next else {
                return;
            };
            let Some(stages) = self.unpark(context_id) else {
                continue; // Gone, or not paused.
            };
            let held_here = stages
                .try_borrow()
                .is_ok_and(|st| st.paused_at == Some(slot));
            if !held_here {
                self.paused.borrow_mut().push((context_id, stages));
                continue;
            }
            if host::set_effective_context(context_id).is_err() {
                continue;
            }
            if let Action::Continue = self.run_request_headers(context_id, &stages, slot + 1) {
                let _ = host::continue_request();
            }
        }
    }
}

/// The policies to build, in chain order, each with its section name and
/// configuration.
pub(crate) type Plan = Vec<(NewPolicy, &'static str, Option<Vec<u8>>)>;

/// A plan and the chain's own top-level settings.
pub(crate) struct ChainPlan {
    pub(crate) plan: Plan,
    /// The top level's `path_normalization`, if set.
    pub(crate) path_normalization: Option<PathNormalization>,
    /// `stats_flush_ms`: 0 counts at each increment.
    pub(crate) stats_flush_ms: u32,
}

/// Which configuration the root reads.
#[derive(Clone, Copy)]
enum Mode {
    /// A single filter: the whole configuration is this policy's.
    Single(NewPolicy),
    /// `switchyard.wasm`: `{"auth": …, "router": …, "timeouts": …, "shadow": …}`.
    /// (A function pointer, so that single filters do not link every policy.)
    Sections(fn(Option<&[u8]>) -> Option<ChainPlan>),
}

pub struct ChainRoot {
    mode: Mode,
    shared: Rc<Shared>,
    policies: Vec<Box<dyn Policy>>,
    configured: Cell<bool>,
    /// Run before the first policy of every request.
    path: Option<Rc<PathGuard>>,
    /// Whether a policy wants [`Arrival::first_seen_ns`].
    stamps_arrival: bool,
}

impl ChainRoot {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            shared: Rc::default(),
            policies: Vec::new(),
            configured: Cell::new(false),
            path: None,
            stamps_arrival: false,
        }
    }

    /// A single filter running one policy alone.
    pub(crate) fn single(policy: NewPolicy) -> Self {
        Self::new(Mode::Single(policy))
    }

    /// `switchyard.wasm`: the sections `plan` finds in the configuration,
    /// in chain order (see [`crate::sections`]).
    pub(crate) fn sections(plan: fn(Option<&[u8]>) -> Option<ChainPlan>) -> Self {
        Self::new(Mode::Sections(plan))
    }

    /// Builds the policies and settles the one path setting they share;
    /// false (after one log line) when any configuration is invalid.
    fn build(&mut self, planned: ChainPlan) -> bool {
        let ChainPlan {
            plan: sections,
            path_normalization: top,
            stats_flush_ms,
        } = planned;
        self.shared = Rc::new(Shared {
            in_chain: matches!(self.mode, Mode::Sections(_)),
            sections: sections.len(),
            ..Shared::default()
        });
        // One tick slot per policy, and the counter flush's after them.
        *self.shared.ticks.borrow_mut() = Ticks::new(sections.len() + 1);
        let _batching = counter_batch::Defining::batched(stats_flush_ms > 0);
        self.policies.clear();
        let mut names = Vec::with_capacity(sections.len());
        for (slot, (section, name, config)) in sections.into_iter().enumerate() {
            let handle = Handle {
                shared: self.shared.clone(),
                slot,
            };
            let mut policy = section(handle);
            if !policy.configure(config.as_deref()) {
                return false;
            }
            names.push(name);
            self.policies.push(policy);
        }
        self.stamps_arrival = self.policies.iter().any(|p| p.wants_first_sight());
        let declared = names
            .iter()
            .zip(&self.policies)
            .map(|(name, p)| (*name, p.path_normalization()));
        match PathNormalization::settle(top, declared) {
            Ok(path) => {
                self.path = (!self.policies.is_empty()).then(|| Rc::new(PathGuard::new(path)));
                self.flush_every(stats_flush_ms);
                true
            }
            Err(err) => {
                host::log(
                    Level::Error,
                    &format!("switchyard: invalid configuration: {err}"),
                );
                false
            }
        }
    }

    /// Asks for the counter flush's tick, if counters are batched.
    fn flush_every(&self, period_ms: u32) {
        if period_ms == 0 {
            return;
        }
        let now = host::now_ms();
        let mut ticks = self.shared.ticks.borrow_mut();
        ticks.ask(self.policies.len(), u64::from(period_ms), now);
        if arm(&mut ticks, now).is_err() {
            host::log(
                Level::Error,
                "switchyard: the host refused a tick period; counters wait for the next one",
            );
        }
    }
}

/// The root's callbacks, from [`crate::vm`].
impl ChainRoot {
    pub(crate) fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        for p in &mut self.policies {
            p.on_http_call_response(token, num_headers, body_size);
        }
        self.shared.drain_resumes();
    }

    pub(crate) fn on_configure(&mut self) -> bool {
        let config = host::plugin_configuration().ok().flatten();
        let planned = match self.mode {
            Mode::Single(new) => ChainPlan {
                plan: vec![(new, "", config.filter(|c| !c.is_empty()))],
                path_normalization: None,
                stats_flush_ms: 0,
            },
            Mode::Sections(plan) => match plan(config.as_deref()) {
                Some(planned) => planned,
                None => return false,
            },
        };
        let ok = self.build(planned);
        self.configured.set(ok);
        ok
    }

    pub(crate) fn on_tick(&mut self) {
        let now = host::now_ms();
        let due = self.shared.ticks.borrow_mut().fire(now);
        for i in due {
            match self.policies.get_mut(i) {
                Some(p) => p.on_tick(),
                None => counter_batch::flush(), // the slot after the policies'
            }
        }
        let refused = {
            let mut ticks = self.shared.ticks.borrow_mut();
            ticks.end_tick(now);
            arm(&mut ticks, now).is_err()
        };
        if refused && !self.shared.tick_refusal_logged.replace(true) {
            host::log(
                Level::Error,
                "switchyard: the host refused a tick period; timers may fire late",
            );
        }
        self.shared.drain_resumes();
    }

    pub(crate) fn create_stream(&self, context_id: u32) -> ChainStream {
        let streams = if self.configured.get() {
            self.policies
                .iter()
                .map(|p| p.create_stream(context_id))
                .collect()
        } else {
            Vec::new()
        };
        ChainStream {
            shared: self.shared.clone(),
            path: self.path.clone(),
            context_id,
            stamps_arrival: self.stamps_arrival,
            stages: Rc::new(RefCell::new(Stages {
                streams,
                paused_at: None,
                arrival: Arrival::default(),
            })),
        }
    }
}

pub struct ChainStream {
    shared: Rc<Shared>,
    path: Option<Rc<PathGuard>>,
    context_id: u32,
    stamps_arrival: bool,
    stages: Rc<RefCell<Stages>>,
}

impl ChainStream {
    /// Response callbacks run in reverse chain order, as Envoy's encoder
    /// filters do, for every policy (local replies included).
    fn response_side(&mut self, mut call: impl FnMut(&mut dyn Stream) -> Action) -> Action {
        let Ok(mut st) = self.stages.try_borrow_mut() else {
            return Action::Continue;
        };
        for s in st.streams.iter_mut().rev() {
            if let Action::Pause = call(s.as_mut()) {
                return Action::Pause;
            }
        }
        Action::Continue
    }
}

/// The stream's callbacks, from [`crate::vm`].
impl ChainStream {
    pub(crate) fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        if let Ok(mut st) = self.stages.try_borrow_mut() {
            for s in &mut st.streams {
                s.on_http_call_response(token, num_headers, body_size, num_trailers);
            }
        }
        self.shared.drain_resumes();
    }

    pub(crate) fn on_done(&mut self) {
        self.shared.unpark(self.context_id);
        if let Ok(mut st) = self.stages.try_borrow_mut() {
            for s in &mut st.streams {
                s.on_done();
            }
        }
    }

    pub(crate) fn on_request_headers(&mut self) -> Action {
        if self.stamps_arrival {
            if let Ok(mut st) = self.stages.try_borrow_mut() {
                st.arrival.first_seen_ns = Some(host::now_ns());
            }
        }
        if let Some(Action::Pause) = self.path.as_ref().map(|p| p.check()) {
            return Action::Pause;
        }
        self.shared
            .run_request_headers(self.context_id, &self.stages, 0)
    }

    pub(crate) fn on_response_headers(
        &mut self,
        num_headers: usize,
        end_of_stream: bool,
    ) -> Action {
        self.response_side(|s| s.on_http_response_headers(num_headers, end_of_stream))
    }

    pub(crate) fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response_side(|s| s.on_http_response_body(body_size, end_of_stream))
    }

    pub(crate) fn on_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.response_side(|s| s.on_http_response_trailers(num_trailers))
    }
}
