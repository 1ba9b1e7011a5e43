//! proxy-wasm glue for the auth filter: strip identity headers, read the
//! credential headers, step the core's evaluation, and do the I/O it asks for
//! (remote key sets from the root context, external auth calls).
//!
//! Async completions may arrive at the root (key sets, calls dispatched while
//! resuming) or at the stream; both hand them to [`Shared`], which switches the
//! effective context to the waiting stream before touching it.

use crate::chain::{Handle, Policy, Stream};
use crate::host::{self, Counter, Headers, Level};
use crate::stats;
use crate::vm::Action;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use switchyard_core::auth::jwt::{HostVerify, KeySet};
use switchyard_core::auth::refresh::RefreshSchedule;
use switchyard_core::auth::shared_keys::SharedKeySet;
use switchyard_core::auth::verify_signature;
use switchyard_core::auth::{
    key_set_expired, Auth, Caches, Denial, Env, Evaluation, ExtAuthAnswer, Reason, Step, Verdict,
};
use switchyard_core::claims::CLAIMS_PROPERTY;
use switchyard_core::HeaderList;

const NAME: &str = "auth";
/// How often the root checks key-set refreshes and waiting requests.
const TICK_MS: u32 = 100;

struct Counters {
    allowed: Counter,
    denied: Counter,
    dry_run_denied: Counter,
    header_errors: Counter,
    by_reason: Vec<Counter>,
    provider_allowed: Vec<Counter>,
    provider_denied: Vec<Counter>,
    jwks_ok: Vec<Counter>,
    jwks_failed: Vec<Counter>,
    jwks_ready: Vec<Counter>,
    jwks_expired: Vec<Counter>,
    failed_open: Vec<Counter>,
    verify_host: Counter,
}

impl Counters {
    fn define(auth: &Auth) -> Self {
        let per_provider = |pattern: &str| -> Vec<Counter> {
            (0..auth.provider_count())
                .map(|p| Counter::define(&stats::name(pattern, &[auth.provider_name(p)])))
                .collect()
        };
        Self {
            allowed: Counter::define(stats::auth::ALLOWED),
            denied: Counter::define(stats::auth::DENIED),
            dry_run_denied: Counter::define(stats::auth::DRY_RUN_DENIED),
            header_errors: Counter::define(stats::auth::HEADER_ERRORS),
            by_reason: Reason::ALL
                .iter()
                .map(|r| {
                    Counter::define(&stats::name(stats::auth::DENIED_BY_REASON, &[r.as_str()]))
                })
                .collect(),
            provider_allowed: per_provider(stats::auth::PROVIDER_ALLOWED),
            provider_denied: per_provider(stats::auth::PROVIDER_DENIED),
            jwks_ok: per_provider(stats::auth::JWKS_FETCH_OK),
            jwks_failed: per_provider(stats::auth::JWKS_FETCH_FAILED),
            jwks_ready: per_provider(stats::auth::JWKS_READY),
            jwks_expired: per_provider(stats::auth::JWKS_EXPIRED),
            failed_open: per_provider(stats::auth::FAILED_OPEN),
            verify_host: Counter::define(stats::auth::SIGNATURE_CHECKS_BY_HOST),
        }
    }
}

/// Remote key-set bookkeeping for one JWT provider, in this VM.
struct Remote {
    /// The record every VM of this plugin shares ([`SharedKeySet::key`]).
    key: String,
    /// This VM's fetch is out (and it holds the shared lease).
    in_flight: bool,
    /// `fetched_ms` of the shared key set this VM has loaded.
    loaded_ms: u64,
    /// This VM holds a key set (counted once in `jwks_ready`).
    ready: bool,
    /// The host refused shared data: this VM fetches on its own schedule.
    alone: bool,
    /// Its own fetch schedule, when `alone`.
    schedule: RefreshSchedule,
}

/// A request waiting for I/O, shared by its stream and whoever completes it.
struct Pending {
    context_id: u32,
    headers: HeaderList,
    eval: Evaluation,
    /// The stream is gone: drop any completion.
    finished: bool,
    /// Waiting for provider `.0`'s key set until `.1` (ms).
    keys_deadline: Option<(usize, u64)>,
}

enum Call {
    Jwks(usize),
    ExtAuth(Rc<RefCell<Pending>>, usize),
}

/// Whether the host offers `verify_signature`; learnt on first use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostCrypto {
    Unknown,
    Yes,
    No,
}

struct State {
    keys: Vec<Option<Rc<KeySet>>>,
    remote: Vec<Option<Remote>>,
    caches: Caches,
    waiting: Vec<Rc<RefCell<Pending>>>,
    calls: HashMap<u32, Call>,
    host_crypto: HostCrypto,
}

struct Shared {
    auth: Auth,
    handle: Handle,
    /// Whether verified claims go to the `switchyard.claims` property.
    claims_property: bool,
    /// The tick runs at its steady period (after the first, 1 ms one).
    ticking: std::cell::Cell<bool>,
    counters: Counters,
    state: RefCell<State>,
}

pub(crate) struct AuthRoot {
    handle: Handle,
    shared: Option<Rc<Shared>>,
}

/// The auth filter's root: this policy alone.
pub fn filter() -> crate::chain::ChainRoot {
    crate::chain::ChainRoot::single(|h| Box::new(AuthRoot::new(h)))
}

impl AuthRoot {
    pub(crate) fn new(handle: Handle) -> Self {
        Self {
            handle,
            shared: None,
        }
    }
}

impl Policy for AuthRoot {
    fn path_normalization(&self) -> Option<switchyard_core::path::PathNormalization> {
        self.shared.as_ref()?.auth.path_normalization
    }

    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize) {
        if let Some(shared) = &self.shared {
            shared.on_call_response(token, body_size);
        }
    }

    fn configure(&mut self, config: Option<&[u8]>) -> bool {
        let Some(auth) = crate::configure(NAME, "providers and rules are", config, Auth::from_json)
        else {
            return false;
        };
        let n = auth.provider_count();
        let keys = (0..n).map(|p| auth.static_keys(p)).collect();
        let remote: Vec<Option<Remote>> = (0..n)
            .map(|p| {
                auth.remote_jwks(p).map(|cfg| Remote {
                    key: SharedKeySet::key(cfg),
                    in_flight: false,
                    loaded_ms: 0,
                    ready: false,
                    alone: false,
                    schedule: RefreshSchedule::default(),
                })
            })
            .collect();
        let has_remote = remote.iter().any(Option::is_some);
        if self.handle.has_later_sections() {
            crate::claims::auth_is_here();
        }
        let shared = Rc::new(Shared {
            counters: Counters::define(&auth),
            state: RefCell::new(State {
                keys,
                remote,
                caches: Caches::new(auth.cache_entries()),
                waiting: Vec::new(),
                calls: HashMap::new(),
                host_crypto: HostCrypto::Unknown,
            }),
            claims_property: auth.claims_property(),
            ticking: std::cell::Cell::new(false),
            auth,
            handle: self.handle.clone(),
        });
        // Every VM after the first finds the record and takes leases by
        // compare-and-swap (Envoy configures the main thread's VM before any
        // worker's, so two VMs never both create it).
        for r in shared.state.borrow().remote.iter().flatten() {
            if let Ok(None) = host::shared_data(&r.key) {
                let _ = host::set_shared_data(&r.key, &SharedKeySet::default().encode(), 0);
            }
        }
        // The first fetch waits for the first tick, 1 ms on: Envoy configures
        // a canary copy of the plugin and kills it at once, and a fetch (and
        // shared lease) taken there would hold up every other VM's keys.
        if has_remote && self.handle.set_tick_period_ms(1).is_err() {
            host::log(
                Level::Warn,
                &format!("{NAME}: the host refused a tick period; remote key sets will not load"),
            );
        }
        self.shared = Some(shared);
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            let now = host::now_ms();
            if !shared.ticking.replace(true) {
                let _ = self.handle.set_tick_period_ms(TICK_MS);
            }
            shared.refresh_key_sets(now);
            shared.drop_stale_key_sets(now);
            shared.expire_waiting(now);
        }
    }

    fn create_stream(&self, context_id: u32) -> Box<dyn Stream> {
        Box::new(AuthStream {
            shared: self.shared.clone(),
            context_id,
            pending: None,
        })
    }
}

impl Shared {
    /// Each tick: adopt a key set another VM stored, renew this VM's lease
    /// while its fetch is out, and take the lease and fetch when one is due.
    fn refresh_key_sets(&self, now: u64) {
        for p in 0..self.auth.provider_count() {
            let (key, in_flight, alone, loaded_ms) = match &self.state.borrow().remote[p] {
                Some(r) => (r.key.clone(), r.in_flight, r.alone, r.loaded_ms),
                None => continue,
            };
            if alone {
                let due = self.state.borrow().remote[p]
                    .as_ref()
                    .is_some_and(|r| !r.in_flight && r.schedule.due(now));
                if due {
                    self.fetch_key_set(p, now);
                }
                continue;
            }
            let (record, cas) = match host::shared_data(&key) {
                Ok(Some((bytes, cas))) => (SharedKeySet::decode(&bytes).unwrap_or_default(), cas),
                Ok(None) => (SharedKeySet::default(), 0),
                Err(_) => {
                    self.go_alone(p);
                    continue;
                }
            };
            if in_flight {
                let _ = host::set_shared_data(&key, &record.leased(now).encode(), cas);
                continue;
            }
            // A body past `max_stale_s` is not adopted (a VM that starts late
            // would otherwise serve keys the others have dropped).
            let fresh = self
                .auth
                .remote_jwks(p)
                .is_some_and(|cfg| !key_set_expired(cfg, record.fetched_ms, now));
            if record.fetched_ms > loaded_ms && !record.body.is_empty() && fresh {
                self.adopt(p, &record);
            }
            if record.fetch_due(now) {
                match host::set_shared_data(&key, &record.leased(now).encode(), cas) {
                    Ok(()) => self.fetch_key_set(p, now),
                    Err(host::Status::CAS_MISMATCH) => {} // Another VM took it.
                    Err(_) => {
                        self.go_alone(p);
                        self.fetch_key_set(p, now);
                    }
                }
            }
        }
    }

    /// Drops a remote key set every refresh has failed to renew for
    /// `max_stale_s`: requests then wait for keys and get 503, as at start.
    fn drop_stale_key_sets(&self, now: u64) {
        for p in 0..self.auth.provider_count() {
            let Some(cfg) = self.auth.remote_jwks(p) else {
                continue;
            };
            let expired = {
                let state = self.state.borrow();
                state.keys[p].is_some()
                    && state.remote[p]
                        .as_ref()
                        .is_some_and(|r| key_set_expired(cfg, r.loaded_ms, now))
            };
            if expired {
                self.state.borrow_mut().keys[p] = None;
                self.counters.jwks_expired[p].increment();
                host::log(
                    Level::Warn,
                    &format!(
                        "{NAME}: provider {}'s key set is older than max_stale_s ({} s) and every refresh failed: dropped; tokens get 503 until a fetch succeeds",
                        self.auth.provider_name(p),
                        cfg.max_stale_s
                    ),
                );
            }
        }
    }

    fn go_alone(&self, p: usize) {
        if let Some(r) = self.state.borrow_mut().remote[p].as_mut() {
            r.alone = true;
        }
        host::log(
            Level::Warn,
            &format!(
                "{NAME}: the host refused shared data: provider {}'s key set is fetched by each VM",
                self.auth.provider_name(p)
            ),
        );
    }

    /// Loads the key set another VM fetched.
    fn adopt(&self, p: usize, record: &SharedKeySet) {
        if let Some(r) = self.state.borrow_mut().remote[p].as_mut() {
            r.loaded_ms = record.fetched_ms;
        }
        match KeySet::parse(&record.body) {
            Ok(set) => self.install(p, set),
            Err(why) => host::log(
                Level::Warn,
                &format!(
                    "{NAME}: the shared key set of provider {} does not parse: {why}",
                    self.auth.provider_name(p)
                ),
            ),
        }
    }

    fn fetch_key_set(&self, p: usize, now: u64) {
        let Some(cfg) = self.auth.remote_jwks(p) else {
            return;
        };
        let headers: [(&str, &[u8]); 4] = [
            (":method", b"GET"),
            (":path", cfg.path.as_bytes()),
            (":authority", cfg.authority.as_bytes()),
            ("accept", b"application/json"),
        ];
        match host::dispatch_http_call(&cfg.cluster, &headers, None, cfg.timeout_ms) {
            Ok(token) => {
                let mut state = self.state.borrow_mut();
                state.calls.insert(token, Call::Jwks(p));
                if let Some(r) = state.remote[p].as_mut() {
                    r.in_flight = true;
                }
            }
            Err(status) => {
                host::log(
                    Level::Warn,
                    &format!(
                        "{NAME}: cannot fetch the key set of provider {} from cluster {:?}: {status:?}",
                        self.auth.provider_name(p),
                        cfg.cluster
                    ),
                );
                self.key_set_failed(p, now);
            }
        }
    }

    /// The shared record as it is now, for this VM to replace after its fetch
    /// (it held the lease, so nothing else wrote it meanwhile but renewals).
    fn shared_record(&self, p: usize) -> Option<(String, SharedKeySet)> {
        let state = self.state.borrow();
        let r = state.remote[p].as_ref().filter(|r| !r.alone)?;
        let record = host::shared_data(&r.key)
            .ok()
            .flatten()
            .and_then(|(bytes, _)| SharedKeySet::decode(&bytes))
            .unwrap_or_default();
        Some((r.key.clone(), record))
    }

    fn key_set_failed(&self, p: usize, now: u64) {
        self.counters.jwks_failed[p].increment();
        let refresh_s = self.auth.remote_jwks(p).map_or(300, |c| c.refresh_s);
        if let Some((key, record)) = self.shared_record(p) {
            let _ = host::set_shared_data(&key, &record.failed(now, refresh_s).encode(), 0);
        }
        let mut state = self.state.borrow_mut();
        if let Some(r) = state.remote[p].as_mut() {
            r.in_flight = false;
            r.schedule.failed(now, refresh_s);
        }
    }

    fn on_call_response(&self, token: u32, body_size: usize) {
        let Some(call) = self.state.borrow_mut().calls.remove(&token) else {
            return;
        };
        let status = host::header(Headers::HttpCallResponse, ":status")
            .ok()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
        match call {
            Call::Jwks(p) => self.on_key_set(p, status, body_size),
            Call::ExtAuth(pending, p) => {
                let answer = match status {
                    Some(status) => ExtAuthAnswer::Response {
                        status,
                        headers: host::header_pairs(Headers::HttpCallResponse).unwrap_or_default(),
                        body: host::http_call_response_body(body_size.min(64 * 1024)),
                    },
                    // No headers: the call failed outright (Envoy answers a
                    // timeout or reset itself, with a 504/503 handled above).
                    None => ExtAuthAnswer::Failed,
                };
                if pending.borrow().finished {
                    return;
                }
                pending.borrow_mut().eval.ext_auth_answer(p, answer);
                self.resume(&pending);
            }
        }
    }

    fn on_key_set(&self, p: usize, status: Option<u16>, body_size: usize) {
        let now = host::now_ms();
        let body = match status {
            Some(200) => Ok(host::http_call_response_body(body_size)),
            Some(s) => Err(format!("status {s}")),
            None => Err("no response (timeout or reset)".to_owned()),
        };
        let parsed = body.and_then(|body| KeySet::parse(&body).map(|set| (set, body)));
        match parsed {
            Ok((set, body)) => {
                for why in &set.skipped {
                    host::log(
                        Level::Info,
                        &format!(
                            "{NAME}: provider {}: skipped {why}",
                            self.auth.provider_name(p)
                        ),
                    );
                }
                self.counters.jwks_ok[p].increment();
                let refresh_s = self.auth.remote_jwks(p).map_or(300, |c| c.refresh_s);
                let stored = self.shared_record(p).map(|(key, record)| {
                    let record = record.fetched(now, body, refresh_s);
                    let _ = host::set_shared_data(&key, &record.encode(), 0);
                    record.fetched_ms
                });
                if let Some(r) = self.state.borrow_mut().remote[p].as_mut() {
                    r.in_flight = false;
                    r.schedule.fetched(now, refresh_s);
                    r.loaded_ms = stored.unwrap_or(now.max(1));
                }
                self.install(p, set);
            }
            Err(why) => {
                // The last good key set (if any) keeps serving.
                host::log(
                    Level::Warn,
                    &format!(
                        "{NAME}: key set fetch for provider {} failed: {why}",
                        self.auth.provider_name(p)
                    ),
                );
                self.key_set_failed(p, now);
            }
        }
    }

    /// Provider `p`'s keys are now `set`: requests waiting for them go on.
    fn install(&self, p: usize, set: KeySet) {
        let first = {
            let mut state = self.state.borrow_mut();
            state.keys[p] = Some(Rc::new(set));
            state.remote[p]
                .as_mut()
                .is_some_and(|r| !std::mem::replace(&mut r.ready, true))
        };
        if first {
            self.counters.jwks_ready[p].increment();
        }
        let ready: Vec<_> = {
            let mut state = self.state.borrow_mut();
            let (ready, rest) = std::mem::take(&mut state.waiting)
                .into_iter()
                .partition(|w| w.borrow().keys_deadline.is_some_and(|(q, _)| q == p));
            state.waiting = rest;
            ready
        };
        for pending in ready {
            pending.borrow_mut().keys_deadline = None;
            self.resume(&pending);
        }
    }

    /// Requests that waited too long for a key set go on without it (503
    /// unless another provider accepts them).
    fn expire_waiting(&self, now: u64) {
        let expired: Vec<_> = {
            let mut state = self.state.borrow_mut();
            state.waiting.retain(|w| !w.borrow().finished);
            let (expired, rest) = std::mem::take(&mut state.waiting)
                .into_iter()
                .partition(|w| w.borrow().keys_deadline.is_some_and(|(_, d)| now >= d));
            state.waiting = rest;
            expired
        };
        for pending in expired {
            {
                let mut pend = pending.borrow_mut();
                if let Some((p, _)) = pend.keys_deadline.take() {
                    pend.eval.keys_unavailable(p);
                }
            }
            self.resume(&pending);
        }
    }

    /// A stream ended (possibly while waiting): Envoy cancels its calls
    /// without a callback, so drop everything that refers to it.
    fn forget(&self, pending: &Rc<RefCell<Pending>>) {
        pending.borrow_mut().finished = true;
        let mut state = self.state.borrow_mut();
        state.waiting.retain(|w| !Rc::ptr_eq(w, pending));
        state
            .calls
            .retain(|_, c| !matches!(c, Call::ExtAuth(p, _) if Rc::ptr_eq(p, pending)));
    }

    /// Continues a paused request from outside its own callbacks.
    fn resume(&self, pending: &Rc<RefCell<Pending>>) {
        let id = pending.borrow().context_id;
        if pending.borrow().finished || host::set_effective_context(id).is_err() {
            return;
        }
        if let Action::Continue = self.drive(pending, None) {
            self.handle.resume(id);
        }
    }

    /// Advances `eval` over `req` as far as it goes without I/O.
    fn step(&self, eval: &mut Evaluation, req: &dyn switchyard_core::RequestHeaders) -> Step {
        let mut state = self.state.borrow_mut();
        let State {
            keys,
            caches,
            host_crypto,
            ..
        } = &mut *state;
        let counters = &self.counters;
        let mut verify = |req: &HostVerify<'_>| host_verify(host_crypto, counters, req);
        let mut env = Env {
            now_s: host::now_ms() / 1000,
            keys,
            caches,
            host_verify: &mut verify,
        };
        self.auth.step(eval, req, &mut env)
    }

    /// Steps the evaluation until it is decided (applying the verdict) or
    /// waits for I/O (then `Pause`). The effective context is the stream's.
    /// `first` is a step already taken on the request's header view.
    fn drive(&self, pending: &Rc<RefCell<Pending>>, mut first: Option<Step>) -> Action {
        loop {
            let step = match first.take() {
                Some(step) => step,
                None => {
                    let mut pend = pending.borrow_mut();
                    let Pending { headers, eval, .. } = &mut *pend;
                    self.step(eval, headers)
                }
            };
            match step {
                Step::Done(verdict) => return self.apply(verdict),
                Step::NeedKeys(p) => {
                    let timeout = self.auth.remote_jwks(p).map_or(0, |c| c.timeout_ms);
                    pending.borrow_mut().keys_deadline = Some((p, host::now_ms() + timeout));
                    self.state.borrow_mut().waiting.push(pending.clone());
                    return Action::Pause;
                }
                Step::NeedExtAuth(p) => {
                    if self.dispatch_ext_auth(pending, p) {
                        return Action::Pause;
                    }
                    pending
                        .borrow_mut()
                        .eval
                        .ext_auth_answer(p, ExtAuthAnswer::Failed);
                }
            }
        }
    }

    fn dispatch_ext_auth(&self, pending: &Rc<RefCell<Pending>>, p: usize) -> bool {
        let Some(cfg) = self.auth.ext_auth(p) else {
            return false;
        };
        let request = self.auth.ext_auth_request(p, &pending.borrow().headers);
        // A non-UTF-8 header value is not forwarded (as when calls took text).
        let headers: Vec<(&str, &[u8])> = request
            .iter()
            .filter(|(_, v)| std::str::from_utf8(v).is_ok())
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        match host::dispatch_http_call(&cfg.cluster, &headers, None, cfg.timeout_ms) {
            Ok(token) => {
                self.state
                    .borrow_mut()
                    .calls
                    .insert(token, Call::ExtAuth(pending.clone(), p));
                true
            }
            Err(status) => {
                host::log(
                    Level::Warn,
                    &format!(
                        "{NAME}: cannot call ext auth cluster {:?}: {status:?}",
                        cfg.cluster
                    ),
                );
                false
            }
        }
    }

    /// Carries out a verdict on the current stream.
    fn apply(&self, verdict: Verdict) -> Action {
        let c = &self.counters;
        match verdict {
            Verdict::Allow {
                identity,
                failed_open,
            } => {
                c.allowed.increment();
                if let Some(id) = identity {
                    c.provider_allowed[id.provider].increment();
                    if failed_open {
                        c.failed_open[id.provider].increment();
                    }
                    for (name, value) in self.auth.identity_headers(&id) {
                        if crate::request::set_last(name, &value).is_err() {
                            c.header_errors.increment();
                        }
                    }
                    if self.claims_property {
                        let _ = host::set_property(CLAIMS_PROPERTY, &id.claims_json);
                    }
                    if self.handle.has_later_sections() {
                        crate::claims::hand_over(id.claims.clone());
                    }
                    // Routing may depend on the identity just set: Envoy re-picks
                    // the route itself after a header change from an ABI 0.2.1 module.
                }
                Action::Continue
            }
            Verdict::Deny(denial) => {
                c.by_reason[denial.reason.index()].increment();
                if let Some(p) = denial.provider {
                    c.provider_denied[p].increment();
                }
                if self.auth.dry_run() {
                    c.dry_run_denied.increment();
                    let path = crate::request::header(":path")
                        .ok()
                        .flatten()
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_default();
                    host::log(
                        Level::Info,
                        &format!(
                            "{NAME}: dry run: would deny {path} with {} ({})",
                            denial.status,
                            denial.reason.as_str()
                        ),
                    );
                    return Action::Continue;
                }
                c.denied.increment();
                send_denial(&denial);
                Action::Pause
            }
        }
    }
}

fn send_denial(denial: &Denial) {
    let details = format!("switchyard_auth_{}", denial.reason.as_str());
    let result = match &denial.pass_back {
        Some(pb) => {
            let headers: Vec<(&str, &[u8])> = pb
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            host::send_local_response(u32::from(pb.status), &details, &pb.body, &headers)
        }
        None => {
            let body = denial.body();
            let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
            headers.extend(
                denial
                    .challenges
                    .iter()
                    .map(|c| ("www-authenticate", c.as_bytes())),
            );
            host::send_local_response(
                u32::from(denial.status),
                &details,
                body.as_bytes(),
                &headers,
            )
        }
    };
    if result.is_err() {
        host::log(
            Level::Error,
            &format!("{NAME}: could not send the {} answer", denial.status),
        );
    }
}

/// Envoy's `verify_signature` foreign function (the messages:
/// `switchyard_core::auth::verify_signature`).
fn host_verify(state: &mut HostCrypto, counters: &Counters, req: &HostVerify<'_>) -> Option<bool> {
    if *state == HostCrypto::No {
        return None;
    }
    let args =
        verify_signature::encode_arguments(req.hash, req.public_key, req.signature, req.text);
    match host::call_foreign_function("verify_signature", &args) {
        Ok(result) => {
            *state = HostCrypto::Yes;
            counters.verify_host.increment();
            Some(verify_signature::decode_result(&result))
        }
        Err(host::Status::NOT_FOUND) => {
            *state = HostCrypto::No;
            host::log(
                Level::Info,
                &format!("{NAME}: the host has no verify_signature; checking signatures in wasm"),
            );
            None
        }
        // The host could not parse this key: check it in wasm.
        Err(_) => None,
    }
}

struct AuthStream {
    shared: Option<Rc<Shared>>,
    context_id: u32,
    pending: Option<Rc<RefCell<Pending>>>,
}

impl Stream for AuthStream {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        if let Some(shared) = &self.shared {
            shared.on_call_response(token, body_size);
        }
    }

    fn on_done(&mut self) -> bool {
        if let (Some(shared), Some(p)) = (&self.shared, self.pending.take()) {
            shared.forget(&p);
        }
        true
    }

    fn on_http_request_headers(&mut self, _arrival: crate::chain::Arrival) -> Action {
        let Some(shared) = self.shared.clone() else {
            // Unconfigured root: the host should not create streams; deny rather than allow.
            let _ = host::send_local_response(503, "switchyard_auth_unconfigured", b"", &[]);
            return Action::Pause;
        };
        let auth = &shared.auth;
        // Only this filter may set identity headers.
        if !crate::request::remove_each(auth.stripped_headers().iter().map(String::as_str)) {
            shared.counters.header_errors.increment();
        }
        // Decided on the header view in place when no I/O is needed (a
        // cached token, a key, basic); the headers are copied only for a
        // request that must wait for a key set or an external answer.
        let first = crate::request::with_headers(|view| {
            let mut eval = auth.begin(view);
            let step = shared.step(&mut eval, view);
            (eval, step)
        });
        let (eval, first) = match first {
            Ok((_, Step::Done(verdict))) => return shared.apply(verdict),
            Ok((eval, step)) => (Some(eval), Some(step)),
            Err(_) => (None, None),
        };
        let headers = crate::fetch_request_headers_repeated(
            auth.header_names(),
            shared.counters.header_errors,
        );
        // The map was refused: evaluate from the start on the headers read one by one.
        let eval = eval.unwrap_or_else(|| auth.begin(&headers));
        let pending = Rc::new(RefCell::new(Pending {
            context_id: self.context_id,
            headers,
            eval,
            finished: false,
            keys_deadline: None,
        }));
        self.pending = Some(pending.clone());
        shared.drive(&pending, first)
    }
}
