//! Foreign functions the harness offers by name, as Envoy does.

use crate::status::BAD_ARGUMENT;
use crate::vm::Host;
use switchyard_core::auth::verify_signature;

/// A foreign function: the host's answer to the module's argument bytes, or
/// a status.
pub(crate) type ForeignFunction = fn(&mut Host, &[u8]) -> Result<Vec<u8>, i32>;

pub fn lookup(name: &str) -> Option<ForeignFunction> {
    match name {
        "clear_route_cache" => Some(clear_route_cache),
        "verify_signature" => Some(verify_signature),
        _ => None,
    }
}

/// Envoy re-picks the route for the stream; the harness counts it so tests can assert it.
fn clear_route_cache(h: &mut Host, _args: &[u8]) -> Result<Vec<u8>, i32> {
    h.world.borrow_mut().route_cache_clears += 1;
    Ok(Vec::new())
}

/// Envoy's `verify_signature`: a protobuf `VerifySignatureArguments`
/// (hash_function = 1, public_key = 2 as SubjectPublicKeyInfo DER,
/// signature = 3, text = 4, public_key_pem = 5) in, a
/// `VerifySignatureResult` (result = 1, error = 2) out. A key that does not
/// parse is `BadArgument`, as in Envoy; a wrong signature is `result: false`.
fn verify_signature(h: &mut Host, args: &[u8]) -> Result<Vec<u8>, i32> {
    if h.world
        .borrow()
        .disabled_foreign
        .contains("verify_signature")
    {
        return Err(crate::status::NOT_FOUND);
    }
    let fields = verify_signature::decode_fields(args).ok_or(BAD_ARGUMENT)?;
    let field = |n: u64| fields.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    let hash = field(1)
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("");
    let der = match (field(2), field(5)) {
        (Some(der), None) => der.to_vec(),
        (None, Some(pem)) => pem_to_der(pem).ok_or(BAD_ARGUMENT)?,
        _ => return Err(BAD_ARGUMENT),
    };
    let key = crypto::PublicKey::from_spki(&der).ok_or(BAD_ARGUMENT)?;
    h.world.borrow_mut().signatures_verified += 1;
    let outcome = key.verify(
        hash,
        field(3).unwrap_or_default(),
        field(4).unwrap_or_default(),
    );
    Ok(verify_signature::encode_result(
        outcome.is_ok(),
        outcome.as_ref().err().map(|e| e.as_ref()),
    ))
}

fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

mod crypto {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;

    pub enum PublicKey {
        Rsa(rsa::RsaPublicKey),
        P256(p256::ecdsa::VerifyingKey),
        P384(p384::ecdsa::VerifyingKey),
    }

    impl PublicKey {
        pub fn from_spki(der: &[u8]) -> Option<Self> {
            if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
                return Some(Self::Rsa(k));
            }
            if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
                return Some(Self::P256(k.into()));
            }
            p384::PublicKey::from_public_key_der(der)
                .ok()
                .map(|k| Self::P384(k.into()))
        }

        /// Verifies as BoringSSL's EVP_DigestVerify would: PKCS#1 v1.5 for
        /// RSA keys, DER-encoded signatures for ECDSA keys.
        pub fn verify(&self, hash: &str, sig: &[u8], text: &[u8]) -> Result<(), String> {
            use rsa::pkcs1v15::{Signature, VerifyingKey};
            use sha2::{Sha256, Sha384, Sha512};
            let bad =
                |e: &dyn std::fmt::Display| format!("Failed to verify digest. Error code: {e}");
            match (self, hash.to_ascii_lowercase().as_str()) {
                (Self::Rsa(k), h) => {
                    let sig = Signature::try_from(sig).map_err(|e| bad(&e))?;
                    let k = k.clone();
                    match h {
                        "sha256" => VerifyingKey::<Sha256>::new(k).verify(text, &sig),
                        "sha384" => VerifyingKey::<Sha384>::new(k).verify(text, &sig),
                        "sha512" => VerifyingKey::<Sha512>::new(k).verify(text, &sig),
                        _ => return Err(format!("{hash} is not supported.")),
                    }
                    .map_err(|e| bad(&e))
                }
                (Self::P256(k), "sha256") => {
                    let sig = p256::ecdsa::Signature::from_der(sig).map_err(|e| bad(&e))?;
                    k.verify(text, &sig).map_err(|e| bad(&e))
                }
                (Self::P384(k), "sha384") => {
                    let sig = p384::ecdsa::Signature::from_der(sig).map_err(|e| bad(&e))?;
                    k.verify(text, &sig).map_err(|e| bad(&e))
                }
                _ => Err(format!("{hash} is not supported for this key.")),
            }
        }
    }
}
