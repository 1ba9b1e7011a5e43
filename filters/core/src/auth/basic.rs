//! The basic-auth provider: a user and password checked against bcrypt
//! hashes, the result cached by digest (bcrypt is slow on purpose).

use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

#[derive(Debug)]
pub(super) struct Basic {
    pub(super) users: Vec<(String, String)>,
    pub(super) realm: String,
}

impl Auth {
    pub(super) fn check_basic(
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
}

pub(super) fn compile_basic(b: &BasicConfig, field: &str) -> Result<Basic, ConfigError> {
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
