//! Authentication and authorization: which requests pass, and who sent them.
//!
//! A request is matched to the first rule; the rule names the providers that
//! must (or may) accept its credential. Checks that need the network (a remote
//! key set not loaded yet, an external auth service) make the evaluation
//! return [`Step::NeedKeys`] or [`Step::NeedExtAuth`]; the host does the I/O
//! and steps again, so every decision stays here.

pub mod config;
pub mod jwt;
pub mod shared_keys;
#[cfg(test)]
mod tests;

use crate::claims::{self, claim, claim_header_value, compile_claims, ClaimMatcher};
use crate::config::{from_json, is_header_name, ConfigError};
use crate::headers::RequestHeaders;
use crate::matcher::{cookie_count, cookie_value, query_count, query_value, RequestMatch};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
pub use config::*;
use jwt::{Alg, ClaimRules, HostVerifier, KeySet, TokenError};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use subtle::ConstantTimeEq;

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
    pub subject: Option<Vec<u8>>,
    /// JWT claims, or `{"sub": name}` for API keys, basic auth and ext auth.
    pub claims: Rc<Value>,
    /// The claims as compact JSON, for later filters.
    pub claims_json: Rc<[u8]>,
    /// Headers an external auth service asked to add.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The answer of an external auth service.
#[derive(Debug, Clone)]
pub enum ExtAuthAnswer {
    /// A response: status and the headers the filter may use.
    Response {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// No usable response: timeout, reset, unknown cluster.
    Failed,
}

/// A reply passed back from the auth service (its 401 or 403).
#[derive(Debug, Clone)]
pub struct PassBack {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
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

/// Bounded per-VM memory of verified credentials.
pub struct Caches {
    /// By a fast 128-bit hash of (provider, token); a hit counts only if the
    /// stored token is byte-for-byte the one presented, so a collision is a
    /// miss (verified again), never another token's identity. (A SHA-256 key
    /// cost a 600-byte token about 20k instructions per request in Envoy.)
    tokens: Lru<u128, CachedToken>,
    basic: Lru<[u8; 32], bool>,
}

#[derive(Clone)]
struct CachedToken {
    token: Box<[u8]>,
    identity: Identity,
    /// Unix seconds after which the entry is no longer used.
    valid_until: u64,
}

/// Hashes keys that are already digests (xxh3-128, SHA-256) by folding
/// their bytes: SipHash over them cost more than the rest of a cache hit.
/// Only verified credentials are inserted, so an attacker cannot fill a
/// bucket with chosen keys.
#[derive(Default)]
struct Digest(u64);

impl std::hash::Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = self.0.rotate_left(29) ^ (n as u64) ^ ((n >> 64) as u64).rotate_left(32);
    }
    fn write_usize(&mut self, _: usize) {
        // The length prefix of a fixed-size array says nothing.
    }
}

/// A small insertion-ordered cache: the oldest entry goes first.
struct Lru<K, V> {
    map: HashMap<K, V, std::hash::BuildHasherDefault<Digest>>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Copy, V> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::default(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    fn insert(&mut self, k: K, v: V) {
        if self.capacity == 0 {
            return;
        }
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, k: &K) {
        if self.map.remove(k).is_some() {
            self.order.retain(|x| x != k);
        }
    }
}

impl Caches {
    pub fn new(capacity: usize) -> Self {
        Self {
            tokens: Lru::new(capacity),
            basic: Lru::new(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.map.len() + self.basic.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
struct Jwt {
    issuer: Option<String>,
    audiences: Vec<String>,
    static_keys: Option<Rc<KeySet>>,
    remote: Option<RemoteJwksConfig>,
    from: Vec<Source>,
    algorithms: Vec<Alg>,
    clock_skew_s: u64,
}

#[derive(Debug)]
enum Source {
    Header { name: String, prefix: String },
    Cookie(String),
    Query(String),
}

#[derive(Debug)]
struct ApiKeys {
    header: String,
    keys: Vec<(String, [u8; 32])>,
}

#[derive(Debug)]
struct Basic {
    users: Vec<(String, String)>,
    realm: String,
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
    claims_property: Option<bool>,
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

    /// `claims_property` as configured; `None` leaves it to the filter.
    pub fn claims_property(&self) -> Option<bool> {
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
        if eval.next == 0 && rule.providers.iter().any(|&p| self.ambiguous(p, req)) {
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

    fn conclude(&self, rule: &Rule, eval: &Evaluation) -> Verdict {
        let tried = &rule.providers[..eval.outcomes.len()];
        let accepted = eval.outcomes.iter().find_map(|o| match o {
            Outcome::Accepted(id) => Some(id),
            _ => None,
        });
        let all_ok = eval
            .outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Accepted(_)));
        let success = match rule.mode {
            Mode::All => all_ok && eval.outcomes.len() == rule.providers.len(),
            _ => accepted.is_some(),
        };
        if success {
            let identity = accepted.cloned();
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

    fn check_jwt(
        &self,
        p: usize,
        j: &Jwt,
        eval: &Evaluation,
        req: &(impl RequestHeaders + ?Sized),
        env: &mut Env<'_, '_>,
    ) -> Result<Outcome, Step> {
        let Some(raw) = j.from.iter().find_map(|s| s.read(req)) else {
            return Ok(Outcome::Missing);
        };
        if raw.len() > self.max_token_bytes {
            return Ok(Outcome::Rejected(Reason::Token(TokenError::TooLarge)));
        }
        // A hit's bytes were valid UTF-8 when it was stored: checked after.
        let key = xxhash_rust::xxh3::xxh3_128_with_seed(raw, p as u64);
        if let Some(hit) = env.caches.tokens.get(&key) {
            if crate::bytes::same(&hit.token, raw) {
                if env.now_s < hit.valid_until {
                    return Ok(Outcome::Accepted(hit.identity.clone()));
                }
                env.caches.tokens.remove(&key);
            }
        }
        let Ok(token) = std::str::from_utf8(raw) else {
            return Ok(Outcome::Rejected(Reason::Token(TokenError::Malformed)));
        };
        let parsed = match jwt::parse(token, &j.algorithms) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Outcome::Rejected(Reason::Token(e))),
        };
        let Some(keys) = env.keys.get(p).and_then(Option::as_ref) else {
            return if eval.keys_gave_up.contains(&p) {
                Ok(Outcome::Unavailable(Reason::JwksUnavailable))
            } else {
                Err(Step::NeedKeys(p))
            };
        };
        if let Err(e) = parsed.verify(keys, env.host_verify) {
            return Ok(Outcome::Rejected(Reason::Token(e)));
        }
        let claims = match parsed.claims() {
            Ok(c) => c,
            Err(e) => return Ok(Outcome::Rejected(Reason::Token(e))),
        };
        let rules = ClaimRules {
            issuer: j.issuer.as_deref(),
            audiences: &j.audiences,
            clock_skew_s: j.clock_skew_s,
        };
        if let Err(e) = jwt::check_claims(&claims, &rules, env.now_s) {
            return Ok(Outcome::Rejected(Reason::Token(e)));
        }
        let subject = self
            .identity
            .as_ref()
            .and_then(|id| claim(&claims, &id.from_claim))
            .and_then(claim_header_value);
        // Tokens without `exp` are re-verified every five minutes.
        let valid_until = jwt::expiry(&claims)
            .map(|e| e.saturating_add(j.clock_skew_s))
            .unwrap_or(env.now_s + 300);
        let identity = Identity {
            provider: p,
            subject,
            claims_json: claims.to_string().into_bytes().into(),
            claims: Rc::new(claims),
            headers: Vec::new(),
        };
        env.caches.tokens.insert(
            key,
            CachedToken {
                token: token.as_bytes().into(),
                identity: identity.clone(),
                valid_until,
            },
        );
        Ok(Outcome::Accepted(identity))
    }

    fn check_api_key(
        &self,
        p: usize,
        a: &ApiKeys,
        req: &(impl RequestHeaders + ?Sized),
    ) -> Outcome {
        let Some(presented) = req.header(&a.header).filter(|v| !v.is_empty()) else {
            return Outcome::Missing;
        };
        let digest: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(presented).into()
        };
        // Compare with every key, in constant time, without stopping early.
        let mut found = None;
        for (i, (_, want)) in a.keys.iter().enumerate() {
            if bool::from(digest.ct_eq(want)) {
                found = Some(i);
            }
        }
        match found {
            Some(i) => Outcome::Accepted(self.identity_for_name(p, Some(a.keys[i].0.as_bytes()))),
            None => Outcome::Rejected(Reason::InvalidApiKey),
        }
    }

    fn check_basic(
        &self,
        p: usize,
        b: &Basic,
        req: &(impl RequestHeaders + ?Sized),
        env: &mut Env<'_, '_>,
    ) -> Outcome {
        let Some(encoded) = req
            .header("authorization")
            .and_then(|v| strip_scheme(v, "Basic"))
        else {
            return Outcome::Missing;
        };
        let Some(decoded) = STANDARD.decode(encoded.trim_ascii()).ok() else {
            return Outcome::Rejected(Reason::InvalidBasic);
        };
        let Some(colon) = decoded.iter().position(|&c| c == b':') else {
            return Outcome::Rejected(Reason::InvalidBasic);
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Some((name, hash)) = b.users.iter().find(|(n, _)| n.as_bytes() == user) else {
            return Outcome::Rejected(Reason::InvalidBasic);
        };
        // bcrypt is deliberately slow: pay it once per credential per VM.
        let key = jwt::digest(&[&(p as u64).to_le_bytes(), user, password]);
        let valid = match env.caches.basic.get(&key) {
            Some(v) => *v,
            None => {
                let v = bcrypt::verify(password, hash).unwrap_or(false);
                env.caches.basic.insert(key, v);
                v
            }
        };
        if valid {
            Outcome::Accepted(self.identity_for_name(p, Some(name.as_bytes())))
        } else {
            Outcome::Rejected(Reason::InvalidBasic)
        }
    }

    fn identity_for_name(&self, p: usize, name: Option<&[u8]>) -> Identity {
        let claims = match name.and_then(|n| std::str::from_utf8(n).ok()) {
            Some(n) => serde_json::json!({ "sub": n }),
            None => serde_json::json!({}),
        };
        Identity {
            provider: p,
            subject: name
                .filter(|n| claims::is_header_value(n))
                .map(<[u8]>::to_vec),
            claims_json: claims.to_string().into_bytes().into(),
            claims: Rc::new(claims),
            headers: Vec::new(),
        }
    }

    /// The request to send to ext-auth provider `p`: headers as (name, value).
    pub fn ext_auth_request(
        &self,
        p: usize,
        req: &(impl RequestHeaders + ?Sized),
    ) -> Vec<(String, Vec<u8>)> {
        let Some(e) = self.ext_auth(p) else {
            return Vec::new();
        };
        let mut out = vec![
            (":method".to_owned(), b"GET".to_vec()),
            (":path".to_owned(), e.path.as_bytes().to_vec()),
            (":authority".to_owned(), e.authority.as_bytes().to_vec()),
        ];
        for (name, from) in [
            ("x-forwarded-method", ":method"),
            ("x-forwarded-uri", ":path"),
            ("x-forwarded-host", ":authority"),
        ] {
            if let Some(v) = req.header(from) {
                out.push((name.to_owned(), v.to_vec()));
            }
        }
        for h in &e.forward_headers {
            if let Some(v) = req.header(h) {
                out.push((h.clone(), v.to_vec()));
            }
        }
        out
    }

    fn ext_auth_outcome(&self, p: usize, e: &ExtAuthConfig, answer: ExtAuthAnswer) -> Outcome {
        let ExtAuthAnswer::Response {
            status,
            headers,
            body,
        } = answer
        else {
            return Outcome::Unavailable(Reason::ExtAuthUnavailable);
        };
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        match status {
            200..=299 => {
                let id_header = e
                    .identity_header
                    .as_deref()
                    .or(self.identity.as_ref().map(|i| i.header.as_str()));
                let name = id_header
                    .and_then(get)
                    .filter(|v| claims::is_header_value(v));
                let mut identity = self.identity_for_name(p, name.map(Vec::as_slice));
                identity.headers = e
                    .copy_response_headers
                    .iter()
                    .filter_map(|h| Some((h.clone(), get(h)?.clone())))
                    .filter(|(_, v)| claims::is_header_value(v))
                    .collect();
                Outcome::Accepted(identity)
            }
            401 | 403 => Outcome::PassedBack(PassBack {
                status,
                headers: ["www-authenticate", "content-type"]
                    .into_iter()
                    .filter_map(|h| Some((h.to_owned(), get(h)?.clone())))
                    .collect(),
                body,
            }),
            _ => Outcome::Unavailable(Reason::ExtAuthUnavailable),
        }
    }

    /// The headers to set on an allowed request, after the stripped ones
    /// were removed: identity, claims, and what ext auth asked for.
    pub fn identity_headers<'s>(&'s self, identity: &'s Identity) -> Vec<(&'s str, Vec<u8>)> {
        let mut out: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(id) = &self.identity {
            if let Some(s) = &identity.subject {
                out.push((&id.header, s.clone()));
            }
            for (h, c) in &id.claims_to_headers {
                if let Some(v) = claim(&identity.claims, c).and_then(claim_header_value) {
                    out.push((h, v));
                }
            }
        }
        for (h, v) in &identity.headers {
            if !out.iter().any(|(k, _)| k == h) {
                out.push((h, v.clone()));
            }
        }
        out
    }
}

impl Auth {
    /// True when provider `p`'s credential is in the request more than once
    /// (with any values), or in two of its sources with different values.
    fn ambiguous(&self, p: usize, req: &(impl RequestHeaders + ?Sized)) -> bool {
        let repeated = |name: &str| {
            let mut n = 0;
            req.each_value(name, &mut |_| n += 1);
            n > 1
        };
        match &self.providers[p].kind {
            Kind::Jwt(j) => {
                let mut found: Option<&[u8]> = None;
                for s in &j.from {
                    if s.repeated(req) {
                        return true;
                    }
                    match (found, s.read(req)) {
                        (Some(a), Some(b)) if a != b => return true,
                        (None, b) => found = b,
                        _ => {}
                    }
                }
                false
            }
            Kind::ApiKey(a) => repeated(&a.header),
            Kind::Basic(_) => repeated("authorization") || joined(req.header("authorization")),
            Kind::ExtAuth(e) => {
                e.forward_headers.iter().any(|h| h == "authorization") && repeated("authorization")
            }
        }
    }
}

/// True for a token or basic credential with a `,` in it: never part of one,
/// but how Envoy joins a repeated `authorization` header (an inline header)
/// into one value before any filter sees it.
fn joined(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| v.contains(&b','))
}

impl Source {
    /// True when this source appears more than once: a repeated header (or
    /// one Envoy joined with `,`), a cookie set twice (in one `cookie` header
    /// or several), a query parameter given twice.
    fn repeated(&self, req: &(impl RequestHeaders + ?Sized)) -> bool {
        let mut n = 0usize;
        match self {
            Source::Header { name, .. } => {
                req.each_value(name, &mut |v| n += 1 + usize::from(joined(Some(v))));
            }
            Source::Cookie(name) => req.each_value("cookie", &mut |c| n += cookie_count(c, name)),
            Source::Query(name) => {
                if let Some(path) = req.header(":path") {
                    n = query_count(path, name);
                }
            }
        }
        n > 1
    }

    fn read<'r>(&self, req: &'r (impl RequestHeaders + ?Sized)) -> Option<&'r [u8]> {
        let v = match self {
            Source::Header { name, prefix } => {
                let v = req.header(name)?;
                if prefix.is_empty() {
                    v
                } else if v.len() >= prefix.len()
                    && v[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                {
                    &v[prefix.len()..]
                } else {
                    return None;
                }
            }
            Source::Cookie(name) => cookie_value(req.header("cookie")?, name)?,
            Source::Query(name) => query_value(req.header(":path")?, name)?,
        };
        let v = v.trim_ascii();
        (!v.is_empty()).then_some(v)
    }
}

/// The credentials after an auth scheme (`Basic xyz` → `xyz`), scheme case-insensitive.
fn strip_scheme<'v>(value: &'v [u8], scheme: &str) -> Option<&'v [u8]> {
    let n = scheme.len();
    (value.len() > n && value[..n].eq_ignore_ascii_case(scheme.as_bytes()) && value[n] == b' ')
        .then(|| &value[n + 1..])
}

fn compile_jwt(j: &JwtConfig, field: &str) -> Result<Jwt, ConfigError> {
    let static_keys = match (&j.jwks, &j.remote_jwks) {
        (Some(doc), None) => Some(Rc::new(
            KeySet::from_value(doc).map_err(|e| ConfigError::new(format!("{field}.jwks"), e))?,
        )),
        (None, Some(r)) => {
            let f = |k: &str| format!("{field}.remote_jwks.{k}");
            non_empty(&r.cluster, f("cluster"))?;
            non_empty(&r.authority, f("authority"))?;
            path_value(&r.path, f("path"))?;
            if r.refresh_s == 0 {
                return Err(ConfigError::new(f("refresh_s"), "must be positive"));
            }
            if r.timeout_ms == 0 {
                return Err(ConfigError::new(f("timeout_ms"), "must be positive"));
            }
            if r.max_stale_s < r.refresh_s {
                return Err(ConfigError::new(
                    f("max_stale_s"),
                    "must be at least refresh_s (a key set goes stale only after a refresh failed)",
                ));
            }
            None
        }
        _ => {
            return Err(ConfigError::new(
                field,
                "give exactly one of jwks and remote_jwks",
            ))
        }
    };
    let algorithms = match &j.algorithms {
        None => Alg::ALL.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new(
                format!("{field}.algorithms"),
                "list at least one algorithm, or leave the key out",
            ))
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Alg::parse(a).ok_or_else(|| {
                    ConfigError::new(
                        format!("{field}.algorithms[{i}]"),
                        format!("unsupported algorithm {a:?} (none is never accepted)"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    if j.from.is_empty() {
        return Err(ConfigError::new(
            format!("{field}.from"),
            "list at least one token source, or leave the key out",
        ));
    }
    let mut from = Vec::with_capacity(j.from.len());
    for (i, s) in j.from.iter().enumerate() {
        let f = format!("{field}.from[{i}]");
        from.push(match (&s.header, &s.cookie, &s.query) {
            (Some(h), None, None) => Source::Header {
                name: header_name(h, format!("{f}.header"))?,
                prefix: s.prefix.clone().unwrap_or_default(),
            },
            (None, Some(c), None) if s.prefix.is_none() => {
                non_empty(c, format!("{f}.cookie"))?;
                Source::Cookie(c.clone())
            }
            (None, None, Some(q)) if s.prefix.is_none() => {
                non_empty(q, format!("{f}.query"))?;
                Source::Query(q.clone())
            }
            _ => {
                return Err(ConfigError::new(
                    f,
                    "give exactly one of header (with an optional prefix), cookie, query",
                ))
            }
        });
    }
    Ok(Jwt {
        issuer: j.issuer.clone(),
        audiences: j.audiences.clone(),
        static_keys,
        remote: j.remote_jwks.clone(),
        from,
        algorithms,
        clock_skew_s: j.clock_skew_s,
    })
}

fn compile_api_key(a: &ApiKeyConfig, field: &str) -> Result<ApiKeys, ConfigError> {
    let header = header_name(&a.header, format!("{field}.header"))?;
    if a.keys.is_empty() {
        return Err(ConfigError::new(
            format!("{field}.keys"),
            "list at least one key",
        ));
    }
    let mut keys = Vec::with_capacity(a.keys.len());
    for (i, k) in a.keys.iter().enumerate() {
        non_empty(&k.name, format!("{field}.keys[{i}].name"))?;
        let digest = decode_hex32(&k.sha256).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.keys[{i}].sha256"),
                "must be 64 hex digits (the SHA-256 of the key)",
            )
        })?;
        keys.push((k.name.clone(), digest));
    }
    Ok(ApiKeys { header, keys })
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(b[2 * i])? << 4 | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

fn compile_basic(b: &BasicConfig, field: &str) -> Result<Basic, ConfigError> {
    if b.users.is_empty() {
        return Err(ConfigError::new(
            format!("{field}.users"),
            "list at least one user",
        ));
    }
    if b.realm.contains('"') || !claims::is_header_value(b.realm.as_bytes()) {
        return Err(ConfigError::new(
            format!("{field}.realm"),
            "must not contain quotes or control characters",
        ));
    }
    let mut users = Vec::with_capacity(b.users.len());
    for (i, u) in b.users.iter().enumerate() {
        if u.name.is_empty() || u.name.contains(':') {
            return Err(ConfigError::new(
                format!("{field}.users[{i}].name"),
                "must be non-empty and without ':'",
            ));
        }
        if u.bcrypt.parse::<bcrypt::HashParts>().is_err() {
            return Err(ConfigError::new(
                format!("{field}.users[{i}].bcrypt"),
                "not a bcrypt hash ($2b$<cost>$<53 characters>)",
            ));
        }
        users.push((u.name.clone(), u.bcrypt.clone()));
    }
    Ok(Basic {
        users,
        realm: b.realm.clone(),
    })
}

fn compile_ext_auth(e: &ExtAuthConfig, field: &str) -> Result<ExtAuthConfig, ConfigError> {
    let f = |k: &str| format!("{field}.{k}");
    non_empty(&e.cluster, f("cluster"))?;
    non_empty(&e.authority, f("authority"))?;
    path_value(&e.path, f("path"))?;
    if e.timeout_ms == 0 {
        return Err(ConfigError::new(f("timeout_ms"), "must be positive"));
    }
    let headers = |list: &[String], key: &str| -> Result<Vec<String>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, h)| header_name(h, format!("{field}.{key}[{i}]")))
            .collect()
    };
    Ok(ExtAuthConfig {
        forward_headers: headers(&e.forward_headers, "forward_headers")?,
        copy_response_headers: headers(&e.copy_response_headers, "copy_response_headers")?,
        identity_header: match &e.identity_header {
            Some(h) => Some(header_name(h, f("identity_header"))?),
            None => None,
        },
        ..e.clone()
    })
}
