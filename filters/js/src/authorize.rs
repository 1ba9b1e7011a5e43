//! `authorize`: auth's full decision, stepped as the filter steps it. The
//! core says what it needs (a remote key set, an ext-auth answer); the
//! JavaScript wrapper fetches it with the host's `fetch` and resumes here.
//! Key sets and verified tokens are kept per engine, as the filter keeps
//! them per VM: a long-lived engine verifies a repeated token once.

use crate::decision::{AuthOutcome, Decision, Reply};
use crate::engine::{lossy, trace_rules, DecideOptions, Engine};
use crate::request::EditHeaders;
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::rc::Rc;
use switchyard_core::auth::jwt::KeySet;
use switchyard_core::auth::refresh::RefreshSchedule;
use switchyard_core::auth::{
    key_set_expired, Auth, Caches, Env, Evaluation, ExtAuthAnswer, Step, Verdict,
};
use switchyard_core::HeaderList;

/// Requests waiting on I/O at once; beyond this the oldest is dropped, so a
/// host that never resumes cannot grow the engine without bound.
const MAX_PENDING: usize = 4096;

/// Per-engine auth memory: key sets, their refresh schedule, the token cache.
pub struct AuthState {
    keys: Vec<Option<Rc<KeySet>>>,
    /// When each remote key set held was fetched (for `max_stale_s`).
    loaded_ms: Vec<u64>,
    schedule: Vec<RefreshSchedule>,
    caches: Caches,
    pending: HashMap<u32, Pending>,
    next_id: u32,
}

struct Pending {
    headers: HeaderList,
    eval: Evaluation,
    arrived_ms: u64,
    opts: DecideOptions,
    decision: Decision,
    /// The provider whose I/O this request waits for, and whether it is
    /// its key set (else its ext-auth answer).
    waiting_on: usize,
    waiting_keys: bool,
}

/// What `authorize_begin` and `authorize_resume` return.
#[derive(Debug, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "state"
)]
pub enum Progress {
    /// The decision, with auth's outcome in `auth`.
    Done { decision: Box<Decision> },
    /// Fetch provider `provider`'s key set, then resume.
    NeedJwks {
        id: u32,
        provider: usize,
        name: String,
        cluster: String,
        authority: String,
        path: String,
        timeout_ms: u64,
        /// Stale key sets worth refreshing in the background.
        refresh: Vec<usize>,
    },
    /// Ask provider `provider`'s service, then resume with its answer.
    NeedExtAuth {
        id: u32,
        provider: usize,
        name: String,
        cluster: String,
        authority: String,
        path: String,
        timeout_ms: u64,
        headers: Vec<(String, String)>,
    },
}

/// What the host brings back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Answer {
    /// For a key-set wait: whether `provide_keys` loaded one.
    #[serde(default)]
    pub keys: Option<bool>,
    /// For ext auth: the service's status, or none when the call failed.
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub now_ms: Option<u64>,
}

impl AuthState {
    /// For an engine without auth (nothing is ever stored).
    pub fn empty() -> Self {
        Self {
            keys: Vec::new(),
            loaded_ms: Vec::new(),
            schedule: Vec::new(),
            caches: Caches::new(0),
            pending: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn new(auth: &Auth) -> Self {
        let n = auth.provider_count();
        Self {
            keys: (0..n).map(|p| auth.static_keys(p)).collect(),
            loaded_ms: vec![0; n],
            schedule: vec![RefreshSchedule::default(); n],
            caches: Caches::new(auth.cache_entries()),
            pending: HashMap::new(),
            next_id: 1,
        }
    }

    /// Loads (or fails to load) provider `p`'s remote key set from a
    /// response; the last good set keeps serving after a failure.
    pub fn provide_keys(
        &mut self,
        auth: &Auth,
        p: usize,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<usize, String> {
        let Some(cfg) = (p < auth.provider_count())
            .then(|| auth.remote_jwks(p))
            .flatten()
        else {
            return Err(format!("provider {p} has no remote key set"));
        };
        let parsed = match status {
            Some(200) => KeySet::parse(body),
            Some(s) => Err(format!("status {s}")),
            None => Err("no response".to_owned()),
        };
        match parsed {
            Ok(set) => {
                let skipped = set.skipped.len();
                self.keys[p] = Some(Rc::new(set));
                self.loaded_ms[p] = now_ms;
                self.schedule[p].fetched(now_ms, cfg.refresh_s);
                Ok(skipped)
            }
            Err(why) => {
                self.schedule[p].failed(now_ms, cfg.refresh_s);
                Err(why)
            }
        }
    }

    /// Drops remote key sets every refresh failed to renew for
    /// `max_stale_s`, as the filter does on its tick.
    fn drop_expired(&mut self, auth: &Auth, now_ms: u64) {
        for p in 0..auth.provider_count().min(self.keys.len()) {
            if let Some(cfg) = auth.remote_jwks(p) {
                if self.keys[p].is_some() && key_set_expired(cfg, self.loaded_ms[p], now_ms) {
                    self.keys[p] = None;
                }
            }
        }
    }

    fn stale(&self, auth: &Auth, now_ms: u64) -> Vec<usize> {
        (0..auth.provider_count())
            .filter(|&p| {
                auth.remote_jwks(p).is_some()
                    && self.keys[p].is_some()
                    && self.schedule[p].due(now_ms)
            })
            .collect()
    }
}

impl Engine {
    /// Starts `authorize`: the path check, then auth's first step.
    pub fn authorize_begin(
        &self,
        state: &mut AuthState,
        req: &crate::request::Request,
        opts: DecideOptions,
    ) -> Result<Progress, Error> {
        let mut headers = req.headers()?;
        let mut decision = Decision::default();
        if self.check_path(&mut headers, &mut decision).is_err() {
            return Ok(Progress::Done {
                decision: Box::new(decision),
            });
        }
        let Some(auth) = &self.auth else {
            self.after_auth(headers, req.claims.clone(), &opts, &mut decision);
            return Ok(Progress::Done {
                decision: Box::new(decision),
            });
        };
        // Only auth may set identity headers.
        for name in auth.stripped_headers() {
            headers.remove(name);
        }
        let eval = auth.begin(&headers);
        if opts.explain {
            let trace = decision.trace.get_or_insert_with(Vec::new);
            trace_rules(
                trace,
                "auth",
                &headers,
                auth.rule_matchers()
                    .enumerate()
                    .map(|(i, m)| (format!("rules[{i}]"), m)),
                |i| format!("providers: {}", auth.rule_providers(i).join(", ")),
            );
        }
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1).max(1);
        if state.pending.len() >= MAX_PENDING {
            if let Some(oldest) = state.pending.keys().min().copied() {
                state.pending.remove(&oldest);
            }
        }
        let pending = Pending {
            headers,
            eval,
            arrived_ms: opts.now_ms,
            opts,
            decision,
            waiting_on: usize::MAX,
            waiting_keys: false,
        };
        Ok(self.drive(auth, state, id, pending))
    }

    /// Resumes a waiting `authorize` with what the host fetched.
    pub fn authorize_resume(
        &self,
        state: &mut AuthState,
        id: u32,
        answer: Answer,
    ) -> Result<Progress, Error> {
        let Some(auth) = &self.auth else {
            return Err(Error::state("this engine has no auth section"));
        };
        let Some(mut pending) = state.pending.remove(&id) else {
            return Err(Error::state(format!(
                "no authorize is waiting with id {id} (it finished, or was dropped)"
            )));
        };
        if let Some(now) = answer.now_ms {
            pending.opts.now_ms = now;
        }
        let p = pending.waiting_on;
        if pending.waiting_keys {
            if answer.keys != Some(true) || state.keys.get(p).is_none_or(Option::is_none) {
                pending.eval.keys_unavailable(p);
            }
        } else {
            let ext = match answer.status {
                Some(status) => ExtAuthAnswer::Response {
                    status,
                    headers: answer
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_bytes()))
                        .collect(),
                    body: answer.body.into_bytes(),
                },
                None => ExtAuthAnswer::Failed,
            };
            pending.eval.ext_auth_answer(p, ext);
        }
        Ok(self.drive(auth, state, id, pending))
    }

    fn drive(&self, auth: &Auth, state: &mut AuthState, id: u32, mut pending: Pending) -> Progress {
        loop {
            let now_ms = pending.opts.now_ms;
            state.drop_expired(auth, now_ms);
            let step = {
                let AuthState { keys, caches, .. } = &mut *state;
                // Signatures are checked in wasm: a JavaScript host has no
                // `verify_signature` foreign function.
                let mut no_host = |_: &switchyard_core::auth::jwt::HostVerify<'_>| None;
                let mut env = Env {
                    now_s: now_ms / 1000,
                    keys,
                    caches,
                    host_verify: &mut no_host,
                };
                auth.step(&mut pending.eval, &pending.headers, &mut env)
            };
            match step {
                Step::Done(verdict) => return self.conclude(auth, pending, verdict),
                Step::NeedKeys(p) => {
                    let Some(cfg) = auth.remote_jwks(p) else {
                        pending.eval.keys_unavailable(p);
                        continue;
                    };
                    // A fetch failed lately: do not wait again before its retry time.
                    if state.schedule[p].backing_off(now_ms) {
                        pending.eval.keys_unavailable(p);
                        continue;
                    }
                    pending.waiting_on = p;
                    pending.waiting_keys = true;
                    let progress = Progress::NeedJwks {
                        id,
                        provider: p,
                        name: auth.provider_name(p).to_owned(),
                        cluster: cfg.cluster.clone(),
                        authority: cfg.authority.clone(),
                        path: cfg.path.clone(),
                        timeout_ms: cfg.timeout_ms,
                        refresh: state.stale(auth, now_ms),
                    };
                    state.pending.insert(id, pending);
                    return progress;
                }
                Step::NeedExtAuth(p) => {
                    let Some(cfg) = auth.ext_auth(p) else {
                        pending.eval.ext_auth_answer(p, ExtAuthAnswer::Failed);
                        continue;
                    };
                    pending.waiting_on = p;
                    pending.waiting_keys = false;
                    let headers = auth
                        .ext_auth_request(p, &pending.headers)
                        .into_iter()
                        .filter(|(_, v)| std::str::from_utf8(v).is_ok())
                        .map(|(k, v)| (k, lossy(&v)))
                        .collect();
                    let progress = Progress::NeedExtAuth {
                        id,
                        provider: p,
                        name: auth.provider_name(p).to_owned(),
                        cluster: cfg.cluster.clone(),
                        authority: cfg.authority.clone(),
                        path: cfg.path.clone(),
                        timeout_ms: cfg.timeout_ms,
                        headers,
                    };
                    state.pending.insert(id, pending);
                    return progress;
                }
            }
        }
    }

    fn conclude(&self, auth: &Auth, pending: Pending, verdict: Verdict) -> Progress {
        let Pending {
            mut headers,
            eval,
            arrived_ms,
            mut opts,
            mut decision,
            ..
        } = pending;
        let rule = eval.rule().map(|r| format!("rules[{r}]"));
        opts.arrived_ms = Some(opts.arrived_ms.unwrap_or(arrived_ms).min(arrived_ms));
        match verdict {
            Verdict::Allow {
                identity,
                failed_open,
            } => {
                let mut claims = None;
                let mut outcome = AuthOutcome {
                    verdict: "allow",
                    rule,
                    provider: None,
                    reason: None,
                    subject: None,
                    claims: None,
                    dry_run: false,
                    failed_open,
                };
                if let Some(id) = identity {
                    for (name, value) in auth.identity_headers(&id) {
                        headers.set(name, value.into_owned());
                    }
                    outcome.provider = Some(auth.provider_name(id.provider).to_owned());
                    outcome.subject = id.subject.as_deref().map(lossy);
                    outcome.claims = Some((*id.claims).clone());
                    claims = Some((*id.claims).clone());
                }
                decision.auth = Some(outcome);
                self.after_auth(headers, claims, &opts, &mut decision);
            }
            Verdict::Deny(denial) => {
                decision.auth = Some(AuthOutcome {
                    verdict: "deny",
                    rule,
                    provider: denial.provider.map(|p| auth.provider_name(p).to_owned()),
                    reason: Some(denial.reason.as_str()),
                    subject: None,
                    claims: None,
                    dry_run: auth.dry_run(),
                    failed_open: false,
                });
                if auth.dry_run() {
                    self.after_auth(headers, None, &opts, &mut decision);
                } else {
                    let details = format!("switchyard_auth_{}", denial.reason.as_str());
                    let (status, headers, body) = match &denial.pass_back {
                        Some(pb) => (
                            pb.status,
                            pb.headers
                                .iter()
                                .map(|(k, v)| (k.clone(), lossy(v)))
                                .collect(),
                            lossy(&pb.body),
                        ),
                        None => {
                            let mut h =
                                vec![("content-type".to_owned(), "application/json".to_owned())];
                            h.extend(
                                denial
                                    .challenges
                                    .iter()
                                    .map(|c| ("www-authenticate".to_owned(), c.clone())),
                            );
                            (denial.status, h, denial.body())
                        }
                    };
                    decision.action = "reply";
                    decision.reply = Some(Reply {
                        status,
                        policy: "auth",
                        details,
                        headers,
                        body,
                    });
                }
            }
        }
        Progress::Done {
            decision: Box::new(decision),
        }
    }
}
