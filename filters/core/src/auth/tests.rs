use super::jwt::HostVerify;
use super::*;
use crate::headers::HeaderList;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(HS_SECRET)
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(&key_file("ec256.pem")).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&key_file("ec384.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&key_file("ed25519.pem")).unwrap(),
        _ => EncodingKey::from_rsa_pem(&key_file("rsa.pem")).unwrap(),
    }
}

/// The DER inside a PEM file.
fn pem_der(name: &str) -> Vec<u8> {
    let text = String::from_utf8(key_file(name)).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

/// The JWKS every test provider trusts: one key per family, each with a kid.
fn jwks() -> Value {
    let jwk = |alg: Algorithm, kid: &str| {
        let mut v = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg), alg).unwrap(),
        )
        .unwrap();
        v["kid"] = json!(kid);
        v.as_object_mut().unwrap().remove("alg");
        v
    };
    let ed = pem_der("ed25519.pub.pem");
    json!({"keys": [
        jwk(Algorithm::HS256, "hmac"),
        jwk(Algorithm::RS256, "rsa"),
        jwk(Algorithm::ES256, "p256"),
        jwk(Algorithm::ES384, "p384"),
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode(&ed[ed.len() - 32..])},
    ]})
}

fn kid_for(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "hmac",
        Algorithm::ES256 => "p256",
        Algorithm::ES384 => "p384",
        Algorithm::EdDSA => "ed",
        _ => "rsa",
    }
}

fn claims() -> Value {
    json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "jason",
           "exp": NOW + 600, "iat": NOW - 10, "groups": ["dev", "admin"],
           "https://example.com/roles": ["reviewer"], "realm": {"tier": "gold"}})
}

fn mint_with(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &encoding_key(alg)).unwrap()
}

fn mint(alg: Algorithm) -> String {
    mint_with(alg, Some(kid_for(alg)), &claims())
}

fn config(extra: Value) -> Value {
    let mut c = json!({
        "providers": [
            {"name": "corp", "jwt": {"issuer": "https://idp.example.com", "audiences": ["gateway"],
             "jwks": jwks(), "from": [{"header": "authorization", "prefix": "Bearer "}, {"cookie": "session"}]}},
            {"name": "ci", "api_key": {"header": "x-api-key", "keys": [
                {"name": "ci-bot", "sha256": hex_sha256(b"s3cret-key")}]}},
            {"name": "ops", "basic": {"users": [{"name": "alice", "bcrypt": bcrypt::hash_with_salt("wonderland", 4, [7; 16]).unwrap().to_string()}]}},
            {"name": "authz", "ext_auth": {"cluster": "authz", "authority": "authz", "path": "/check",
             "forward_headers": ["authorization"], "copy_response_headers": ["x-user"]}}
        ],
        "rules": [
            {"match": {"path": {"prefix": "/public/"}}, "allow": "anonymous"},
            {"match": {"path": {"prefix": "/admin/"}}, "require": ["corp"], "claims": {"groups": {"contains": "admin"}}},
            {"match": {"path": {"prefix": "/both/"}}, "require": ["corp", "ci"]},
            {"match": {"path": {"prefix": "/ext/"}}, "require_any": ["corp", "authz"]},
            {"match": {"path": {"prefix": "/"}}, "require_any": ["corp", "ci", "ops"]}
        ],
        "identity": {"header": "end-user", "from_claim": "sub",
                     "claims_to_headers": {"x-user-groups": "groups", "x-tier": "realm.tier"}}
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            c[k] = v;
        }
    }
    c
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn auth(extra: Value) -> Auth {
    Auth::from_json(config(extra).to_string().as_bytes()).unwrap()
}

struct Host {
    auth: Auth,
    keys: Vec<Option<Rc<KeySet>>>,
    caches: Caches,
    now_s: u64,
}

impl Host {
    fn new(auth: Auth) -> Self {
        let keys = (0..auth.provider_count())
            .map(|p| auth.static_keys(p))
            .collect();
        let caches = Caches::new(auth.cache_entries());
        Host {
            auth,
            keys,
            caches,
            now_s: NOW,
        }
    }

    fn step(&mut self, eval: &mut Evaluation, req: &HeaderList) -> Step {
        self.step_with(eval, req, &mut |_| None)
    }

    fn step_with(
        &mut self,
        eval: &mut Evaluation,
        req: &HeaderList,
        verify: &mut HostVerifier<'_>,
    ) -> Step {
        let mut env = Env {
            now_s: self.now_s,
            keys: &self.keys,
            caches: &mut self.caches,
            host_verify: verify,
        };
        self.auth.step(eval, req, &mut env)
    }

    fn verdict(&mut self, req: &HeaderList) -> Verdict {
        let mut eval = self.auth.begin(req);
        match self.step(&mut eval, req) {
            Step::Done(v) => v,
            other => panic!("expected a verdict, got {other:?}"),
        }
    }
}

fn get(path: &str) -> HeaderList {
    HeaderList::from_pairs([(":method", "GET"), (":path", path), (":authority", "gw")])
}

fn bearer(path: &str, token: &str) -> HeaderList {
    get(path).with("authorization", format!("Bearer {token}"))
}

fn denied(v: &Verdict) -> Option<(u16, Reason)> {
    match v {
        Verdict::Deny(d) => Some((d.status, d.reason)),
        Verdict::Allow { .. } => None,
    }
}

fn allowed_as(v: &Verdict) -> Option<String> {
    match v {
        Verdict::Allow {
            identity: Some(id), ..
        } => Some(String::from_utf8(id.subject.as_deref()?.to_vec()).unwrap()),
        _ => None,
    }
}

#[test]
fn every_algorithm_verifies() {
    let all = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    for alg in all {
        let mut host = Host::new(auth(json!({})));
        let v = host.verdict(&bearer("/x", &mint(alg)));
        assert_eq!(allowed_as(&v).as_deref(), Some("jason"), "{alg:?}: {v:?}");
    }
}

#[test]
fn rejects_bad_tokens_with_the_reason() {
    let cases: Vec<(&str, String, TokenError)> = vec![
        (
            "expired",
            mint_with(
                Algorithm::RS256,
                Some("rsa"),
                &json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "j", "exp": NOW - 61}),
            ),
            TokenError::Expired,
        ),
        (
            "not yet valid",
            mint_with(
                Algorithm::RS256,
                Some("rsa"),
                &json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "j", "nbf": NOW + 120, "exp": NOW + 600}),
            ),
            TokenError::NotYetValid,
        ),
        (
            "issued in future",
            mint_with(
                Algorithm::ES256,
                Some("p256"),
                &json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "j", "iat": NOW + 3600, "exp": NOW + 7200}),
            ),
            TokenError::IssuedInFuture,
        ),
        (
            "wrong issuer",
            mint_with(
                Algorithm::RS256,
                Some("rsa"),
                &json!({"iss": "https://evil.example.com", "aud": "gateway", "sub": "j", "exp": NOW + 60}),
            ),
            TokenError::IssuerMismatch,
        ),
        (
            "wrong audience",
            mint_with(
                Algorithm::RS256,
                Some("rsa"),
                &json!({"iss": "https://idp.example.com", "aud": ["other", "api"], "sub": "j", "exp": NOW + 60}),
            ),
            TokenError::AudienceMismatch,
        ),
        (
            "no audience",
            mint_with(
                Algorithm::RS256,
                Some("rsa"),
                &json!({"iss": "https://idp.example.com", "sub": "j", "exp": NOW + 60}),
            ),
            TokenError::AudienceMismatch,
        ),
        (
            "exp not a number",
            mint_with(
                Algorithm::RS256,
                Some("rsa"),
                &json!({"iss": "https://idp.example.com", "aud": "gateway", "exp": "tomorrow"}),
            ),
            TokenError::Malformed,
        ),
        (
            "unknown kid",
            mint_with(Algorithm::RS256, Some("nope"), &claims()),
            TokenError::UnknownKid,
        ),
        (
            "kid of another key type",
            mint_with(Algorithm::RS256, Some("p256"), &claims()),
            TokenError::UnknownKid,
        ),
    ];
    for (what, token, want) in cases {
        let mut host = Host::new(auth(json!({})));
        let v = host.verdict(&bearer("/x", &token));
        assert_eq!(denied(&v), Some((401, Reason::Token(want))), "{what}");
    }
}

#[test]
fn audience_may_be_a_list_and_skew_is_honoured() {
    let mut host = Host::new(auth(json!({})));
    let token = mint_with(
        Algorithm::ES384,
        Some("p384"),
        &json!({"iss": "https://idp.example.com",
        "aud": ["other", "gateway"], "sub": "kim", "exp": NOW - 30}),
    );
    // Expired 30 s ago, within the default 60 s skew.
    assert_eq!(
        allowed_as(&host.verdict(&bearer("/x", &token))).as_deref(),
        Some("kim")
    );
}

#[test]
fn tampered_tokens_and_forged_algorithms_fail() {
    let token = mint(Algorithm::RS256);
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(
        json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "admin", "exp": NOW + 600}).to_string(),
    );
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let mut host = Host::new(auth(json!({})));
    assert_eq!(
        denied(&host.verdict(&bearer("/x", &tampered))),
        Some((401, Reason::Token(TokenError::BadSignature)))
    );

    // alg: none, with and without a signature.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    for sig in ["", "AAAA"] {
        let t = format!("{none_header}.{}.{sig}", parts[1]);
        assert_eq!(
            denied(&host.verdict(&bearer("/x", &t))),
            Some((401, Reason::Token(TokenError::AlgNotAllowed)))
        );
    }

    // Algorithm confusion: HS256 signed with the RSA public key's bytes as the secret.
    let public_pem = key_file("rsa.pub.pem");
    for kid in [Some("rsa"), None] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        let t = encode(&header, &claims(), &EncodingKey::from_secret(&public_pem)).unwrap();
        let v = host.verdict(&bearer("/x", &t));
        assert!(
            matches!(
                denied(&v),
                Some((
                    401,
                    Reason::Token(TokenError::UnknownKid | TokenError::BadSignature)
                ))
            ),
            "{kid:?}: {v:?}"
        );
    }
}

#[test]
fn malformed_and_oversized_tokens_fail() {
    let mut host = Host::new(auth(json!({"max_token_bytes": 2048})));
    let good = mint(Algorithm::ES256);
    let parts: Vec<&str> = good.split('.').collect();
    let dup = URL_SAFE_NO_PAD
        .encode(r#"{"sub":"jason","sub":"admin","iss":"https://idp.example.com","aud":"gateway"}"#);
    let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"p256","crit":["exp"]}"#);
    let cases = [
        (
            "two parts",
            format!("{}.{}", parts[0], parts[1]),
            TokenError::Malformed,
        ),
        (
            "five parts (JWE)",
            format!("{good}.a.b"),
            TokenError::Malformed,
        ),
        (
            "bad base64",
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            TokenError::Malformed,
        ),
        (
            "padded base64",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            TokenError::Malformed,
        ),
        (
            "header not JSON",
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("nope"),
                parts[1],
                parts[2]
            ),
            TokenError::Malformed,
        ),
        (
            "critical extension",
            format!("{crit}.{}.{}", parts[1], parts[2]),
            TokenError::Malformed,
        ),
        (
            "oversized",
            format!("{good}{}", "A".repeat(2048)),
            TokenError::TooLarge,
        ),
    ];
    for (what, token, want) in cases {
        assert_eq!(
            denied(&host.verdict(&bearer("/x", &token))),
            Some((401, Reason::Token(want))),
            "{what}"
        );
    }
    // Duplicate claims are malformed even when the signature is valid (HS256 signs the raw payload).
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"hmac"}"#);
    let input = format!("{header}.{dup}");
    let sig = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HS_SECRET).unwrap();
        mac.update(input.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    };
    let v = host.verdict(&bearer("/x", &format!("{input}.{sig}")));
    assert_eq!(
        denied(&v),
        Some((401, Reason::Token(TokenError::Malformed)))
    );
}

#[test]
fn provider_algorithms_limit_what_is_accepted() {
    let mut c = config(json!({}));
    c["providers"][0]["jwt"]["algorithms"] = json!(["RS256", "ES256"]);
    let mut host = Host::new(Auth::from_json(c.to_string().as_bytes()).unwrap());
    assert!(allowed_as(&host.verdict(&bearer("/x", &mint(Algorithm::ES256)))).is_some());
    assert_eq!(
        denied(&host.verdict(&bearer("/x", &mint(Algorithm::HS256)))),
        Some((401, Reason::Token(TokenError::AlgNotAllowed)))
    );
}

#[test]
fn a_token_without_kid_tries_every_key_of_its_type() {
    let second = EncodingKey::from_rsa_pem(&key_file("rsa2.pem")).unwrap();
    let mut second_jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&second, Algorithm::RS256).unwrap(),
    )
    .unwrap();
    second_jwk["kid"] = json!("rsa2");
    let mut set = jwks();
    set["keys"].as_array_mut().unwrap().push(second_jwk);
    let mut c = config(json!({}));
    c["providers"][0]["jwt"]["jwks"] = set;
    let mut host = Host::new(Auth::from_json(c.to_string().as_bytes()).unwrap());
    let token = encode(&Header::new(Algorithm::RS256), &claims(), &second).unwrap();
    assert_eq!(
        allowed_as(&host.verdict(&bearer("/x", &token))).as_deref(),
        Some("jason")
    );
}

#[test]
fn tokens_are_read_from_a_cookie_and_cached_until_expiry() {
    let mut host = Host::new(auth(json!({})));
    let token = mint(Algorithm::RS256);
    let req = get("/x").with("cookie", format!("theme=dark; session={token}"));
    assert_eq!(allowed_as(&host.verdict(&req)).as_deref(), Some("jason"));
    assert_eq!(host.caches.tokens.map.len(), 1);
    // A cached token is accepted without checking the signature again...
    let mut calls = 0;
    let mut eval = host.auth.begin(&req);
    let mut count = |_: &HostVerify<'_>| {
        calls += 1;
        None
    };
    assert!(matches!(
        host.step_with(&mut eval, &req, &mut count),
        Step::Done(Verdict::Allow { .. })
    ));
    assert_eq!(calls, 0);
    // ...until it expires (exp + skew).
    host.now_s = NOW + 600 + 60;
    assert_eq!(
        denied(&host.verdict(&req)),
        Some((401, Reason::Token(TokenError::Expired)))
    );
}

#[test]
fn a_cache_hit_needs_the_same_token_bytes_not_only_the_same_hash() {
    let mut host = Host::new(auth(json!({})));
    let good = mint(Algorithm::RS256);
    let good_req = get("/x").with("authorization", format!("Bearer {good}"));
    assert_eq!(
        allowed_as(&host.verdict(&good_req)).as_deref(),
        Some("jason")
    );
    // Forge a collision: the verified entry filed under another token's key.
    let (head, signature) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", signature.replace('A', "B"));
    assert_ne!(forged, good);
    let entry = host.caches.tokens.map.values().next().unwrap().clone();
    let forged_key = super::cache::token_key(forged.as_bytes(), 0);
    host.caches.tokens.map.clear();
    host.caches.tokens.insert(forged_key, entry);
    let forged_req = get("/x").with("authorization", format!("Bearer {forged}"));
    assert!(
        denied(&host.verdict(&forged_req)).is_some(),
        "a token whose hash matches a cached one is verified, not accepted"
    );
}

#[test]
fn token_keys_differ_by_provider_length_head_and_signature() {
    use super::cache::token_key;
    let token = mint(Algorithm::RS256);
    let t = token.as_bytes();
    let key = token_key(t, 0);
    assert_ne!(key, token_key(t, 1), "provider");
    let (head, signature) = token.rsplit_once('.').unwrap();
    let resigned = format!("{head}.{}", signature.replace('A', "B"));
    assert_ne!(key, token_key(resigned.as_bytes(), 0), "signature");
    let mut first = t.to_vec();
    first[0] ^= 1;
    assert_ne!(key, token_key(&first, 0), "head");
    assert_ne!(key, token_key(&t[..t.len() - 1], 0), "length");
    // A short token is hashed whole.
    assert_ne!(token_key(b"a.b.c", 0), token_key(b"a.b.d", 0));
}

/// A verdict, and how many signatures were checked to reach it.
fn verdict_counting(host: &mut Host, req: &HeaderList) -> (Verdict, usize) {
    let mut calls = 0;
    let mut eval = host.auth.begin(req);
    let mut count = |_: &HostVerify<'_>| {
        calls += 1;
        None
    };
    match host.step_with(&mut eval, req, &mut count) {
        Step::Done(v) => (v, calls),
        other => panic!("expected a verdict, got {other:?}"),
    }
}

#[test]
fn the_last_accepted_token_is_tried_first_and_stands_for_no_other() {
    let mut host = Host::new(auth(json!({})));
    let jason = mint(Algorithm::RS256);
    let mut ana_claims = claims();
    ana_claims["sub"] = json!("ana");
    let ana = mint_with(
        Algorithm::RS256,
        Some(kid_for(Algorithm::RS256)),
        &ana_claims,
    );
    let (head, signature) = jason.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", signature.replace('A', "B"));
    assert_eq!(forged.len(), jason.len());
    let bearer = |t: &str| get("/x").with("authorization", format!("Bearer {t}"));
    let mut send = |t: &str| {
        let (v, checks) = verdict_counting(&mut host, &bearer(t));
        (allowed_as(&v), checks)
    };
    assert_eq!(send(&jason), (Some("jason".into()), 1));
    // Same length and head as the last accepted token: checked, refused.
    let (who, checks) = send(&forged);
    assert_eq!((who, checks > 0), (None, true));
    assert_eq!(send(&jason), (Some("jason".into()), 0));
    assert_eq!(send(&ana), (Some("ana".into()), 1));
    // Each cached token is found whichever was accepted last.
    assert_eq!(send(&jason), (Some("jason".into()), 0));
    assert_eq!(send(&ana), (Some("ana".into()), 0));
    assert_eq!(send(&ana), (Some("ana".into()), 0));
}

#[test]
fn host_verification_is_used_for_rsa_and_ecdsa_with_der_keys() {
    let mut host = Host::new(auth(json!({})));
    for (alg, pem, hash) in [
        (Algorithm::RS256, "rsa.pub.pem", "sha256"),
        (Algorithm::RS512, "rsa.pub.pem", "sha512"),
        (Algorithm::ES256, "ec256.pub.pem", "sha256"),
        (Algorithm::ES384, "ec384.pub.pem", "sha384"),
    ] {
        let req = bearer("/x", &mint(alg));
        let mut seen = Vec::new();
        let mut eval = host.auth.begin(&req);
        let mut refuse = |h: &HostVerify<'_>| {
            seen.push((h.hash, h.public_key.to_vec(), h.signature.first().copied()));
            Some(false)
        };
        let step = host.step_with(&mut eval, &req, &mut refuse);
        assert!(
            matches!(
                step,
                Step::Done(Verdict::Deny(Denial {
                    reason: Reason::Token(TokenError::BadSignature),
                    ..
                }))
            ),
            "{alg:?}"
        );
        assert_eq!(seen.len(), 1, "{alg:?}");
        assert_eq!(seen[0].0, hash);
        assert_eq!(
            seen[0].1,
            pem_der(pem),
            "{alg:?}: the SPKI DER the host gets"
        );
        if matches!(alg, Algorithm::ES256 | Algorithm::ES384) {
            assert_eq!(
                seen[0].2,
                Some(0x30),
                "ECDSA signatures go to the host as DER"
            );
        }
    }
    // PS256, EdDSA and HMAC never go to the host.
    for alg in [Algorithm::PS256, Algorithm::EdDSA, Algorithm::HS256] {
        let req = bearer("/x", &mint(alg));
        let mut eval = host.auth.begin(&req);
        let mut never = |_: &HostVerify<'_>| -> Option<bool> { panic!("{alg:?} went to the host") };
        assert!(matches!(
            host.step_with(&mut eval, &req, &mut never),
            Step::Done(Verdict::Allow { .. })
        ));
    }
}

#[test]
fn api_keys_and_basic_auth() {
    let mut host = Host::new(auth(json!({})));
    let v = host.verdict(&get("/x").with("x-api-key", "s3cret-key"));
    assert_eq!(allowed_as(&v).as_deref(), Some("ci-bot"));
    assert_eq!(
        denied(&host.verdict(&get("/x").with("x-api-key", "guess"))),
        Some((401, Reason::InvalidApiKey))
    );

    let basic = |user_pass: &str| {
        get("/x").with(
            "authorization",
            format!("Basic {}", STANDARD.encode(user_pass)),
        )
    };
    assert_eq!(
        allowed_as(&host.verdict(&basic("alice:wonderland"))).as_deref(),
        Some("alice")
    );
    assert_eq!(host.caches.basic.map.len(), 1);
    assert_eq!(
        allowed_as(&host.verdict(&basic("alice:wonderland"))).as_deref(),
        Some("alice")
    );
    assert_eq!(
        host.caches.basic.map.len(),
        1,
        "the bcrypt decision is cached"
    );
    assert_eq!(
        denied(&host.verdict(&basic("alice:rabbit"))),
        Some((401, Reason::InvalidBasic))
    );
    assert_eq!(
        denied(&host.verdict(&basic("mallory:wonderland"))),
        Some((401, Reason::InvalidBasic))
    );
    assert_eq!(
        denied(&host.verdict(&basic("no-colon"))),
        Some((401, Reason::InvalidBasic))
    );

    let missing = host.verdict(&get("/x"));
    let Verdict::Deny(d) = missing else { panic!() };
    assert_eq!((d.status, d.reason), (401, Reason::MissingCredential));
    assert_eq!(
        d.challenges,
        vec![
            "Bearer realm=\"switchyard\"".to_owned(),
            "Basic realm=\"switchyard\", charset=\"UTF-8\"".to_owned()
        ]
    );
}

#[test]
fn rules_anonymous_all_claims_and_no_rule() {
    let mut host = Host::new(auth(json!({})));
    assert!(matches!(
        host.verdict(&get("/public/a")),
        Verdict::Allow { identity: None, .. }
    ));
    // /admin/ needs the admin group.
    assert_eq!(
        allowed_as(&host.verdict(&bearer("/admin/x", &mint(Algorithm::RS256)))).as_deref(),
        Some("jason")
    );
    let no_admin = mint_with(
        Algorithm::RS256,
        Some("rsa"),
        &json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "kim", "exp": NOW + 60, "groups": ["dev"]}),
    );
    assert_eq!(
        denied(&host.verdict(&bearer("/admin/x", &no_admin))),
        Some((403, Reason::ClaimsMismatch))
    );
    // /both/ needs a token and an API key.
    let req = bearer("/both/x", &mint(Algorithm::RS256));
    assert_eq!(
        denied(&host.verdict(&req)),
        Some((401, Reason::MissingCredential))
    );
    assert_eq!(
        allowed_as(&host.verdict(&req.with("x-api-key", "s3cret-key"))).as_deref(),
        Some("jason")
    );
    // No rule matches: denied.
    let mut c = config(json!({}));
    c["rules"] = json!([{"match": {"path": {"prefix": "/only/"}}, "allow": "anonymous"}]);
    let mut host = Host::new(Auth::from_json(c.to_string().as_bytes()).unwrap());
    assert_eq!(
        denied(&host.verdict(&get("/x"))),
        Some((403, Reason::NoRule))
    );
}

#[test]
fn an_invalid_credential_outranks_a_missing_one() {
    let mut host = Host::new(auth(json!({})));
    // A bad API key with no token: the API key's failure is reported.
    assert_eq!(
        denied(&host.verdict(&get("/x").with("x-api-key", "nope"))),
        Some((401, Reason::InvalidApiKey))
    );
    // A bad token with a good API key: require_any accepts the key.
    let req = bearer("/x", "a.b.c").with("x-api-key", "s3cret-key");
    assert_eq!(allowed_as(&host.verdict(&req)).as_deref(), Some("ci-bot"));
}

#[test]
fn identity_headers_from_claims() {
    let mut host = Host::new(auth(json!({})));
    let v = host.verdict(&bearer("/x", &mint(Algorithm::RS256)));
    let Verdict::Allow {
        identity: Some(id), ..
    } = v
    else {
        panic!("{v:?}")
    };
    let headers: Vec<(&str, String)> = host
        .auth
        .identity_headers(&id)
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.into_owned()).unwrap()))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("end-user", "jason".into()),
            ("x-tier", "gold".into()),
            ("x-user-groups", "dev,admin".into())
        ]
    );
    let claims: Value = serde_json::from_slice(&id.claims_json).unwrap();
    assert_eq!(claims["https://example.com/roles"], json!(["reviewer"]));
    let mut stripped = host.auth.stripped_headers().to_vec();
    stripped.sort();
    assert_eq!(
        stripped,
        vec!["end-user", "x-tier", "x-user", "x-user-groups"]
    );
}

#[test]
fn remote_keys_are_waited_for_then_given_up() {
    let mut c = config(json!({}));
    c["providers"][0]["jwt"]
        .as_object_mut()
        .unwrap()
        .remove("jwks");
    c["providers"][0]["jwt"]["remote_jwks"] =
        json!({"cluster": "idp", "authority": "idp", "path": "/jwks"});
    let mut host = Host::new(Auth::from_json(c.to_string().as_bytes()).unwrap());
    assert!(host.keys[0].is_none());
    let req = bearer("/x", &mint(Algorithm::RS256));
    let mut eval = host.auth.begin(&req);
    assert!(matches!(host.step(&mut eval, &req), Step::NeedKeys(0)));
    // Keys arrive: the same evaluation goes on.
    let mut later = eval.clone();
    host.keys[0] = Some(Rc::new(KeySet::from_value(&jwks()).unwrap()));
    assert_eq!(
        allowed_as(&match host.step(&mut later, &req) {
            Step::Done(v) => v,
            s => panic!("{s:?}"),
        })
        .as_deref(),
        Some("jason")
    );
    // They never arrive: 503, never an allow.
    host.keys[0] = None;
    host.caches = Caches::new(16);
    eval.keys_unavailable(0);
    let Step::Done(v) = host.step(&mut eval, &req) else {
        panic!()
    };
    assert_eq!(denied(&v), Some((503, Reason::JwksUnavailable)));
    // No token at all: nothing to wait for.
    let mut eval = host.auth.begin(&get("/x"));
    assert!(matches!(
        host.step(&mut eval, &get("/x")),
        Step::Done(Verdict::Deny(_))
    ));
}

#[test]
fn external_auth_allows_passes_back_and_fails_by_mode() {
    let answer = |status: u16, headers: &[(&str, &str)]| ExtAuthAnswer::Response {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: b"nope".to_vec(),
    };
    let run = |host: &mut Host, answer: ExtAuthAnswer| -> Verdict {
        let req = get("/ext/x").with("authorization", "Token abc");
        let mut eval = host.auth.begin(&req);
        assert!(matches!(host.step(&mut eval, &req), Step::NeedExtAuth(3)));
        let sent = host.auth.ext_auth_request(3, &req);
        assert!(sent.contains(&("authorization".into(), b"Token abc".to_vec())));
        assert!(sent.contains(&("x-forwarded-uri".into(), b"/ext/x".to_vec())));
        assert!(sent.contains(&(":path".into(), b"/check".to_vec())));
        eval.ext_auth_answer(3, answer);
        match host.step(&mut eval, &req) {
            Step::Done(v) => v,
            s => panic!("{s:?}"),
        }
    };
    let mut host = Host::new(auth(json!({})));
    let v = run(
        &mut host,
        answer(
            200,
            &[("x-user", "u-42"), ("end-user", "robin"), ("x-other", "no")],
        ),
    );
    let Verdict::Allow {
        identity: Some(id),
        failed_open: false,
    } = &v
    else {
        panic!("{v:?}")
    };
    let headers: Vec<(&str, Vec<u8>)> = host
        .auth
        .identity_headers(id)
        .into_iter()
        .map(|(k, v)| (k, v.into_owned()))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("end-user", b"robin".to_vec()),
            ("x-user", b"u-42".to_vec())
        ]
    );
    let v = run(
        &mut host,
        answer(403, &[("www-authenticate", "Token"), ("x-secret", "s")]),
    );
    let Verdict::Deny(d) = v else { panic!() };
    let pb = d.pass_back.unwrap();
    assert_eq!(
        (d.status, pb.body.as_slice(), pb.headers.len()),
        (403, &b"nope"[..], 1)
    );
    assert_eq!(
        denied(&run(&mut host, answer(500, &[]))),
        Some((503, Reason::ExtAuthUnavailable))
    );
    assert_eq!(
        denied(&run(&mut host, ExtAuthAnswer::Failed)),
        Some((503, Reason::ExtAuthUnavailable))
    );

    let mut c = config(json!({}));
    c["providers"][3]["ext_auth"]["failure_mode"] = json!("open");
    let mut host = Host::new(Auth::from_json(c.to_string().as_bytes()).unwrap());
    assert!(matches!(
        run(&mut host, ExtAuthAnswer::Failed),
        Verdict::Allow {
            failed_open: true,
            ..
        }
    ));
}

#[test]
fn bad_configuration_names_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"providers": [{"name": "x", "jwt": {"jwks": {"keys": []}}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].jwt.jwks",
        ),
        (
            json!({"providers": [{"name": "x", "jwt": {"jwks": jwks(), "remote_jwks": {"cluster": "c", "authority": "a", "path": "/p"}}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].jwt",
        ),
        (
            json!({"providers": [{"name": "x", "jwt": {"jwks": jwks(), "algorithms": ["none"]}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].jwt.algorithms[0]",
        ),
        (
            json!({"providers": [{"name": "x", "jwt": {"remote_jwks": {"cluster": "c", "authority": "a", "path": "/p",
                "refresh_s": 60, "max_stale_s": 30}}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].jwt.remote_jwks.max_stale_s",
        ),
        (
            json!({"providers": [{"name": "x", "api_key": {"header": "x-k", "keys": [{"name": "a", "sha256": "zz"}]}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].api_key.keys[0].sha256",
        ),
        (
            json!({"providers": [{"name": "x", "basic": {"users": [{"name": "a", "bcrypt": "plain"}]}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].basic.users[0].bcrypt",
        ),
        (
            json!({"providers": [{"name": "x", "ext_auth": {"cluster": "c", "authority": "a", "path": "check"}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].ext_auth.path",
        ),
        (
            json!({"providers": [{"name": "x", "ext_auth": {"cluster": "c", "authority": "a", "path": "/c", "failure_mode": "maybe"}}], "rules": [{"allow": "anonymous"}]}),
            "providers[0].ext_auth.failure_mode",
        ),
        (
            json!({"providers": [], "rules": [{"require": ["ghost"]}]}),
            "rules[0].require[0]",
        ),
        (
            json!({"providers": [], "rules": [{"allow": "everyone"}]}),
            "rules[0].allow",
        ),
        (
            json!({"providers": [], "rules": [{"allow": "anonymous", "require": []}]}),
            "rules[0]",
        ),
        (
            json!({"providers": [], "rules": [{"match": {"claims": {"sub": {"exact": "a"}}}, "allow": "anonymous"}]}),
            "rules[0].match.claims",
        ),
        (json!({"providers": [], "rules": []}), "rules"),
        (
            json!({"providers": [], "rules": [{"allow": "anonymous"}], "identity": {"header": "Bad Header"}}),
            "identity.header",
        ),
        (
            json!({"providers": [{"name": "a", "api_key": {"header": "x", "keys": [{"name": "k", "sha256": hex_sha256(b"k")}]}}, {"name": "a", "api_key": {"header": "y", "keys": [{"name": "k", "sha256": hex_sha256(b"k")}]}}], "rules": [{"allow": "anonymous"}]}),
            "providers[1].name",
        ),
    ];
    for (c, field) in cases {
        let err = Auth::from_json(c.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn jwks_skips_unusable_keys_but_keeps_the_rest() {
    let mut set = jwks();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}));
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}));
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "k": "c2hvcnQ"}));
    let parsed = KeySet::from_value(&set).unwrap();
    assert_eq!(parsed.keys.len(), 5);
    assert_eq!(parsed.skipped.len(), 3, "{:?}", parsed.skipped);
    assert!(KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}"#).is_err());
    assert!(KeySet::parse(br#"{"keys": [], "keys": []}"#).is_err());
}

#[test]
fn key_set_retries_back_off_within_the_refresh_period() {
    let waits: Vec<u64> = (1..=9).map(|f| jwks_retry_after_ms(f, 300)).collect();
    assert_eq!(
        waits,
        vec![1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
    );
    assert_eq!(
        jwks_retry_after_ms(5, 3),
        3000,
        "never later than refresh_s"
    );
}

#[test]
fn denial_bodies_name_the_reason_only() {
    let mut host = Host::new(auth(json!({})));
    let Verdict::Deny(d) = host.verdict(&bearer("/x", &mint(Algorithm::HS256).replace('.', "!")))
    else {
        panic!()
    };
    assert_eq!(
        d.body(),
        "{\"error\":\"unauthenticated\",\"reason\":\"token_malformed\"}\n"
    );
    let no_admin = mint_with(
        Algorithm::RS256,
        Some("rsa"),
        &json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "kim", "exp": NOW + 60}),
    );
    let Verdict::Deny(d) = host.verdict(&bearer("/admin/x", &no_admin)) else {
        panic!()
    };
    assert_eq!(
        d.body(),
        "{\"error\":\"forbidden\",\"reason\":\"claims_mismatch\"}\n"
    );
}

#[test]
fn a_credential_sent_twice_is_ambiguous_and_refused() {
    let mut host = Host::new(auth(json!({})));
    let good = mint(Algorithm::RS256);
    let ambiguous = Some((401, Reason::AmbiguousCredential));
    // The valid key first: Envoy shows a filter only the first value, the
    // upstream gets both.
    let two_keys = get("/x")
        .with("x-api-key", "s3cret-key")
        .with("x-api-key", "forged");
    assert_eq!(denied(&host.verdict(&two_keys)), ambiguous);
    let same_twice = get("/x")
        .with("x-api-key", "s3cret-key")
        .with("x-api-key", "s3cret-key");
    assert_eq!(denied(&host.verdict(&same_twice)), ambiguous);
    let two_bearers = bearer("/x", &good).with("authorization", "Bearer forged");
    assert_eq!(denied(&host.verdict(&two_bearers)), ambiguous);
    // Envoy joins a repeated `authorization` into one value.
    let joined = get("/x").with("authorization", format!("Bearer {good},Bearer forged"));
    assert_eq!(denied(&host.verdict(&joined)), ambiguous);
    let joined_basic = get("/x").with("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==,Basic eA==");
    assert_eq!(denied(&host.verdict(&joined_basic)), ambiguous);
    let two_basics = get("/x")
        .with("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==")
        .with("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==");
    assert_eq!(denied(&host.verdict(&two_basics)), ambiguous);
    // A header token and a cookie token that disagree; the same token in both is one credential.
    let disagree = bearer("/x", &good).with("cookie", "session=other.token.here");
    assert_eq!(denied(&host.verdict(&disagree)), ambiguous);
    let agree = bearer("/x", &good).with("cookie", format!("session={good}"));
    assert_eq!(allowed_as(&host.verdict(&agree)).as_deref(), Some("jason"));
    // A cookie set twice, in one header or in two.
    let cookie_twice = get("/x").with("cookie", format!("session={good}; session=x"));
    assert_eq!(denied(&host.verdict(&cookie_twice)), ambiguous);
    let two_cookie_headers = get("/x")
        .with("cookie", format!("session={good}"))
        .with("cookie", "session=x");
    assert_eq!(denied(&host.verdict(&two_cookie_headers)), ambiguous);
    // Other cookies and headers may repeat.
    let fine = bearer("/x", &good)
        .with("cookie", "a=1; a=2")
        .with("cookie", "b=3")
        .with("accept", "a")
        .with("accept", "b");
    assert_eq!(allowed_as(&host.verdict(&fine)).as_deref(), Some("jason"));
    // Anonymous rules read no credential.
    let public = HeaderList::from_pairs([(":method", "GET"), (":path", "/public/x")])
        .with("x-api-key", "a")
        .with("x-api-key", "b");
    assert!(matches!(
        host.verdict(&public),
        Verdict::Allow { identity: None, .. }
    ));
    assert_eq!(Reason::AmbiguousCredential.as_str(), "ambiguous_credential");
}

#[test]
fn a_query_token_given_twice_is_ambiguous() {
    let mut c = config(json!({}));
    c["providers"][0]["jwt"]["from"] = json!([{"query": "access_token"}]);
    let mut host = Host::new(Auth::from_json(c.to_string().as_bytes()).unwrap());
    let good = mint(Algorithm::RS256);
    assert_eq!(
        allowed_as(&host.verdict(&get(&format!("/x?access_token={good}")))).as_deref(),
        Some("jason")
    );
    assert_eq!(
        denied(&host.verdict(&get(&format!("/x?access_token={good}&access_token=x")))),
        Some((401, Reason::AmbiguousCredential))
    );
}

#[test]
fn a_key_set_goes_stale_only_past_its_bound() {
    let c: crate::auth::config::RemoteJwksConfig = serde_json::from_value(
        json!({"cluster": "idp", "authority": "idp", "path": "/jwks", "refresh_s": 60}),
    )
    .unwrap();
    assert_eq!(c.max_stale_s, 86_400, "a day by default");
    let day = 86_400_000;
    assert!(!crate::auth::key_set_expired(&c, 1_000, 1_000 + day));
    assert!(crate::auth::key_set_expired(&c, 1_000, 1_001 + day));
    assert!(
        !crate::auth::key_set_expired(&c, 5_000, 1_000),
        "a clock behind the fetch"
    );
}
