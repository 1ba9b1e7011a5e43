//! Version routing: which version serves a request.
//!
//! The decision is written into a request header (`version_header`) that the
//! proxy's route table matches to pick the upstream subset.

mod config;

pub use config::{OverrideConfig, RouteConfig, RouterConfig, SplitConfig, StickyConfig};

use crate::claims::claim;
use crate::config::{from_json, is_header_name, is_token, ConfigError};
use crate::headers::RequestHeaders;
use crate::matcher::{cookie_value, RequestMatch};
use serde_json::Value;
use std::borrow::Cow;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Why a version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client pinned it with the override header.
    Override,
    /// A route with a fixed version matched.
    Route,
    /// A split chose it from the stable hash of the sticky key.
    StickySplit,
    /// A split chose it at random (no sticky key configured or present).
    RandomSplit,
    /// No route matched.
    Default,
}

/// One routing decision. `outcome` indexes [`Router::outcomes`], so a host
/// can keep one counter per (rule, version) without building names per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub version: &'a str,
    pub rule: &'a str,
    pub reason: Reason,
    pub outcome: usize,
    /// For a split: the bucket drawn out of `total` (the weights' sum).
    pub bucket: Option<(u64, u64)>,
}

/// A (rule, version) pair a decision can produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub rule: String,
    pub version: String,
}

#[derive(Debug)]
enum Target {
    Fixed {
        outcome: usize,
    },
    Split {
        /// Running totals of the weights, with the outcome each bucket maps to.
        cumulative: Vec<(u64, usize)>,
        total: u64,
        sticky: Option<StickyConfig>,
        /// Per-route seed so that two splits on the same key are independent.
        seed: u64,
    },
}

#[derive(Debug)]
struct Route {
    name: String,
    matcher: RequestMatch,
    target: Target,
}

/// A validated, compiled router configuration.
#[derive(Debug)]
pub struct Router {
    version_header: String,
    served_version_header: Option<String>,
    routes: Vec<Route>,
    default_outcome: usize,
    override_header: Option<String>,
    /// (allowed version, its outcome).
    override_allow: Vec<(String, usize)>,
    outcomes: Vec<Outcome>,
    header_names: Vec<String>,
    /// The `path_normalization` this configuration set, if it did (the
    /// filter applies it before every policy).
    pub path_normalization: Option<crate::path::PathNormalization>,
}

pub const OVERRIDE_RULE: &str = "override";
pub const DEFAULT_RULE: &str = "default";

impl Router {
    /// Parses and validates JSON configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(&from_json::<RouterConfig>(bytes)?)
    }

    pub fn compile(config: &RouterConfig) -> Result<Self, ConfigError> {
        let version_header = config.version_header.to_ascii_lowercase();
        if !is_header_name(&version_header) {
            return Err(ConfigError::new(
                "version_header",
                "not a valid header name",
            ));
        }
        let served_version_header = match &config.served_version_header {
            None => None,
            Some(h) if h.is_empty() => None,
            Some(h) => {
                let h = h.to_ascii_lowercase();
                if !is_header_name(&h) {
                    return Err(ConfigError::new(
                        "served_version_header",
                        "not a valid header name",
                    ));
                }
                Some(h)
            }
        };

        let mut known = Known::new(config.versions.as_deref())?;
        known.check(&config.default_version, "default_version")?;

        let mut outcomes = Vec::new();
        let mut outcome = |rule: &str, version: &str| -> usize {
            let o = Outcome {
                rule: rule.into(),
                version: version.into(),
            };
            outcomes.iter().position(|x| *x == o).unwrap_or_else(|| {
                outcomes.push(o);
                outcomes.len() - 1
            })
        };

        let mut routes = Vec::with_capacity(config.routes.len());
        let mut names: Vec<String> = Vec::new();
        for (i, rc) in config.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            let name = rc.name.clone().unwrap_or_else(|| format!("route-{i}"));
            if !is_token(&name) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    "must be non-empty printable ASCII without spaces",
                ));
            }
            if name == OVERRIDE_RULE || name == DEFAULT_RULE || names.contains(&name) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    format!("duplicate or reserved route name {name:?}"),
                ));
            }
            names.push(name.clone());

            let matcher = RequestMatch::compile(&rc.match_, &format!("{field}.match"))?;
            if matcher.reads_header(&version_header) {
                return Err(ConfigError::new(
                    format!("{field}.match.headers.{version_header}"),
                    "cannot match on version_header: the filter replaces any client-sent value",
                ));
            }
            let target = match (&rc.version, &rc.split) {
                (Some(v), None) => {
                    if rc.sticky.is_some() {
                        return Err(ConfigError::new(
                            format!("{field}.sticky"),
                            "only applies to a split",
                        ));
                    }
                    known.check(v, &format!("{field}.version"))?;
                    Target::Fixed {
                        outcome: outcome(&name, v),
                    }
                }
                (None, Some(split)) => {
                    if split.is_empty() {
                        return Err(ConfigError::new(
                            format!("{field}.split"),
                            "list at least one version",
                        ));
                    }
                    let mut total = 0u64;
                    let mut cumulative = Vec::with_capacity(split.len());
                    for (j, s) in split.iter().enumerate() {
                        known.check(&s.version, &format!("{field}.split[{j}].version"))?;
                        if s.weight == 0 {
                            continue;
                        }
                        total += u64::from(s.weight);
                        cumulative.push((total, outcome(&name, &s.version)));
                    }
                    if total == 0 {
                        return Err(ConfigError::new(
                            format!("{field}.split"),
                            "total weight must be positive",
                        ));
                    }
                    if let Some(StickyConfig::Header(h)) = &rc.sticky {
                        if !is_header_name(&h.to_ascii_lowercase()) {
                            return Err(ConfigError::new(
                                format!("{field}.sticky.header"),
                                "not a valid header name",
                            ));
                        }
                    }
                    if let Some(StickyConfig::Claim(c)) = &rc.sticky {
                        if c.is_empty() {
                            return Err(ConfigError::new(
                                format!("{field}.sticky.claim"),
                                "claim name must not be empty",
                            ));
                        }
                    }
                    let sticky = rc.sticky.clone().map(|s| match s {
                        StickyConfig::Header(h) => StickyConfig::Header(h.to_ascii_lowercase()),
                        other => other,
                    });
                    Target::Split {
                        cumulative,
                        total,
                        sticky,
                        seed: xxh3_64(name.as_bytes()),
                    }
                }
                _ => {
                    return Err(ConfigError::new(
                        field,
                        "give exactly one of `version` and `split`",
                    ));
                }
            };
            routes.push(Route {
                name,
                matcher,
                target,
            });
        }

        let (override_header, override_allow) = match &config.override_ {
            None => (None, Vec::new()),
            Some(o) => {
                let header = o.header.to_ascii_lowercase();
                if !is_header_name(&header) {
                    return Err(ConfigError::new(
                        "override.header",
                        "not a valid header name",
                    ));
                }
                if header == version_header {
                    return Err(ConfigError::new(
                        "override.header",
                        "must differ from version_header, which clients cannot set",
                    ));
                }
                let mut allow = Vec::with_capacity(o.allow.len());
                for (j, v) in o.allow.iter().enumerate() {
                    known.check_existing(v, &format!("override.allow[{j}]"))?;
                    allow.push((v.clone(), outcome(OVERRIDE_RULE, v)));
                }
                (Some(header), allow)
            }
        };
        let default_outcome = outcome(DEFAULT_RULE, &config.default_version);

        let mut header_names: Vec<String> = Vec::new();
        let mut need = |h: &str| {
            if !header_names.iter().any(|x| x == h) {
                header_names.push(h.to_owned());
            }
        };
        if let Some(h) = &override_header {
            need(h);
        }
        for r in &routes {
            r.matcher.header_names().for_each(&mut need);
            if let Target::Split {
                sticky: Some(s), ..
            } = &r.target
            {
                match s {
                    StickyConfig::Header(h) => need(h),
                    StickyConfig::Cookie(_) => need("cookie"),
                    StickyConfig::Claim(_) => {}
                }
            }
        }

        Ok(Self {
            path_normalization: config.path_normalization,
            version_header,
            served_version_header,
            routes,
            default_outcome,
            override_header,
            override_allow,
            outcomes,
            header_names,
        })
    }

    /// Decides the version for a request. `random` is a fresh draw from a
    /// uniform or equidistributed sequence over all of `u64`, used only by
    /// splits that have no sticky key for this request.
    pub fn decide(&self, req: &(impl RequestHeaders + ?Sized), random: u64) -> Decision<'_> {
        if let Some(h) = &self.override_header {
            if let Some(wanted) = req.header(h) {
                if let Some((_, o)) = self
                    .override_allow
                    .iter()
                    .find(|(v, _)| v.as_bytes() == wanted)
                {
                    return self.decision(*o, Reason::Override);
                }
            }
        }
        for route in &self.routes {
            if !route.matcher.matches(req) {
                continue;
            }
            return match &route.target {
                Target::Fixed { outcome } => self.decision(*outcome, Reason::Route),
                Target::Split {
                    cumulative,
                    total,
                    sticky,
                    seed,
                } => {
                    let key = sticky.as_ref().and_then(|s| match s {
                        StickyConfig::Header(h) => req.header(h).map(Cow::Borrowed),
                        StickyConfig::Cookie(c) => req
                            .header("cookie")
                            .and_then(|v| cookie_value(v, c))
                            .map(Cow::Borrowed),
                        StickyConfig::Claim(c) => req
                            .claims()
                            .and_then(|claims| claim(claims, c))
                            .and_then(|v| match v {
                                Value::String(s) => Some(Cow::Borrowed(s.as_bytes())),
                                Value::Number(n) => Some(Cow::Owned(n.to_string().into_bytes())),
                                _ => None,
                            }),
                    });
                    let (draw, reason) = match key {
                        Some(k) if !k.is_empty() => {
                            (xxh3_64_with_seed(&k, *seed), Reason::StickySplit)
                        }
                        _ => (random, Reason::RandomSplit),
                    };
                    // Multiply-high keeps an equidistributed draw equidistributed
                    // over the buckets (a modulo would not).
                    let bucket = ((u128::from(draw) * u128::from(*total)) >> 64) as u64;
                    let outcome = cumulative
                        .iter()
                        .find(|(upper, _)| bucket < *upper)
                        .map_or(self.default_outcome, |(_, o)| *o);
                    Decision {
                        bucket: Some((bucket, *total)),
                        ..self.decision(outcome, reason)
                    }
                }
            };
        }
        self.decision(self.default_outcome, Reason::Default)
    }

    /// True when a client asked for an override the configuration does not allow.
    pub fn override_rejected(&self, req: &(impl RequestHeaders + ?Sized)) -> bool {
        self.override_header
            .as_deref()
            .and_then(|h| req.header(h))
            .is_some_and(|v| !self.override_allow.iter().any(|(a, _)| a.as_bytes() == v))
    }

    fn decision(&self, outcome: usize, reason: Reason) -> Decision<'_> {
        let o = &self.outcomes[outcome];
        Decision {
            version: &o.version,
            rule: &o.rule,
            reason,
            outcome,
            bucket: None,
        }
    }

    pub fn version_header(&self) -> &str {
        &self.version_header
    }

    pub fn served_version_header(&self) -> Option<&str> {
        self.served_version_header.as_deref()
    }

    /// Every (rule, version) a decision can produce, indexed by `Decision::outcome`.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// The request headers a decision may read; a host need fetch only these.
    /// True when a decision reads verified claims (a `claims` match or a
    /// sticky claim), so the host fetches them only then.
    pub fn reads_claims(&self) -> bool {
        self.routes.iter().any(|r| {
            r.matcher.reads_claims()
                || matches!(
                    &r.target,
                    Target::Split {
                        sticky: Some(StickyConfig::Claim(_)),
                        ..
                    }
                )
        })
    }

    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// Each route's name and match, in the order decisions try them (for
    /// explanations).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &RequestMatch)> {
        self.routes.iter().map(|r| (r.name.as_str(), &r.matcher))
    }

    /// Where a route's split reads its sticky key, if it is a sticky split.
    pub fn sticky(&self, route: &str) -> Option<&StickyConfig> {
        self.routes
            .iter()
            .find(|r| r.name == route)
            .and_then(|r| match &r.target {
                Target::Split { sticky, .. } => sticky.as_ref(),
                Target::Fixed { .. } => None,
            })
    }

    /// The override header, if clients may pin a version.
    pub fn override_header(&self) -> Option<&str> {
        self.override_header.as_deref()
    }
}

/// The versions a configuration may name.
struct Known {
    declared: Option<Vec<String>>,
    seen: Vec<String>,
}

impl Known {
    fn new(declared: Option<&[String]>) -> Result<Self, ConfigError> {
        if let Some(list) = declared {
            for (i, v) in list.iter().enumerate() {
                if !is_token(v) {
                    return Err(ConfigError::new(
                        format!("versions[{i}]"),
                        "must be non-empty printable ASCII without spaces",
                    ));
                }
            }
        }
        Ok(Self {
            declared: declared.map(<[String]>::to_vec),
            seen: Vec::new(),
        })
    }

    /// Records a version used by a route or the default.
    fn check(&mut self, v: &str, field: &str) -> Result<(), ConfigError> {
        if !is_token(v) {
            return Err(ConfigError::new(
                field,
                "a version must be non-empty printable ASCII without spaces",
            ));
        }
        if let Some(d) = &self.declared {
            if !d.iter().any(|x| x == v) {
                return Err(ConfigError::new(
                    field,
                    format!("unknown version {v:?} (versions: {})", d.join(", ")),
                ));
            }
        }
        if !self.seen.iter().any(|x| x == v) {
            self.seen.push(v.into());
        }
        Ok(())
    }

    /// A version that must already be known (declared, or used by a route or the default).
    fn check_existing(&self, v: &str, field: &str) -> Result<(), ConfigError> {
        let list = self.declared.as_ref().unwrap_or(&self.seen);
        if list.iter().any(|x| x == v) {
            Ok(())
        } else {
            Err(ConfigError::new(
                field,
                format!("unknown version {v:?} (known: {})", list.join(", ")),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
