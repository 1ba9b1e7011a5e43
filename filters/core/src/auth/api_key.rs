//! The API-key provider: a key from one header, compared by SHA-256 digest
//! in constant time.

use super::*;
use subtle::ConstantTimeEq;

#[derive(Debug)]
pub(super) struct ApiKeys {
    pub(super) header: String,
    pub(super) keys: Vec<(String, [u8; 32])>,
}

impl Auth {
    pub(super) fn check_api_key(
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
}

pub(super) fn compile_api_key(a: &ApiKeyConfig, field: &str) -> Result<ApiKeys, ConfigError> {
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
