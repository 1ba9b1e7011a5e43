//! JSON Web Tokens (RFC 7519) signed with JWS compact serialisation, and the
//! JSON Web Key sets (RFC 7517) that verify them.
//!
//! Keys are typed by algorithm family, so a token can only be checked with a
//! key of its own kind: an HS256 token is never checked against an RSA key's
//! bytes (algorithm confusion), and `alg: none` has no key at all.

use crate::json::parse_strict;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::signature::Verifier;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The JWS algorithms Switchyard verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 10] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn parse(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The hash name Envoy's `verify_signature` takes, for the algorithms the
    /// host can check (PKCS#1 v1.5 RSA and ECDSA).
    fn host_hash(self) -> Option<&'static str> {
        match self {
            Alg::RS256 | Alg::ES256 => Some("sha256"),
            Alg::RS384 | Alg::ES384 => Some("sha384"),
            Alg::RS512 => Some("sha512"),
            _ => None,
        }
    }
}

/// Key material, by family.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    Hmac(Vec<u8>),
    Rsa(Box<rsa::RsaPublicKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// One usable key of a set.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// When the JWK names an algorithm, the key is used for that one only.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
    /// SubjectPublicKeyInfo DER, for the host's `verify_signature`.
    spki: Option<Vec<u8>>,
}

impl Jwk {
    /// Whether this key may verify `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (KeyMaterial::Hmac(_), Alg::HS256 | Alg::HS384 | Alg::HS512)
                | (
                    KeyMaterial::Rsa(_),
                    Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256
                )
                | (KeyMaterial::P256(_), Alg::ES256)
                | (KeyMaterial::P384(_), Alg::ES384)
                | (KeyMaterial::Ed25519(_), Alg::EdDSA)
        )
    }
}

/// A parsed JWKS: the usable keys, plus why the others were skipped.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
    pub skipped: Vec<String>,
}

/// Smallest RSA modulus accepted (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

impl KeySet {
    /// Parses a JWKS document. Keys Switchyard cannot use (encryption keys,
    /// unknown types, short RSA moduli) are skipped and listed; a set with no
    /// usable key is an error.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let doc = parse_strict(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
        Self::from_value(&doc)
    }

    pub fn from_value(doc: &Value) -> Result<KeySet, String> {
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS document: no `keys` array")?;
        let mut set = KeySet::default();
        for (i, k) in keys.iter().enumerate() {
            match parse_jwk(k) {
                Ok(jwk) => set.keys.push(jwk),
                Err(why) => set.skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if set.keys.is_empty() {
            let why = if set.skipped.is_empty() {
                "the key set is empty".to_owned()
            } else {
                format!("no usable key ({})", set.skipped.join("; "))
            };
            return Err(why);
        }
        Ok(set)
    }
}

fn b64_field(k: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = k
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("`{name}` is not base64url"))
}

fn parse_jwk(k: &Value) -> Result<Jwk, String> {
    let str_field = |name: &str| k.get(name).and_then(Value::as_str);
    if let Some(u) = str_field("use") {
        if u != "sig" {
            return Err(format!("`use` is {u:?}, not \"sig\""));
        }
    }
    let alg = match str_field("alg") {
        Some(a) => Some(Alg::parse(a).ok_or_else(|| format!("unsupported alg {a:?}"))?),
        None => None,
    };
    let (material, spki) = match str_field("kty") {
        Some("oct") => {
            let secret = b64_field(k, "k")?;
            if secret.len() < 32 {
                return Err("HMAC secret shorter than 256 bits".into());
            }
            (KeyMaterial::Hmac(secret), None)
        }
        Some("RSA") => {
            let n = b64_field(k, "n")?;
            let e = b64_field(k, "e")?;
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .map_err(|e| format!("invalid RSA key: {e}"))?;
            if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
                return Err(format!("RSA key shorter than {MIN_RSA_BITS} bits"));
            }
            (KeyMaterial::Rsa(Box::new(key)), Some(der::rsa_spki(&n, &e)))
        }
        Some("EC") => {
            let x = b64_field(k, "x")?;
            let y = b64_field(k, "y")?;
            let point = [&[4u8][..], &x, &y].concat();
            match str_field("crv") {
                Some("P-256") if x.len() == 32 && y.len() == 32 => (
                    KeyMaterial::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                            .map_err(|_| "invalid P-256 point")?,
                    ),
                    Some(der::ec_spki(der::OID_P256, &point)),
                ),
                Some("P-384") if x.len() == 48 && y.len() == 48 => (
                    KeyMaterial::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                            .map_err(|_| "invalid P-384 point")?,
                    ),
                    Some(der::ec_spki(der::OID_P384, &point)),
                ),
                other => return Err(format!("unsupported EC curve or size {other:?}")),
            }
        }
        Some("OKP") => {
            if str_field("crv") != Some("Ed25519") {
                return Err("unsupported OKP curve".into());
            }
            let x: [u8; 32] = b64_field(k, "x")?
                .try_into()
                .map_err(|_| "Ed25519 key is not 32 bytes")?;
            (
                KeyMaterial::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| "invalid Ed25519 key")?,
                ),
                None,
            )
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    let jwk = Jwk {
        kid: str_field("kid").map(str::to_owned),
        alg,
        material,
        spki,
    };
    if let Some(a) = alg {
        if !jwk.fits(a) {
            return Err(format!("alg {} does not fit the key type", a.name()));
        }
    }
    Ok(jwk)
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    Malformed,
    AlgNotAllowed,
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    IssuerMismatch,
    AudienceMismatch,
}

impl TokenError {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::TooLarge => "token_too_large",
            TokenError::Malformed => "token_malformed",
            TokenError::AlgNotAllowed => "token_alg_not_allowed",
            TokenError::UnknownKid => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "token_issued_in_future",
            TokenError::IssuerMismatch => "token_issuer_mismatch",
            TokenError::AudienceMismatch => "token_audience_mismatch",
        }
    }
}

/// A signature check the host may do natively (Envoy's `verify_signature`).
pub struct HostVerify<'a> {
    /// `sha256`, `sha384` or `sha512`.
    pub hash: &'static str,
    /// SubjectPublicKeyInfo DER.
    pub public_key: &'a [u8],
    /// PKCS#1 v1.5 signature bytes, or a DER ECDSA signature.
    pub signature: &'a [u8],
    pub text: &'a [u8],
}

/// Asks the host to check a signature: `Some(valid)`, or `None` when the host
/// cannot (then the check runs in wasm).
pub type HostVerifier<'v> = dyn FnMut(&HostVerify<'_>) -> Option<bool> + 'v;

/// A token split into its parts, header checked, not yet verified.
pub struct Parsed<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub signing_input: &'t [u8],
    /// The decoded payload; parsed only after the signature holds.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, checking its header against `allowed`.
pub fn parse<'t>(token: &'t str, allowed: &[Alg]) -> Result<Parsed<'t>, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Malformed)?;
    let header = parse_strict(&header).map_err(|_| TokenError::Malformed)?;
    let header = header.as_object().ok_or(TokenError::Malformed)?;
    // Extensions we do not understand must be rejected (RFC 7515 §4.1.11).
    if header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?;
    let alg = Alg::parse(alg)
        .filter(|a| allowed.contains(a))
        .ok_or(TokenError::AlgNotAllowed)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    Ok(Parsed {
        alg,
        kid,
        signing_input: &token.as_bytes()[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

impl Parsed<'_> {
    /// Checks the signature with the key the `kid` names, or, without a `kid`,
    /// with every key of the right type.
    pub fn verify(&self, keys: &KeySet, host: &mut HostVerifier<'_>) -> Result<(), TokenError> {
        let mut candidates = keys
            .keys
            .iter()
            .filter(|k| k.fits(self.alg))
            .filter(|k| self.kid.is_none() || k.kid == self.kid)
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKid);
        }
        if candidates.any(|k| verify_with(self.alg, k, self.signing_input, &self.signature, host)) {
            Ok(())
        } else {
            Err(TokenError::BadSignature)
        }
    }

    /// Decodes the payload (strictly: duplicate claims are malformed).
    pub fn claims(&self) -> Result<Value, TokenError> {
        let claims = parse_strict(&self.payload).map_err(|_| TokenError::Malformed)?;
        if claims.is_object() {
            Ok(claims)
        } else {
            Err(TokenError::Malformed)
        }
    }
}

/// What the claims must say, besides the signature.
pub struct ClaimRules<'a> {
    pub issuer: Option<&'a str>,
    pub audiences: &'a [String],
    pub clock_skew_s: u64,
}

/// Checks `exp`, `nbf`, `iat`, `iss` and `aud` at `now_s`.
pub fn check_claims(claims: &Value, rules: &ClaimRules<'_>, now_s: u64) -> Result<(), TokenError> {
    let time = |name: &str| -> Result<Option<u64>, TokenError> {
        match claims.get(name) {
            None => Ok(None),
            // Fractional seconds are allowed (NumericDate); negative times are not.
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or(TokenError::Malformed),
            Some(_) => Err(TokenError::Malformed),
        }
    };
    let skew = rules.clock_skew_s;
    if let Some(exp) = time("exp")? {
        if now_s >= exp.saturating_add(skew) {
            return Err(TokenError::Expired);
        }
    }
    if let Some(nbf) = time("nbf")? {
        if now_s.saturating_add(skew) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(iat) = time("iat")? {
        if now_s.saturating_add(skew) < iat {
            return Err(TokenError::IssuedInFuture);
        }
    }
    if let Some(want) = rules.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(want) {
            return Err(TokenError::IssuerMismatch);
        }
    }
    if !rules.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => rules.audiences.iter().any(|w| w == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audiences.iter().any(|w| w == a)),
            _ => false,
        };
        if !ok {
            return Err(TokenError::AudienceMismatch);
        }
    }
    Ok(())
}

/// The token's expiry, for caching.
pub fn expiry(claims: &Value) -> Option<u64> {
    claims.get("exp").and_then(Value::as_u64)
}

fn verify_with(alg: Alg, key: &Jwk, input: &[u8], sig: &[u8], host: &mut HostVerifier<'_>) -> bool {
    if let (Some(hash), Some(spki)) = (alg.host_hash(), key.spki.as_deref()) {
        let signature = match &key.material {
            KeyMaterial::P256(_) if sig.len() == 64 => Some(der::ecdsa_signature(sig)),
            KeyMaterial::P384(_) if sig.len() == 96 => Some(der::ecdsa_signature(sig)),
            KeyMaterial::Rsa(_) => None,
            _ => return false,
        };
        let request = HostVerify {
            hash,
            public_key: spki,
            signature: signature.as_deref().unwrap_or(sig),
            text: input,
        };
        if let Some(valid) = host(&request) {
            return valid;
        }
    }
    verify_in_wasm(alg, &key.material, input, sig)
}

fn verify_in_wasm(alg: Alg, key: &KeyMaterial, input: &[u8], sig: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    use rsa::{pkcs1v15, pss};
    // `verify_slice` compares in constant time.
    macro_rules! hmac {
        ($hash:ty, $secret:expr) => {
            Hmac::<$hash>::new_from_slice($secret).is_ok_and(|mut mac| {
                mac.update(input);
                mac.verify_slice(sig).is_ok()
            })
        };
    }
    macro_rules! rsa {
        ($scheme:ident, $hash:ty, $key:expr) => {
            $scheme::Signature::try_from(sig).is_ok_and(|s| {
                $scheme::VerifyingKey::<$hash>::new((**$key).clone())
                    .verify(input, &s)
                    .is_ok()
            })
        };
    }
    match (alg, key) {
        (Alg::HS256, KeyMaterial::Hmac(k)) => hmac!(Sha256, k),
        (Alg::HS384, KeyMaterial::Hmac(k)) => hmac!(Sha384, k),
        (Alg::HS512, KeyMaterial::Hmac(k)) => hmac!(Sha512, k),
        (Alg::RS256, KeyMaterial::Rsa(k)) => rsa!(pkcs1v15, Sha256, k),
        (Alg::RS384, KeyMaterial::Rsa(k)) => rsa!(pkcs1v15, Sha384, k),
        (Alg::RS512, KeyMaterial::Rsa(k)) => rsa!(pkcs1v15, Sha512, k),
        (Alg::PS256, KeyMaterial::Rsa(k)) => rsa!(pss, Sha256, k),
        (Alg::ES256, KeyMaterial::P256(k)) => {
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        (Alg::ES384, KeyMaterial::P384(k)) => {
            p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        (Alg::EdDSA, KeyMaterial::Ed25519(k)) => ed25519_dalek::Signature::from_slice(sig)
            .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
        _ => false,
    }
}

/// The few DER structures the host's `verify_signature` takes.
mod der {
    pub const OID_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    pub const OID_P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
    const OID_RSA: &[u8] = &[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else if n <= 0xFF {
            out.extend([0x81, n as u8]);
        } else {
            out.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    /// An unsigned big-endian integer as a DER INTEGER.
    fn uint(bytes: &[u8]) -> Vec<u8> {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let mut v = bytes[start..].to_vec();
        if v.first().is_none_or(|&b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        tlv(0x02, &v)
    }

    fn bit_string(content: &[u8]) -> Vec<u8> {
        tlv(0x03, &[&[0u8][..], content].concat())
    }

    pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
        let key = tlv(0x30, &[uint(n), uint(e)].concat());
        tlv(0x30, &[tlv(0x30, OID_RSA), bit_string(&key)].concat())
    }

    pub fn ec_spki(curve: &[u8], point: &[u8]) -> Vec<u8> {
        let alg = tlv(0x30, &[OID_EC_PUBLIC_KEY, curve].concat());
        tlv(0x30, &[alg, bit_string(point)].concat())
    }

    /// JWS ECDSA signatures are `r || s`; DER wants `SEQUENCE { r, s }`.
    pub fn ecdsa_signature(raw: &[u8]) -> Vec<u8> {
        let (r, s) = raw.split_at(raw.len() / 2);
        tlv(0x30, &[uint(r), uint(s)].concat())
    }
}

/// SHA-256, the cache key of credentials (a 64-bit hash could be forced to
/// collide with a cached valid token).
pub fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}
