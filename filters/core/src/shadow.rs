//! Shadow traffic: which requests are copied to a shadow target (sampled
//! deterministically, safe methods only), how the copy is made safe and
//! tagged, how a shadow target recognises one, and how a shadow response is
//! compared with the primary's (status, headers, JSON-aware body).

pub mod compare;
mod config;
#[cfg(test)]
mod tests;

pub use compare::{classify_answer, status_of, Answer, Captured, Difference};
pub use config::{CompareConfig, Mode, ReceiverConfig, RuleConfig, SafeConfig, ShadowConfig};

use crate::config::{check_rule_name, from_json, header_name, ConfigError};
use crate::headers::RequestHeaders;
use crate::matcher::RequestMatch;
use crate::sampling::Sampler;

/// Envoy's mirror policy appends this to the host of the copy.
pub const SHADOW_SUFFIX: &str = "-shadow";

/// Hop-by-hop and routing headers never copied into a shadow request.
const NOT_COPIED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "content-length",
];

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    matcher: RequestMatch,
    sampler: Sampler,
    pub target_cluster: String,
    pub mode: Mode,
}

/// A validated shadow configuration.
#[derive(Debug)]
pub struct Shadow {
    pub rules: Vec<Rule>,
    sample_by: String,
    cluster_header: String,
    tag_header: String,
    safe_methods: Vec<String>,
    strip_headers: Vec<String>,
    pub compare: CompareConfig,
    ignore_headers: Vec<String>,
    pub receiver: Option<ReceiverConfig>,
    header_names: Vec<String>,
    /// The `path_normalization` this configuration set, if it did (the
    /// filter applies it before every policy).
    pub path_normalization: Option<crate::path::PathNormalization>,
}

/// What each mode does with a primary request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decisions {
    pub mirror: Decision,
    pub compare: Decision,
}

/// What one mode does with a primary request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No rule matches.
    None,
    /// A rule matches but this request is not in its sample.
    NotSampled(usize),
    /// Sampled, but its method is not safe: never shadowed.
    Unsafe(usize),
    /// Copy it with rule `.0`'s mode.
    Shadow(usize),
}

impl Rule {
    /// Which requests this rule copies (for explanations).
    pub fn matcher(&self) -> &RequestMatch {
        &self.matcher
    }
}

impl Shadow {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(&from_json::<ShadowConfig>(bytes)?)
    }

    pub fn compile(c: &ShadowConfig) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, r) in c.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            check_rule_name(&r.name, &format!("{field}.name"))?;
            if r.target_cluster.is_empty()
                || !r.target_cluster.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(ConfigError::new(
                    format!("{field}.target_cluster"),
                    "name the cluster that receives the shadow copy",
                ));
            }
            rules.push(Rule {
                name: r.name.clone(),
                matcher: RequestMatch::compile(&r.match_, &format!("{field}.match"))?,
                sampler: Sampler::new(r.percent, &r.name, &format!("{field}.percent"))?,
                target_cluster: r.target_cluster.clone(),
                mode: r.mode,
            });
        }
        let sample_by = header_name(
            c.sample_by.as_deref().unwrap_or("x-request-id"),
            "sample_by",
        )?;
        let cluster_header = header_name(
            c.cluster_header.as_deref().unwrap_or("x-shadow-cluster"),
            "cluster_header",
        )?;
        let tag_header = header_name(c.tag_header.as_deref().unwrap_or("x-shadow"), "tag_header")?;
        for (i, m) in c.safe.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::new(
                    format!("safe.methods[{i}]"),
                    "an upper-case HTTP method such as GET",
                ));
            }
        }
        let strip_headers = c
            .safe
            .strip_headers
            .iter()
            .enumerate()
            .map(|(i, h)| header_name(h, &format!("safe.strip_headers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let ignore_headers = c
            .compare
            .ignore_headers
            .iter()
            .enumerate()
            .map(|(i, h)| header_name(h, &format!("compare.ignore_headers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, p) in c.compare.ignore_json_paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(ConfigError::new(
                    format!("compare.ignore_json_paths[{i}]"),
                    "a JSON pointer such as /timestamp",
                ));
            }
        }
        if c.compare.timeout_ms == 0 {
            return Err(ConfigError::new("compare.timeout_ms", "must be positive"));
        }
        if c.compare.max_pending == 0 {
            return Err(ConfigError::new("compare.max_pending", "must be positive"));
        }
        if let Some(status) = c.receiver.as_ref().and_then(|r| r.answer_unsafe) {
            if !(200..=599).contains(&status) {
                return Err(ConfigError::new(
                    "receiver.answer_unsafe",
                    "an HTTP status from 200 to 599",
                ));
            }
        }
        let mut header_names: Vec<String> = Vec::new();
        let mut add = |name: &str| {
            if !header_names.iter().any(|n| n == name) {
                header_names.push(name.to_owned());
            }
        };
        for r in &rules {
            r.matcher.header_names().for_each(&mut add);
        }
        add(":method");
        add(":authority");
        add(&sample_by);
        add(&tag_header);
        Ok(Self {
            path_normalization: c.path_normalization,
            rules,
            sample_by,
            cluster_header,
            tag_header,
            safe_methods: c.safe.methods.clone(),
            strip_headers,
            compare: c.compare.clone(),
            ignore_headers,
            receiver: c.receiver.clone(),
            header_names,
        })
    }

    /// Every request header a decision reads.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// True when a rule matches on verified claims, so the host fetches
    /// them only then.
    pub fn reads_claims(&self) -> bool {
        self.rules.iter().any(|r| r.matcher.reads_claims())
    }

    pub fn cluster_header(&self) -> &str {
        &self.cluster_header
    }

    pub fn tag_header(&self) -> &str {
        &self.tag_header
    }

    pub fn strip_headers(&self) -> &[String] {
        &self.strip_headers
    }

    /// Whether a primary request is shadowed by each mode: the first
    /// matching rule of each mode decides, so a request may be mirrored by
    /// one rule and compared by another. `random` decides for requests
    /// without a sampling key.
    pub fn decide(&self, req: &(impl RequestHeaders + ?Sized), random: u64) -> Decisions {
        Decisions {
            mirror: self.decide_mode(req, random, Mode::Mirror),
            compare: self.decide_mode(req, random, Mode::Compare),
        }
    }

    fn decide_mode(
        &self,
        req: &(impl RequestHeaders + ?Sized),
        random: u64,
        mode: Mode,
    ) -> Decision {
        let Some(i) = self
            .rules
            .iter()
            .position(|r| r.mode == mode && r.matcher.matches(req))
        else {
            return Decision::None;
        };
        if !self.rules[i]
            .sampler
            .sampled(req.header(&self.sample_by), random)
        {
            return Decision::NotSampled(i);
        }
        if !self.is_safe(req) {
            return Decision::Unsafe(i);
        }
        Decision::Shadow(i)
    }

    fn is_safe(&self, req: &(impl RequestHeaders + ?Sized)) -> bool {
        req.header(":method")
            .is_some_and(|m| self.safe_methods.iter().any(|s| s.as_bytes() == m))
    }

    /// On the receiving side: whether a request is a shadow copy (tagged, or
    /// its authority carries Envoy's `-shadow` suffix).
    pub fn is_shadow(&self, req: &(impl RequestHeaders + ?Sized)) -> bool {
        req.header(&self.tag_header).is_some_and(|v| v == b"true")
            || req
                .header(":authority")
                .is_some_and(|a| split_port(a).0.ends_with(SHADOW_SUFFIX.as_bytes()))
    }

    /// On the receiving side: the status to answer a shadow copy with
    /// instead of letting it through, when its method is not safe.
    pub fn answer_unsafe(&self, req: &(impl RequestHeaders + ?Sized)) -> Option<u16> {
        let status = self.receiver.as_ref()?.answer_unsafe?;
        (!self.is_safe(req)).then_some(status)
    }

    /// The shadow copy of a request for the filter to send itself: the
    /// primary's headers without hop-by-hop, routing and `strip_headers`,
    /// the authority suffixed with `-shadow` (as Envoy's mirror does), and
    /// the tag.
    pub fn shadow_request(&self, primary: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = primary
            .iter()
            .filter(|(k, _)| {
                !NOT_COPIED.contains(&k.as_str())
                    && *k != self.cluster_header
                    && *k != self.tag_header
                    && !self.strip_headers.contains(k)
            })
            .map(|(k, v)| {
                if k == ":authority" {
                    (k.clone(), shadow_authority(v))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        out.push((self.tag_header.clone(), b"true".to_vec()));
        out
    }

    /// Every place (up to `limit`) the bodies differ, where
    /// [`Shadow::compare`] reports the first; none when a body was truncated.
    pub fn body_differences(
        &self,
        primary: &Captured,
        shadow: &Captured,
        limit: usize,
    ) -> Vec<String> {
        if primary.truncated || shadow.truncated {
            return Vec::new();
        }
        compare::body_differences(
            &primary.body,
            &shadow.body,
            &self.compare.ignore_json_paths,
            limit,
        )
    }

    /// Compares a shadow response with the primary's.
    pub fn compare(&self, primary: &Captured, shadow: &Captured) -> Difference {
        compare::compare(
            primary,
            shadow,
            &self.ignore_headers,
            &self.compare.ignore_json_paths,
        )
    }
}

/// `host[:port]` → `host-shadow[:port]`, as Envoy's mirror policy does.
pub fn shadow_authority(authority: &[u8]) -> Vec<u8> {
    let (host, port) = split_port(authority);
    [host, SHADOW_SUFFIX.as_bytes(), port].concat()
}

/// `host:port` → (`host`, `:port`); no numeric port → (whole, empty).
fn split_port(authority: &[u8]) -> (&[u8], &[u8]) {
    match authority.iter().rposition(|b| *b == b':') {
        Some(i) if authority[i + 1..].iter().all(u8::is_ascii_digit) => authority.split_at(i),
        _ => (authority, &[]),
    }
}
