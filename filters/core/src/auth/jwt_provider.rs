//! The JWT provider: a bearer token verified against a key set (inline or
//! fetched), its claims checked, the verdict cached per token.

use super::*;

#[derive(Debug)]
pub(super) struct Jwt {
    pub(super) issuer: Option<String>,
    pub(super) audiences: Vec<String>,
    pub(super) static_keys: Option<Rc<KeySet>>,
    pub(super) remote: Option<RemoteJwksConfig>,
    pub(super) from: Vec<Source>,
    pub(super) algorithms: Vec<Alg>,
    pub(super) clock_skew_s: u64,
}

impl Auth {
    pub(super) fn check_jwt(
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
        let (key, hit) = env.caches.token(raw, p);
        if let Some(hit) = hit {
            if env.now_s < hit.valid_until {
                return Ok(Outcome::Accepted(hit.identity.clone()));
            }
            env.caches.tokens.remove(&key);
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
            .and_then(claim_header_value)
            .map(Rc::from);
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
        env.caches.insert_token(
            key,
            p,
            CachedToken {
                token: token.as_bytes().into(),
                identity: identity.clone(),
                valid_until,
            },
        );
        Ok(Outcome::Accepted(identity))
    }
}

pub(super) fn compile_jwt(j: &JwtConfig, field: &str) -> Result<Jwt, ConfigError> {
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
