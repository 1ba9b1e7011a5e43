//! Authentication and authorization: which requests pass, and who sent them.
//!
//! A request is matched to the first rule; the rule names the providers that
//! must (or may) accept its credential. Checks that need the network (a remote
//! key set not loaded yet, an external auth service) make the evaluation
//! return [`Step::NeedKeys`] or [`Step::NeedExtAuth`]; the host does the I/O
//! and steps again, so every decision stays here.

mod api_key;
mod basic;
mod cache;
pub mod config;
mod credentials;
mod ext_auth;
pub mod jwt;
mod jwt_provider;
pub mod refresh;
pub mod shared_keys;
#[cfg(test)]
mod tests;
pub mod verify_signature;

use crate::claims::{self, claim, claim_header_value, compile_claims, ClaimMatcher};
use crate::config::{from_json, is_header_name, ConfigError};
use crate::headers::RequestHeaders;
use crate::matcher::RequestMatch;
use api_key::{compile_api_key, ApiKeys};
use basic::{compile_basic, Basic};
use cache::CachedToken;
pub use cache::Caches;
pub use config::*;
use credentials::{strip_scheme, Source};
use ext_auth::compile_ext_auth;
pub use ext_auth::{ExtAuthAnswer, PassBack};
use jwt::{Alg, ClaimRules, HostVerifier, KeySet, TokenError};
use jwt_provider::{compile_jwt, Jwt};
use serde_json::Value;
use std::borrow::Cow;
use std::rc::Rc;

/// Why a request was denied (or would have been, in dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoRule,
    MissingCredential,
    Token(TokenError),
    InvalidApiKey,
    InvalidBasic,
    ClaimsMismatch,
    ExtAuthDenied,
    ExtAuthUnavailable,
    JwksUnavailable,
    /// A credential sent more than once (two `authorization` headers, two
    /// API keys, a header token and a cookie token that differ): which one
    /// the upstream acts on is not ours to know.
    AmbiguousCredential,
}

impl Reason {
    pub const ALL: [Reason; 19] = [
        Reason::NoRule,
        Reason::MissingCredential,
        Reason::Token(TokenError::TooLarge),
        Reason::Token(TokenError::Malformed),
        Reason::Token(TokenError::AlgNotAllowed),
        Reason::Token(TokenError::UnknownKid),
        Reason::Token(TokenError::BadSignature),
        Reason::Token(TokenError::Expired),
        Reason::Token(TokenError::NotYetValid),
        Reason::Token(TokenError::IssuedInFuture),
        Reason::Token(TokenError::IssuerMismatch),
        Reason::Token(TokenError::AudienceMismatch),
        Reason::InvalidApiKey,
        Reason::InvalidBasic,
        Reason::ClaimsMismatch,
        Reason::ExtAuthDenied,
        Reason::ExtAuthUnavailable,
        Reason::JwksUnavailable,
        Reason::AmbiguousCredential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRule => "no_rule",
            Reason::MissingCredential => "missing_credential",
            Reason::Token(t) => t.as_str(),
            Reason::InvalidApiKey => "invalid_api_key",
            Reason::InvalidBasic => "invalid_basic_credentials",
            Reason::ClaimsMismatch => "claims_mismatch",
            Reason::ExtAuthDenied => "ext_auth_denied",
            Reason::ExtAuthUnavailable => "ext_auth_unavailable",
            Reason::JwksUnavailable => "jwks_unavailable",
            Reason::AmbiguousCredential => "ambiguous_credential",
        }
    }

    /// Index into [`Reason::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The HTTP status a denial for this reason answers with.
    pub fn status(self) -> u16 {
        match self {
            Reason::NoRule | Reason::ClaimsMismatch | Reason::ExtAuthDenied => 403,
            Reason::ExtAuthUnavailable | Reason::JwksUnavailable => 503,
            _ => 401,
        }
    }
}

/// Who a verified credential belongs to.
#[derive(Debug, Clone)]
pub struct Identity {
    pub provider: usize,
    /// The identity header's value, when there is one.
    pub subject: Option<Rc<[u8]>>,
    /// JWT claims, or `{"sub": name}` for API keys, basic auth and ext auth.
    pub claims: Rc<Value>,
    /// The claims as compact JSON, for later filters.
    pub claims_json: Rc<[u8]>,
    /// Headers an external auth service asked to add.
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct Denial {
    pub reason: Reason,
    pub status: u16,
    /// The provider whose answer decided, if one did.
    pub provider: Option<usize>,
    /// `www-authenticate` challenges for a 401.
    pub challenges: Vec<String>,
    pub pass_back: Option<PassBack>,
}

impl Denial {
    /// The local reply's body: which kind of failure and why, never key material.
    pub fn body(&self) -> String {
        let error = match self.status {
            401 => "unauthenticated",
            403 => "forbidden",
            _ => "unavailable",
        };
        format!(
            "{{\"error\":\"{error}\",\"reason\":\"{}\"}}\n",
            self.reason.as_str()
        )
    }
}

/// When to fetch a remote key set again after `failures` failures in a row:
/// 1 s doubling to at most a minute, and never later than the refresh period.
pub fn jwks_retry_after_ms(failures: u32, refresh_s: u64) -> u64 {
    let backoff = 1000u64 << failures.saturating_sub(1).min(6);
    backoff.min(60_000).min(refresh_s.saturating_mul(1000))
}

/// Whether a remote key set fetched at `fetched_ms` has outlived
/// `max_stale_s` at `now_ms` (every refresh since failed), and must go.
pub fn key_set_expired(cfg: &RemoteJwksConfig, fetched_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(fetched_ms) > cfg.max_stale_s.saturating_mul(1000)
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Allow {
        identity: Option<Identity>,
        /// An ext-auth service failed and `failure_mode: open` let the request through.
        failed_open: bool,
    },
    Deny(Denial),
}

/// What the host must do next for an evaluation.
#[derive(Debug, Clone)]
pub enum Step {
    Done(Verdict),
    /// Wait for provider `.0`'s remote key set, then step again (or call
    /// [`Evaluation::keys_unavailable`] when waiting is over).
    NeedKeys(usize),
    /// Ask provider `.0`'s service, then call [`Evaluation::ext_auth_answer`].
    NeedExtAuth(usize),
}

/// Per-provider results the evaluation collects.
#[derive(Debug, Clone)]
enum Outcome {
    Accepted(Identity),
    Missing,
    Rejected(Reason),
    Unavailable(Reason),
    PassedBack(PassBack),
}

/// One request's progress through its rule.
#[derive(Debug, Clone)]
pub struct Evaluation {
    rule: Option<usize>,
    /// Index into the rule's provider list of the next provider to try.
    next: usize,
    outcomes: Vec<Outcome>,
    keys_gave_up: Vec<usize>,
    ext_answer: Option<(usize, ExtAuthAnswer)>,
    failed_open: bool,
}

impl Evaluation {
    /// The host waited for provider `p`'s key set long enough.
    pub fn keys_unavailable(&mut self, p: usize) {
        self.keys_gave_up.push(p);
    }

    pub fn ext_auth_answer(&mut self, p: usize, answer: ExtAuthAnswer) {
        self.ext_answer = Some((p, answer));
    }

    pub fn rule(&self) -> Option<usize> {
        self.rule
    }
}

/// What the evaluation reads from the host.
pub struct Env<'a, 'v> {
    pub now_s: u64,
    /// Current key set per provider (`None`: a remote set not loaded yet).
    pub keys: &'a [Option<Rc<KeySet>>],
    pub caches: &'a mut Caches,
    pub host_verify: &'a mut HostVerifier<'v>,
}

#[derive(Debug)]
enum Kind {
    Jwt(Jwt),
    ApiKey(ApiKeys),
    Basic(Basic),
    ExtAuth(ExtAuthConfig),
}

#[derive(Debug)]
struct Provider {
    name: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Anonymous,
    All,
    Any,
}

#[derive(Debug)]
struct Rule {
    matcher: RequestMatch,
    mode: Mode,
    providers: Vec<usize>,
    claims: Vec<ClaimMatcher>,
}

/// A validated, compiled auth configuration.
#[derive(Debug)]
pub struct Auth {
    providers: Vec<Provider>,
    rules: Vec<Rule>,
    identity: Option<IdentityConfig>,
    dry_run: bool,
    cache_entries: usize,
    claims_property: bool,
    max_token_bytes: usize,
    header_names: Vec<String>,
    stripped: Vec<String>,
    /// The `path_normalization` this configuration set, if it did (the
    /// filter applies it before every policy).
    pub path_normalization: Option<crate::path::PathNormalization>,
}

fn header_name(name: &str, field: String) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if is_header_name(&lower) {
        Ok(lower)
    } else {
        Err(ConfigError::new(field, "not a valid header name"))
    }
}

fn non_empty(value: &str, field: String) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

fn path_value(value: &str, field: String) -> Result<(), ConfigError> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::new(field, "must start with '/'"))
    }
}

impl Auth {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(&from_json::<AuthConfig>(bytes)?)
    }

    pub fn compile(config: &AuthConfig) -> Result<Self, ConfigError> {
        let mut providers = Vec::with_capacity(config.providers.len());
        for (i, p) in config.providers.iter().enumerate() {
            let field = format!("providers[{i}]");
            if !crate::config::is_token(&p.name) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    "must be a non-empty name without spaces",
                ));
            }
            if providers.iter().any(|q: &Provider| q.name == p.name) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    format!("duplicate provider name {:?}", p.name),
                ));
            }
            let kind = match (&p.jwt, &p.api_key, &p.basic, &p.ext_auth) {
                (Some(j), None, None, None) => Kind::Jwt(compile_jwt(j, &format!("{field}.jwt"))?),
                (None, Some(a), None, None) => {
                    Kind::ApiKey(compile_api_key(a, &format!("{field}.api_key"))?)
                }
                (None, None, Some(b), None) => {
                    Kind::Basic(compile_basic(b, &format!("{field}.basic"))?)
                }
                (None, None, None, Some(e)) => {
                    Kind::ExtAuth(compile_ext_auth(e, &format!("{field}.ext_auth"))?)
                }
                _ => {
                    return Err(ConfigError::new(
                        field,
                        "give exactly one of jwt, api_key, basic, ext_auth",
                    ))
                }
            };
            providers.push(Provider {
                name: p.name.clone(),
                kind,
            });
        }

        if config.rules.is_empty() {
            return Err(ConfigError::new(
                "rules",
                "list at least one rule (requests no rule matches are denied)",
            ));
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            if !r.match_.claims.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.match.claims"),
                    "claims are not verified yet when rules are matched; use the rule's `claims`",
                ));
            }
            let matcher = RequestMatch::compile(&r.match_, &format!("{field}.match"))?;
            let (mode, names, key) = match (&r.allow, &r.require, &r.require_any) {
                (Some(a), None, None) => {
                    if a != "anonymous" {
                        return Err(ConfigError::new(
                            format!("{field}.allow"),
                            "the only value is \"anonymous\"",
                        ));
                    }
                    (Mode::Anonymous, &[][..], "allow")
                }
                (None, Some(list), None) => (Mode::All, &list[..], "require"),
                (None, None, Some(list)) => (Mode::Any, &list[..], "require_any"),
                _ => {
                    return Err(ConfigError::new(
                        field,
                        "give exactly one of allow, require, require_any",
                    ))
                }
            };
            if mode != Mode::Anonymous && names.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.{key}"),
                    "list at least one provider",
                ));
            }
            let mut ids = Vec::with_capacity(names.len());
            for (j, n) in names.iter().enumerate() {
                let id = providers.iter().position(|p| &p.name == n).ok_or_else(|| {
                    ConfigError::new(
                        format!("{field}.{key}[{j}]"),
                        format!("unknown provider {n:?}"),
                    )
                })?;
                ids.push(id);
            }
            if mode == Mode::Anonymous && !r.claims.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.claims"),
                    "an anonymous rule has no claims to check",
                ));
            }
            rules.push(Rule {
                matcher,
                mode,
                providers: ids,
                claims: compile_claims(&r.claims, &format!("{field}.claims"))?,
            });
        }

        let mut stripped: Vec<String> = Vec::new();
        let mut strip = |h: String| {
            if !stripped.contains(&h) {
                stripped.push(h);
            }
        };
        let identity = match &config.identity {
            None => None,
            Some(id) => {
                let header = header_name(&id.header, "identity.header".into())?;
                non_empty(&id.from_claim, "identity.from_claim".into())?;
                strip(header.clone());
                let mut claims_to_headers = std::collections::BTreeMap::new();
                for (h, c) in &id.claims_to_headers {
                    let field = format!("identity.claims_to_headers.{h}");
                    let h = header_name(h, field.clone())?;
                    non_empty(c, field)?;
                    strip(h.clone());
                    claims_to_headers.insert(h, c.clone());
                }
                Some(IdentityConfig {
                    header,
                    from_claim: id.from_claim.clone(),
                    claims_to_headers,
                })
            }
        };
        for p in &providers {
            if let Kind::ExtAuth(e) = &p.kind {
                e.copy_response_headers
                    .iter()
                    .for_each(|h| strip(h.clone()));
            }
        }
        if config.max_token_bytes == 0 {
            return Err(ConfigError::new("max_token_bytes", "must be positive"));
        }

        let mut header_names: Vec<String> = Vec::new();
        let mut need = |h: &str| {
            if !header_names.iter().any(|x| x == h) {
                header_names.push(h.to_owned());
            }
        };
        for r in &rules {
            r.matcher.header_names().for_each(&mut need);
        }
        for p in &providers {
            match &p.kind {
                Kind::Jwt(j) => j.from.iter().for_each(|s| match s {
                    Source::Header { name, .. } => need(name),
                    Source::Cookie(_) => need("cookie"),
                    Source::Query(_) => need(":path"),
                }),
                Kind::ApiKey(a) => need(&a.header),
                Kind::Basic(_) => need("authorization"),
                Kind::ExtAuth(e) => {
                    e.forward_headers.iter().for_each(|h| need(h));
                    [":method", ":path", ":authority"]
                        .into_iter()
                        .for_each(&mut need);
                }
            }
        }

        Ok(Self {
            path_normalization: config.path_normalization,
            providers,
            rules,
            identity,
            dry_run: config.dry_run,
            cache_entries: config.cache_entries,
            claims_property: config.claims_property,
            max_token_bytes: config.max_token_bytes,
            header_names,
            stripped,
        })
    }

    /// The request headers any decision may read, so a host fetches only those.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// Headers removed from every client request before anything else: only
    /// this filter may set them.
    pub fn stripped_headers(&self) -> &[String] {
        &self.stripped
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn cache_entries(&self) -> usize {
        self.cache_entries
    }

    /// Whether verified claims go to the `switchyard.claims` property.
    pub fn claims_property(&self) -> bool {
        self.claims_property
    }

    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    pub fn provider_name(&self, p: usize) -> &str {
        &self.providers[p].name
    }

    /// The inline key set of a JWT provider (`None`: remote, or not JWT).
    pub fn static_keys(&self, p: usize) -> Option<Rc<KeySet>> {
        match &self.providers[p].kind {
            Kind::Jwt(j) => j.static_keys.clone(),
            _ => None,
        }
    }

    /// The remote key set a JWT provider fetches, if any.
    pub fn remote_jwks(&self, p: usize) -> Option<&RemoteJwksConfig> {
        match &self.providers[p].kind {
            Kind::Jwt(j) => j.remote.as_ref(),
            _ => None,
        }
    }

    pub fn ext_auth(&self, p: usize) -> Option<&ExtAuthConfig> {
        match &self.providers[p].kind {
            Kind::ExtAuth(e) => Some(e),
            _ => None,
        }
    }

    /// Each rule's match, in the order a request's rule is picked (for explanations).
    pub fn rule_matchers(&self) -> impl Iterator<Item = &RequestMatch> {
        self.rules.iter().map(|r| &r.matcher)
    }

    /// The names of the providers rule `r` tries.
    pub fn rule_providers(&self, r: usize) -> Vec<&str> {
        self.rules.get(r).map_or_else(Vec::new, |rule| {
            rule.providers
                .iter()
                .map(|&p| self.providers[p].name.as_str())
                .collect()
        })
    }

    /// Starts evaluating a request: picks its rule.
    pub fn begin(&self, req: &(impl RequestHeaders + ?Sized)) -> Evaluation {
        Evaluation {
            rule: self.rules.iter().position(|r| r.matcher.matches(req)),
            next: 0,
            outcomes: Vec::new(),
            keys_gave_up: Vec::new(),
            ext_answer: None,
            failed_open: false,
        }
    }

    /// Advances `eval` as far as it goes without I/O.
    pub fn step(
        &self,
        eval: &mut Evaluation,
        req: &(impl RequestHeaders + ?Sized),
        env: &mut Env<'_, '_>,
    ) -> Step {
        let Some(rule) = eval.rule.map(|r| &self.rules[r]) else {
            return Step::Done(self.deny(Reason::NoRule, None, Vec::new()));
        };
        if rule.mode == Mode::Anonymous {
            return Step::Done(Verdict::Allow {
                identity: None,
                failed_open: false,
            });
        }
        // Any configured credential sent twice, not only the rule's: the
        // upstream receives every copy and may act on one the rule never read.
        if eval.next == 0 && (0..self.providers.len()).any(|p| self.ambiguous(p, req)) {
            let challenges = self.challenges(&rule.providers);
            return Step::Done(self.deny(Reason::AmbiguousCredential, None, challenges));
        }
        while let Some(&p) = rule.providers.get(eval.next) {
            let outcome = match self.check(p, eval, req, env) {
                Ok(outcome) => outcome,
                Err(step) => return step,
            };
            eval.next += 1;
            let accepted = matches!(outcome, Outcome::Accepted(_));
            eval.outcomes.push(outcome);
            match rule.mode {
                Mode::Any if accepted => break,
                Mode::All if !accepted => break,
                _ => {}
            }
        }
        Step::Done(self.conclude(rule, eval))
    }

    /// The verdict once every provider it needs has answered; an accepted
    /// identity is moved out of `eval` (the evaluation is over).
    fn conclude(&self, rule: &Rule, eval: &mut Evaluation) -> Verdict {
        let tried = &rule.providers[..eval.outcomes.len()];
        let accepted = eval
            .outcomes
            .iter()
            .position(|o| matches!(o, Outcome::Accepted(_)));
        let all_ok = eval
            .outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Accepted(_)));
        let success = match rule.mode {
            Mode::All => all_ok && eval.outcomes.len() == rule.providers.len(),
            _ => accepted.is_some(),
        };
        if success {
            let at = accepted;
            let identity =
                at.and_then(
                    |i| match std::mem::replace(&mut eval.outcomes[i], Outcome::Missing) {
                        Outcome::Accepted(id) => Some(id),
                        _ => None,
                    },
                );
            if !claims::all_match(&rule.claims, identity.as_ref().map(|i| &*i.claims)) {
                return self.deny(
                    Reason::ClaimsMismatch,
                    identity.map(|i| i.provider),
                    Vec::new(),
                );
            }
            return Verdict::Allow {
                identity,
                failed_open: eval.failed_open,
            };
        }
        // The most telling failure: the service's own answer, then a
        // credential that was wrong, then a dependency that was down.
        let mut best: Option<(u8, usize, &Outcome)> = None;
        for (o, &p) in eval.outcomes.iter().zip(tried) {
            let rank = match o {
                Outcome::PassedBack(_) => 4,
                Outcome::Rejected(_) => 3,
                Outcome::Unavailable(_) => 2,
                Outcome::Missing => 1,
                Outcome::Accepted(_) => 0,
            };
            if best.is_none_or(|(r, _, _)| rank > r) {
                best = Some((rank, p, o));
            }
        }
        let challenges = self.challenges(&rule.providers);
        match best {
            Some((_, p, Outcome::PassedBack(pb))) => Verdict::Deny(Denial {
                reason: Reason::ExtAuthDenied,
                status: pb.status,
                provider: Some(p),
                challenges: Vec::new(),
                pass_back: Some(pb.clone()),
            }),
            Some((_, p, Outcome::Rejected(r) | Outcome::Unavailable(r))) => {
                self.deny(*r, Some(p), challenges)
            }
            _ => self.deny(Reason::MissingCredential, None, challenges),
        }
    }

    fn deny(&self, reason: Reason, provider: Option<usize>, challenges: Vec<String>) -> Verdict {
        let status = reason.status();
        Verdict::Deny(Denial {
            reason,
            status,
            provider,
            challenges: if status == 401 {
                challenges
            } else {
                Vec::new()
            },
            pass_back: None,
        })
    }

    fn challenges(&self, providers: &[usize]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for &p in providers {
            let c = match &self.providers[p].kind {
                Kind::Jwt(_) => "Bearer realm=\"switchyard\"".to_owned(),
                Kind::Basic(b) => format!("Basic realm=\"{}\", charset=\"UTF-8\"", b.realm),
                _ => continue,
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// One provider's verdict on the request, or the I/O it needs first.
    fn check(
        &self,
        p: usize,
        eval: &mut Evaluation,
        req: &(impl RequestHeaders + ?Sized),
        env: &mut Env<'_, '_>,
    ) -> Result<Outcome, Step> {
        Ok(match &self.providers[p].kind {
            Kind::Jwt(j) => self.check_jwt(p, j, eval, req, env)?,
            Kind::ApiKey(a) => self.check_api_key(p, a, req),
            Kind::Basic(b) => self.check_basic(p, b, req, env),
            Kind::ExtAuth(e) => match eval.ext_answer.take() {
                Some((q, answer)) if q == p => {
                    let outcome = self.ext_auth_outcome(p, e, answer);
                    if let Outcome::Unavailable(_) = outcome {
                        if e.failure_mode == FailureMode::Open {
                            eval.failed_open = true;
                            Outcome::Accepted(self.identity_for_name(p, None))
                        } else {
                            outcome
                        }
                    } else {
                        outcome
                    }
                }
                _ => return Err(Step::NeedExtAuth(p)),
            },
        })
    }

    fn identity_for_name(&self, p: usize, name: Option<&[u8]>) -> Identity {
        let claims = match name.and_then(|n| std::str::from_utf8(n).ok()) {
            Some(n) => serde_json::json!({ "sub": n }),
            None => serde_json::json!({}),
        };
        Identity {
            provider: p,
            subject: name.filter(|n| claims::is_header_value(n)).map(Rc::from),
            claims_json: claims.to_string().into_bytes().into(),
            claims: Rc::new(claims),
            headers: Vec::new(),
        }
    }

    /// The headers to set on an allowed request, after the stripped ones
    /// were removed: identity, claims, and what ext auth asked for.
    pub fn identity_headers<'s>(&'s self, identity: &'s Identity) -> Vec<(&'s str, Cow<'s, [u8]>)> {
        let mut out: Vec<(&str, Cow<[u8]>)> = Vec::new();
        if let Some(id) = &self.identity {
            if let Some(s) = &identity.subject {
                out.push((&id.header, Cow::Borrowed(s)));
            }
            for (h, c) in &id.claims_to_headers {
                if let Some(v) = claim(&identity.claims, c).and_then(claim_header_value) {
                    out.push((h, Cow::Owned(v)));
                }
            }
        }
        for (h, v) in &identity.headers {
            if !out.iter().any(|(k, _)| k == h) {
                out.push((h, Cow::Borrowed(v)));
            }
        }
        out
    }
}
