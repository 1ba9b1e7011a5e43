//! One compiled configuration and the decisions the Envoy filter makes with
//! it, in the filter's order: the path check, auth, router, timeouts,
//! shadow. Each step asks the core exactly what the proxy-wasm adapter asks
//! it (`filters/proxy/src/<policy>.rs`), and applies the same header edits
//! to the request, so the upstream request here is the one Envoy forwards.

use crate::decision::{
    Decision, FaultOutcome, Reply, Retries, RouterOutcome, ShadowChoice, ShadowOutcome,
    SplitOutcome, TimeoutsOutcome, TraceEntry, Upstream,
};
use crate::request::EditHeaders;
use crate::Error;
use serde_json::Value;
use std::cell::Cell;
use switchyard_core::auth::Auth;
use switchyard_core::chain::{Policy, Sections};
use switchyard_core::claims::claim;
use switchyard_core::matcher::{cookie_value, path_without_query};
use switchyard_core::path::PathNormalization;
use switchyard_core::router::{Outcome, Reason as RouteReason, Router, StickyConfig};
use switchyard_core::shadow::{Decision as ShadowDecision, Mode as ShadowMode, Shadow};
use switchyard_core::timeouts::{Budget, ReplyKind, Step, Timeouts};
use switchyard_core::{ConfigError, HeaderList, RequestHeaders, WithClaims};

/// How long a fault delay may be followed: a request held longer than this
/// many steps is a bug, not a configuration.
const MAX_STEPS: usize = 16;

// The request headers Envoy's router reads as its controls and removes
// before the request goes upstream.
use switchyard_core::timeouts::ROUTER_CONSUMED_HEADERS as ROUTER_CONSUMED;

/// The compiled policies of one configuration.
pub struct Engine {
    pub(crate) path: Option<PathNormalization>,
    pub(crate) auth: Option<Auth>,
    pub(crate) router: Option<Router>,
    pub(crate) timeouts: Option<Timeouts>,
    pub(crate) shadow: Option<Shadow>,
    /// The golden-ratio sequence the filter draws random splits and samples
    /// from (`filters/proxy/src/lib.rs`, `next_split_draw`).
    draw: Cell<u64>,
}

/// What [`Engine::route`] answers.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Route {
    Routed { version: String, rule: String },
    Refused { status: u16 },
}

/// [`Engine::route_headers`]'s answer: an index into the router's
/// [`Router::outcomes`], so a hot path hands back a number, not two strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    Outcome(usize),
    Refused { status: u16 },
}

/// `decide`'s options.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DecideOptions {
    /// The clock, ms since the epoch (the JS wrapper passes `Date.now()`).
    #[serde(default)]
    pub now_ms: u64,
    /// When the request arrived, if earlier than now (counts against its budget).
    #[serde(default)]
    pub arrived_ms: Option<u64>,
    #[serde(default)]
    pub explain: bool,
    /// A draw in [0, 1) for this request's random split and sampling,
    /// instead of the engine's own sequence (for reproducible tests).
    #[serde(default)]
    pub random: Option<f64>,
}

/// A configuration error, with the chain section it was found in.
pub fn config_error(section: Option<&str>, e: ConfigError) -> Error {
    Error::config(section, e.field, e.message)
}

impl Engine {
    /// Compiles the chain's `{auth, router, timeouts, shadow}` (when `policy`
    /// is `None`) or one filter's configuration (`policy` names it: `auth`,
    /// `router`, `timeouts`, `shadow`). `seed` starts the random sequence.
    pub fn compile(config: &[u8], policy: Option<&str>, seed: u64) -> Result<Self, Error> {
        let mut engine = Engine {
            path: None,
            auth: None,
            router: None,
            timeouts: None,
            shadow: None,
            draw: Cell::new(seed),
        };
        let (top, sections): (Option<PathNormalization>, Vec<(Policy, Vec<u8>)>) = match policy {
            None => {
                let s = Sections::from_json(config).map_err(|e| config_error(None, e))?;
                (s.path_normalization, s.sections)
            }
            Some(name) => {
                let Some(p) = Policy::ORDER.iter().find(|p| p.section() == name) else {
                    return Err(Error::options(
                        "policy",
                        format!(
                            "unknown policy {name:?}; expected auth, router, timeouts or shadow"
                        ),
                    ));
                };
                (None, vec![(*p, config.to_vec())])
            }
        };
        let chain = policy.is_none();
        let mut declared = Vec::new();
        for (p, bytes) in &sections {
            let section = chain.then(|| p.section());
            let err = |e| config_error(section, e);
            let own = match p {
                Policy::Auth => {
                    let a = Auth::from_json(bytes).map_err(err)?;
                    let own = a.path_normalization;
                    engine.auth = Some(a);
                    own
                }
                Policy::Router => {
                    let r = Router::from_json(bytes).map_err(err)?;
                    let own = r.path_normalization;
                    engine.router = Some(r);
                    own
                }
                Policy::Timeouts => {
                    let t = Timeouts::from_json(bytes).map_err(err)?;
                    let own = t.path_normalization;
                    engine.timeouts = Some(t);
                    own
                }
                Policy::Shadow => {
                    let s = Shadow::from_json(bytes).map_err(err)?;
                    let own = s.path_normalization;
                    engine.shadow = Some(s);
                    own
                }
            };
            declared.push((p.section(), own));
        }
        let settled = PathNormalization::settle(top, declared.iter().map(|(s, o)| (*s, *o)))
            .map_err(|e| config_error(None, e))?;
        // As in the filter: no policy, no path check.
        engine.path = (!sections.is_empty()).then_some(settled);
        Ok(engine)
    }

    /// The next draw: the caller's, or the filter's sequence.
    fn next_draw(&self, random: Option<f64>) -> u64 {
        match random {
            // 2^64 · r, saturating at the top for r just below 1.
            Some(r) if r.is_finite() => (r.clamp(0.0, 1.0) * 18_446_744_073_709_551_616.0) as u64,
            _ => {
                let next = self.draw.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                self.draw.set(next);
                next
            }
        }
    }

    /// The path check: `Err` with the decision when the path is refused.
    pub(crate) fn check_path(&self, headers: &mut HeaderList, d: &mut Decision) -> Result<(), ()> {
        d.action = "forward";
        if let Some(setting) = &self.path {
            if let Some(raw) = headers.header(":path").map(<[u8]>::to_vec) {
                match setting.normalize(&raw) {
                    Ok(None) => {}
                    Ok(Some(normal)) => {
                        headers.set(":path", normal);
                        d.path.normalized = true;
                    }
                    Err(why) => {
                        d.path.rejected = Some(why.as_str());
                        d.path.decided_on = lossy(path_without_query(&raw));
                        d.action = "reply";
                        d.reply = Some(Reply {
                            status: 400,
                            policy: "path",
                            details: format!("switchyard_path_{}", why.as_str()),
                            headers: vec![("content-type".into(), "application/json".into())],
                            body: why.body(),
                        });
                        return Err(());
                    }
                }
            }
        }
        d.path.decided_on = headers
            .header(":path")
            .map(|p| lossy(path_without_query(p)))
            .unwrap_or_default();
        Ok(())
    }

    /// Every policy after auth, on `headers` (auth's edits applied) and the
    /// verified `claims`; fills `d` and the upstream request.
    pub(crate) fn after_auth(
        &self,
        mut headers: HeaderList,
        claims: Option<Value>,
        opts: &DecideOptions,
        d: &mut Decision,
    ) {
        let mut trace = opts.explain.then(Vec::new);
        if let Some(r) = &self.router {
            self.decide_version(r, &mut headers, &claims, opts, d, &mut trace);
        }
        if let Some(t) = &self.timeouts {
            self.time(t, &mut headers, &claims, opts, d, &mut trace);
        }
        if d.reply.is_none() {
            if let Some(s) = &self.shadow {
                self.mirror(s, &mut headers, &claims, opts, d, &mut trace);
            }
        }
        if let Some(t) = trace {
            d.trace.get_or_insert_with(Vec::new).extend(t);
        }
        if d.reply.is_some() {
            d.action = "reply";
            d.response_headers.clear();
            return;
        }
        d.router_controls = headers
            .0
            .iter()
            .filter(|(k, _)| ROUTER_CONSUMED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), lossy(v)))
            .collect();
        headers
            .0
            .retain(|(k, _)| !ROUTER_CONSUMED.contains(&k.as_str()));
        d.upstream = upstream(&headers);
    }

    /// The router's answer alone, for hot paths: the path check (a refused
    /// path is its 400) and the router's version and rule, as `decide`
    /// reports them, with no other policy run and no decision built.
    pub fn route(
        &self,
        req: &crate::request::Request,
        random: Option<f64>,
    ) -> Result<Route, Error> {
        let routed = self.route_headers(req.headers()?, req.claims.clone(), random)?;
        Ok(match routed {
            Routed::Outcome(i) => {
                let o = self
                    .route_outcomes()
                    .get(i)
                    .ok_or_else(|| Error::state("the router answered an unknown outcome"))?;
                Route::Routed {
                    version: o.version.clone(),
                    rule: o.rule.clone(),
                }
            }
            Routed::Refused { status } => Route::Refused { status },
        })
    }

    /// Every (rule, version) [`Engine::route_headers`] can answer, by index;
    /// empty without a router.
    pub fn route_outcomes(&self) -> &[Outcome] {
        self.router.as_ref().map_or(&[], |r| r.outcomes())
    }

    /// [`Engine::route`] on a header map already built (pseudo-headers first).
    pub fn route_headers(
        &self,
        mut headers: impl EditHeaders,
        claims: Option<Value>,
        random: Option<f64>,
    ) -> Result<Routed, Error> {
        let Some(r) = &self.router else {
            return Err(Error::state("this engine has no router"));
        };
        if let Some(setting) = &self.path {
            if let Some(raw) = headers.header(":path") {
                match setting.normalize(raw) {
                    Ok(None) => {}
                    Ok(Some(normal)) => headers.set(":path", normal),
                    Err(_) => return Ok(Routed::Refused { status: 400 }),
                }
            }
        }
        if let Some(a) = &self.auth {
            for name in a.stripped_headers() {
                headers.remove(name);
            }
        }
        let view = WithClaims {
            headers: &headers,
            claims,
        };
        Ok(Routed::Outcome(
            r.decide(&view, self.next_draw(random)).outcome,
        ))
    }

    /// `decide`: every policy but auth, whose place the caller's verified
    /// `claims` take (client-sent identity headers are still removed).
    pub fn decide(
        &self,
        req: &crate::request::Request,
        opts: &DecideOptions,
    ) -> Result<Decision, Error> {
        let mut headers = req.headers()?;
        let mut d = Decision::default();
        if self.check_path(&mut headers, &mut d).is_err() {
            d.upstream = Upstream::default();
            return Ok(d);
        }
        if let Some(a) = &self.auth {
            for name in a.stripped_headers() {
                headers.remove(name);
            }
        }
        self.after_auth(headers, req.claims.clone(), opts, &mut d);
        Ok(d)
    }

    fn decide_version(
        &self,
        r: &Router,
        headers: &mut HeaderList,
        claims: &Option<Value>,
        opts: &DecideOptions,
        d: &mut Decision,
        trace: &mut Option<Vec<TraceEntry>>,
    ) {
        let draw = self.next_draw(opts.random);
        let view = WithClaims {
            headers: &*headers,
            claims: claims.clone(),
        };
        let rejected = r.override_rejected(&view);
        let dec = r.decide(&view, draw);
        if let Some(t) = trace {
            if dec.reason != RouteReason::Override {
                trace_rules(
                    t,
                    "router",
                    &view,
                    r.routes().map(|(name, m)| (name.to_owned(), m)),
                    |_| format!("decided: {}", dec.version),
                );
            }
            let note = match dec.reason {
                RouteReason::Override => Some(format!("the client pinned {}", dec.version)),
                RouteReason::Default => Some(format!("no route matched: {}", dec.version)),
                _ => None,
            };
            if let Some(note) = note {
                t.push(TraceEntry {
                    policy: "router",
                    rule: dec.rule.to_owned(),
                    matched: true,
                    unmet: None,
                    note: Some(note),
                });
            }
        }
        let split = dec.bucket.map(|(bucket, total)| {
            let sticky = r.sticky(dec.rule);
            SplitOutcome {
                bucket,
                total,
                sticky_by: sticky.map(|s| match s {
                    StickyConfig::Header(h) => format!("header:{h}"),
                    StickyConfig::Cookie(c) => format!("cookie:{c}"),
                    StickyConfig::Claim(c) => format!("claim:{c}"),
                }),
                sticky_key: (dec.reason == RouteReason::StickySplit)
                    .then(|| sticky_key(sticky, &view))
                    .flatten(),
            }
        });
        let outcome = RouterOutcome {
            version: dec.version.to_owned(),
            rule: dec.rule.to_owned(),
            reason: match dec.reason {
                RouteReason::Override => "override",
                RouteReason::Route => "route",
                RouteReason::StickySplit => "sticky_split",
                RouteReason::RandomSplit => "random_split",
                RouteReason::Default => "default",
            },
            header: r.version_header().to_owned(),
            served_version_header: r.served_version_header().map(str::to_owned),
            override_rejected: rejected,
            split,
        };
        drop(view);
        // Replacing the header also drops any client-sent value.
        headers.set(r.version_header(), outcome.version.as_bytes().to_vec());
        if let Some(h) = r.served_version_header() {
            d.response_headers
                .push((h.to_owned(), outcome.version.clone()));
        }
        d.router = Some(outcome);
    }

    fn time(
        &self,
        t: &Timeouts,
        headers: &mut HeaderList,
        claims: &Option<Value>,
        opts: &DecideOptions,
        d: &mut Decision,
        trace: &mut Option<Vec<TraceEntry>>,
    ) {
        let now = opts.now_ms;
        let arrived = opts.arrived_ms.unwrap_or(now).min(now);
        let draw = self.next_draw(opts.random);
        let view = WithClaims {
            headers: &*headers,
            claims: claims.clone(),
        };
        let adm = t.admit(&view, arrived, now, draw);
        if let Some(tr) = trace {
            trace_rules(
                tr,
                "timeouts",
                &view,
                t.rules.iter().map(|r| (r.name.clone(), r.matcher())),
                |i| format!("timeout {} ms", t.rules[i].timeout_ms),
            );
            trace_rules(
                tr,
                "timeouts.faults",
                &view,
                t.faults.iter().map(|f| (f.name.clone(), f.matcher())),
                |i| format!("fault {}", t.faults[i].name),
            );
        }
        drop(view);
        // A fault delay holds the request; the filter steps it again when the
        // delay is over (its tick), which this follows to the end.
        let mut at = now;
        let mut step = t.step(&adm, at);
        for _ in 0..MAX_STEPS {
            match step {
                Step::Wait(wake) => {
                    at = wake.max(at + 1);
                    step = t.step(&adm, at);
                }
                _ => break,
            }
        }
        let rule = adm.rule.and_then(|r| t.rules.get(r));
        let mut outcome = TimeoutsOutcome {
            rule: rule.map(|r| r.name.clone()),
            budget_ms: None,
            per_try_timeout_ms: None,
            propagated_ms: None,
            inbound_deadline: match adm.budget {
                Budget::Absent => Value::from("absent"),
                Budget::Malformed => Value::from("malformed"),
                Budget::Ms(ms) => Value::from(ms),
            },
            capped: adm.capped,
            retries: rule.and_then(|r| r.retries.as_ref()).map(|r| Retries {
                attempts: r.attempts,
                retry_on: r.http_on.clone(),
                grpc_retry_on: r.grpc_on.clone(),
                status_codes: r.status_codes.clone(),
            }),
            fault: adm
                .fault
                .and_then(|f| t.faults.get(f))
                .map(|f| FaultOutcome {
                    name: f.name.clone(),
                    delay_ms: adm.delay_until_ms.map(|u| u.saturating_sub(now)),
                    aborted: adm.abort,
                }),
        };
        match step {
            Step::Forward(fwd) => {
                let set_now = t.router_headers(&adm, &fwd);
                for (name, value) in &set_now {
                    headers.set(name, value.as_bytes().to_vec());
                }
                for name in t.removed_headers(&adm, &set_now) {
                    headers.remove(name);
                }
                outcome.budget_ms = fwd.timeout_ms;
                outcome.per_try_timeout_ms = fwd.per_try_timeout_ms;
                outcome.propagated_ms = fwd.propagate_ms;
            }
            Step::Reply(reply) => {
                let mut reply_headers = vec![("content-type".to_owned(), "text/plain".to_owned())];
                if reply.kind == ReplyKind::Abort {
                    if let Some(f) = &outcome.fault {
                        reply_headers.push(("x-switchyard-fault".into(), f.name.clone()));
                    }
                }
                if let Some(g) = reply.grpc_status.filter(|_| adm.grpc) {
                    reply_headers.push(("grpc-status".into(), g.to_string()));
                }
                d.reply = Some(Reply {
                    status: reply.status,
                    policy: "timeouts",
                    details: reply.details.to_owned(),
                    headers: reply_headers,
                    body: reply.body.to_owned(),
                });
            }
            // Unreachable after MAX_STEPS wake-ups; forward untouched.
            Step::Wait(_) => {}
        }
        d.timeouts = Some(outcome);
    }

    fn mirror(
        &self,
        s: &Shadow,
        headers: &mut HeaderList,
        claims: &Option<Value>,
        opts: &DecideOptions,
        d: &mut Decision,
        trace: &mut Option<Vec<TraceEntry>>,
    ) {
        if s.receiver.is_some() && s.is_shadow(&*headers) {
            headers.set(s.tag_header(), b"true".to_vec());
            for h in s.strip_headers() {
                headers.remove(h);
            }
            if let Some(status) = s.answer_unsafe(&*headers) {
                d.reply = Some(Reply {
                    status,
                    policy: "shadow",
                    details: "switchyard_shadow_unsafe_method".into(),
                    headers: vec![
                        ("content-type".into(), "text/plain".into()),
                        (s.tag_header().to_owned(), "true".into()),
                    ],
                    body: "shadow requests may not write\n".into(),
                });
            }
            d.shadow = Some(ShadowOutcome {
                mirror: None,
                compare: None,
                received: true,
            });
            return;
        }
        // Only this filter decides what is shadowed and what is a shadow.
        headers.remove(s.cluster_header());
        headers.remove(s.tag_header());
        let draw = self.next_draw(opts.random);
        let view = WithClaims {
            headers: &*headers,
            claims: claims.clone(),
        };
        let decisions = s.decide(&view, draw);
        if let Some(t) = trace {
            for mode in [ShadowMode::Mirror, ShadowMode::Compare] {
                let rules: Vec<_> = s.rules.iter().filter(|r| r.mode == mode).collect();
                trace_rules(
                    t,
                    "shadow",
                    &view,
                    rules.iter().map(|r| (r.name.clone(), r.matcher())),
                    |i| format!("copies to {}", rules[i].target_cluster),
                );
            }
        }
        drop(view);
        let choice = |dec: ShadowDecision| -> Option<ShadowChoice> {
            let (rule, outcome) = match dec {
                ShadowDecision::None => return None,
                ShadowDecision::NotSampled(r) => (r, "not_sampled"),
                ShadowDecision::Unsafe(r) => (r, "unsafe_method"),
                ShadowDecision::Shadow(r) => (r, "shadowed"),
            };
            let r = s.rules.get(rule)?;
            Some(ShadowChoice {
                rule: r.name.clone(),
                outcome,
                cluster: r.target_cluster.clone(),
            })
        };
        let mirror = choice(decisions.mirror);
        if let ShadowDecision::Shadow(r) = decisions.mirror {
            if let Some(rule) = s.rules.get(r) {
                headers.set(s.cluster_header(), rule.target_cluster.as_bytes().to_vec());
            }
        }
        d.shadow = Some(ShadowOutcome {
            mirror,
            compare: choice(decisions.compare),
            received: false,
        });
    }
}

/// One entry per rule a policy tries, in order, up to the first that
/// matches (where the policy stops); `note(i)` describes the match.
pub(crate) fn trace_rules<'m>(
    out: &mut Vec<TraceEntry>,
    policy: &'static str,
    req: &(impl RequestHeaders + ?Sized),
    rules: impl IntoIterator<Item = (String, &'m switchyard_core::matcher::RequestMatch)>,
    note: impl Fn(usize) -> String,
) {
    for (i, (rule, m)) in rules.into_iter().enumerate() {
        let unmet = m.unmet(req);
        let matched = unmet.is_none();
        out.push(TraceEntry {
            policy,
            rule,
            matched,
            unmet: unmet.map(Into::into),
            note: matched.then(|| note(i)),
        });
        if matched {
            break;
        }
    }
}

fn sticky_key(sticky: Option<&StickyConfig>, req: &impl RequestHeaders) -> Option<String> {
    match sticky? {
        StickyConfig::Header(h) => req.header(h).map(lossy),
        StickyConfig::Cookie(c) => req
            .header("cookie")
            .and_then(|v| cookie_value(v, c))
            .map(lossy),
        StickyConfig::Claim(c) => req.claims().and_then(|v| claim(v, c)).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    }
}

pub(crate) fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn upstream(headers: &HeaderList) -> Upstream {
    let get = |n: &str| headers.header(n).map(lossy).unwrap_or_default();
    Upstream {
        method: get(":method"),
        path: get(":path"),
        headers: headers
            .0
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .map(|(k, v)| (k.clone(), lossy(v)))
            .collect(),
    }
}
