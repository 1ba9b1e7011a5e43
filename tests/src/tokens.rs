//! Real JWTs for tests, minted by the `jsonwebtoken` crate with the test-only
//! keys in `tests/keys/`, and the JWKS that verifies them.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "gateway";
/// The shared secret of the `hmac` key (test only).
pub const HS_SECRET: &[u8] = b"switchyard-test-hmac-secret-0123";

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(crate::paths::project_root().join("tests/keys").join(name)).expect("test key")
}

fn pem_der(name: &str) -> Vec<u8> {
    let text = String::from_utf8(key_file(name)).expect("PEM is text");
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body is base64")
}

pub fn algorithm(name: &str) -> Algorithm {
    name.parse()
        .unwrap_or_else(|_| panic!("unknown algorithm {name}"))
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(HS_SECRET)
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(&key_file("ec256.pem")).expect("P-256 key"),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&key_file("ec384.pem")).expect("P-384 key"),
        Algorithm::EdDSA => {
            EncodingKey::from_ed_pem(&key_file("ed25519.pem")).expect("Ed25519 key")
        }
        _ => EncodingKey::from_rsa_pem(&key_file("rsa.pem")).expect("RSA key"),
    }
}

/// The `kid` of the test key for an algorithm.
pub fn kid(alg: &str) -> &'static str {
    match alg {
        "HS256" | "HS384" | "HS512" => "hmac",
        "ES256" => "p256",
        "ES384" => "p384",
        "EdDSA" => "ed",
        _ => "rsa",
    }
}

/// A JWKS with the public test keys (what an identity provider publishes).
pub fn public_jwks() -> Value {
    let jwk = |alg: Algorithm, kid: &str| {
        let mut v = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg), alg).expect("JWK"),
        )
        .expect("JWK as JSON");
        v["kid"] = json!(kid);
        v.as_object_mut().expect("object").remove("alg");
        v
    };
    let ed = pem_der("ed25519.pub.pem");
    json!({"keys": [
        jwk(Algorithm::RS256, "rsa"),
        jwk(Algorithm::ES256, "p256"),
        jwk(Algorithm::ES384, "p384"),
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode(&ed[ed.len() - 32..])},
    ]})
}

/// The public keys plus the HMAC secret (an inline JWKS in configuration).
pub fn jwks() -> Value {
    let mut set = public_jwks();
    set["keys"].as_array_mut().expect("keys").push(json!({
        "kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode(HS_SECRET)
    }));
    set
}

/// Claims for `sub`, valid for ten minutes from `now_s`.
pub fn claims(sub: &str, now_s: u64) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now_s, "exp": now_s + 600,
           "groups": ["dev"]})
}

/// A token signed with `alg` (`"RS256"`, `"ES256"`, …) and its test key's `kid`.
pub fn mint(alg: &str, claims: &Value) -> String {
    mint_with_kid(alg, Some(kid(alg)), claims)
}

pub fn mint_with_kid(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let a = algorithm(alg);
    let mut header = Header::new(a);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &encoding_key(a)).expect("mint JWT")
}

/// An HS256 token signed with arbitrary secret bytes (algorithm-confusion attacks).
pub fn mint_hs256_with_secret(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("mint JWT")
}

/// The RSA public key as PEM bytes.
pub fn rsa_public_pem() -> Vec<u8> {
    key_file("rsa.pub.pem")
}

/// An unsigned `alg: none` token carrying `claims`.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Hex SHA-256, as API keys are configured.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A bcrypt hash at the lowest cost (tests only; production uses 10+).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, [7; 16])
        .expect("bcrypt")
        .to_string()
}
