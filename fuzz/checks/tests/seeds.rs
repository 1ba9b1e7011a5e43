//! The checked-in seeds: the key set and auth configuration the targets use,
//! and corpus inputs that reach each target's deep paths (a token that
//! verifies, each credential that is accepted), minted by a real JWT
//! library. `SWITCHYARD_FUZZ_WRITE_SEEDS=1 cargo test -p
//! switchyard-fuzz-checks --test seeds` writes them; otherwise this test
//! checks that they are in place and still reach what they were made for.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use switchyard_core::auth::jwt::{self, Alg, KeySet};
use switchyard_core::auth::{Auth, Step, Verdict};
use switchyard_core::HeaderList;
use switchyard_fuzz_checks::input::{encode, Input};
use switchyard_fuzz_checks::NOW_S;
use switchyard_tests::{tokens, vectors};

/// A seed request: header name and value pairs.
type Request<'a> = Vec<(&'a str, &'a [u8])>;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn credentials_config() -> Value {
    json!({
        "providers": [
            {"name": "corp", "jwt": {"issuer": tokens::ISSUER, "audiences": [tokens::AUDIENCE],
             "jwks": tokens::public_jwks(),
             "from": [{"header": "authorization", "prefix": "Bearer "}, {"cookie": "session"}]}},
            {"name": "ci", "api_key": {"header": "x-api-key",
             "keys": [{"name": "ci-bot", "sha256": tokens::sha256_hex(b"ci-secret")}]}},
            {"name": "ops", "basic": {"users": [{"name": "alice", "bcrypt": tokens::bcrypt_hash("wonderland")}]}}
        ],
        "rules": [
            {"match": {"path": {"prefix": "/public/"}}, "allow": "anonymous"},
            {"match": {}, "require_any": ["corp", "ci", "ops"]}
        ],
        "identity": {"header": "end-user", "from_claim": "sub"}
    })
}

/// `(target, seed name, bytes)` for every seed.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let file = vectors::load();
    let mut out = Vec::new();
    for (i, name) in ["lab_router", "auth", "timeouts", "shadow", "chain"]
        .iter()
        .enumerate()
    {
        let mut bytes = vec![i as u8];
        bytes.extend(vectors::config(&file, name).to_string().into_bytes());
        out.push(("config", format!("seed-{name}"), bytes));
    }
    let jason = tokens::claims("jason", NOW_S);
    for alg in ["RS256", "ES256", "ES384", "EdDSA"] {
        out.push((
            "jwt",
            format!("seed-{alg}"),
            tokens::mint(alg, &jason).into_bytes(),
        ));
    }
    out.push((
        "jwks",
        "seed-public".into(),
        tokens::public_jwks().to_string().into_bytes(),
    ));
    let bearer = format!("Bearer {}", tokens::mint("RS256", &jason));
    let basic = "Basic YWxpY2U6d29uZGVybGFuZA=="; // alice:wonderland
    let creds: [(&str, Request); 5] = [
        (
            "bearer",
            vec![(":path", b"/orders"), ("authorization", bearer.as_bytes())],
        ),
        (
            "api-key",
            vec![(":path", b"/orders"), ("x-api-key", b"ci-secret")],
        ),
        (
            "basic",
            vec![(":path", b"/orders"), ("authorization", basic.as_bytes())],
        ),
        (
            "two-api-keys",
            vec![
                (":path", b"/x"),
                ("x-api-key", b"ci-secret"),
                ("x-api-key", b"other"),
            ],
        ),
        ("public", vec![(":path", b"/public/docs")]),
    ];
    for (name, headers) in creds {
        out.push(("credentials", format!("seed-{name}"), encode(&headers)));
    }
    let deadline: [(&str, Request); 3] = [
        (
            "grpc",
            vec![
                (":path", b"/api/x"),
                ("content-type", b"application/grpc"),
                ("grpc-timeout", b"250m"),
            ],
        ),
        (
            "header",
            vec![(":path", b"/other"), ("x-deadline-ms", b"99999999999")],
        ),
        (
            "seconds",
            vec![(":path", b"/slow/report"), ("grpc-timeout", b"1S")],
        ),
    ];
    for (name, headers) in deadline {
        out.push(("deadlines", format!("seed-{name}"), encode(&headers)));
    }
    out.push(("deadlines", "seed-unit".into(), b"99999999H".to_vec()));
    out.push((
        "shadow_compare",
        "seed-json".into(),
        b"{\"id\": 1, \"items\": [1, 2, {\"a/b\": 3}], \"meta\": {\"ts\": 5}}\0{\"id\": 2, \"items\": [1, 3], \"meta\": {\"ts\": 6}}".to_vec(),
    ));
    out.push((
        "matcher",
        "seed-request".into(),
        encode(&[
            (":path", b"/api/users/42?v=2&debug"),
            (":method", b"GET"),
            (":authority", b"shop.example.com"),
            ("cookie", b"session=abcd1234; beta=1"),
            ("end-user", b"jason"),
            ("x-canary", b""),
        ]),
    ));
    out
}

fn write_or_compare(path: &Path, bytes: &[u8], write: bool) {
    if write {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    } else {
        assert!(
            path.exists(),
            "{} is missing; write the seeds (see the top of this file)",
            path.display()
        );
    }
}

#[test]
fn the_seeds_are_in_place_and_reach_what_they_were_made_for() {
    let write = std::env::var_os("SWITCHYARD_FUZZ_WRITE_SEEDS").is_some();
    let dir = fuzz_dir();
    write_or_compare(
        &dir.join("seeds/jwks.json"),
        tokens::public_jwks().to_string().as_bytes(),
        write,
    );
    write_or_compare(
        &dir.join("seeds/credentials_auth.json"),
        credentials_config().to_string().as_bytes(),
        write,
    );
    for (target, name, bytes) in seeds() {
        write_or_compare(&dir.join("corpus").join(target).join(name), &bytes, write);
    }

    // The key set the jwt target verifies with is the test keys', and each
    // checked-in token seed verifies with it.
    let keys = KeySet::parse(switchyard_fuzz_checks::JWKS.as_bytes()).unwrap();
    let on_disk: Value = serde_json::from_str(switchyard_fuzz_checks::JWKS).unwrap();
    assert_eq!(on_disk, tokens::public_jwks());
    for alg in ["RS256", "ES256", "ES384", "EdDSA"] {
        let token =
            std::fs::read_to_string(dir.join("corpus/jwt").join(format!("seed-{alg}"))).unwrap();
        let parsed = jwt::parse(&token, &[Alg::RS256, Alg::ES256, Alg::ES384, Alg::EdDSA]).unwrap();
        assert!(
            parsed.verify(&keys, &mut |_| None).is_ok(),
            "{alg} seed verifies"
        );
    }

    // Each credential seed gets the answer it was written for.
    let auth = Auth::from_json(
        std::fs::read(dir.join("seeds/credentials_auth.json"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let verdict = |seed: &str| {
        let bytes = std::fs::read(dir.join("corpus/credentials").join(seed)).unwrap();
        let req: HeaderList = Input::new(&bytes).headers();
        match switchyard_fuzz_checks::evaluate(&auth, &req) {
            Step::Done(Verdict::Allow { identity, .. }) => Ok(identity
                .and_then(|i| i.subject)
                .map(|s| String::from_utf8(s.to_vec()).unwrap())),
            Step::Done(Verdict::Deny(d)) => Err(d.status),
            other => panic!("{seed}: {other:?}"),
        }
    };
    assert_eq!(verdict("seed-bearer"), Ok(Some("jason".into())));
    assert_eq!(verdict("seed-api-key"), Ok(Some("ci-bot".into())));
    assert_eq!(verdict("seed-basic"), Ok(Some("alice".into())));
    assert_eq!(
        verdict("seed-two-api-keys"),
        Err(401),
        "an ambiguous credential is refused"
    );
    assert_eq!(verdict("seed-public"), Ok(None), "anonymous under /public/");
}
