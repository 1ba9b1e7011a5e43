use super::*;
use crate::headers::HeaderList;

const LAB: &str = r#"{
  "version_header": "x-version",
  "default_version": "v1",
  "routes": [
    {"name": "jason-to-v2", "match": {"headers": {"end-user": {"exact": "jason"}}}, "version": "v2"},
    {"name": "config-v2",   "match": {"headers": {"config-version": {"exact": "v2"}}}, "version": "v2"},
    {"name": "beta-cookie", "match": {"path": {"prefix": "/api/"}, "cookies": {"beta": {"exact": "1"}}}, "version": "v2"},
    {"name": "canary", "match": {"path": {"prefix": "/"}},
     "split": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}],
     "sticky": {"header": "x-user-id"}}
  ],
  "override": {"header": "x-version-override", "allow": ["v1", "v2"]}
}"#;

fn router(json: &str) -> Router {
    Router::from_json(json.as_bytes()).unwrap()
}

fn get(path: &str) -> HeaderList {
    HeaderList::new()
        .with(":method", "GET")
        .with(":path", path)
        .with(":authority", "demo")
}

fn err(json: &str) -> ConfigError {
    Router::from_json(json.as_bytes()).unwrap_err()
}

/// Deterministic stand-in for the host's per-request random numbers.
fn randoms() -> impl Iterator<Item = u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

#[test]
fn lab_routes_pick_versions() {
    let r = router(LAB);
    let d = r.decide(&get("/productpage").with("end-user", "jason"), 0);
    assert_eq!(
        (d.version, d.rule, d.reason),
        ("v2", "jason-to-v2", Reason::Route)
    );
    let d = r.decide(&get("/x").with("config-version", "v2"), 0);
    assert_eq!((d.version, d.rule), ("v2", "config-v2"));
    let d = r.decide(&get("/api/items").with("cookie", "session=9; beta=1"), 0);
    assert_eq!((d.version, d.rule), ("v2", "beta-cookie"));
    // The beta cookie only counts under /api/.
    let d = r.decide(
        &get("/web").with("cookie", "beta=1").with("x-user-id", "u1"),
        0,
    );
    assert_eq!(d.rule, "canary");
}

#[test]
fn no_routes_sends_all_traffic_to_default() {
    let r = router(r#"{"default_version": "v1"}"#);
    for path in ["/", "/reviews/1", "/api/x?y=1"] {
        let d = r.decide(&get(path).with("end-user", "jason"), 7);
        assert_eq!(
            (d.version, d.rule, d.reason),
            ("v1", DEFAULT_RULE, Reason::Default)
        );
    }
    assert_eq!(r.version_header(), "x-version");
    assert_eq!(r.served_version_header(), Some("x-served-version"));
}

#[test]
fn first_matching_route_wins() {
    let r = router(
        r#"{"default_version": "v1", "routes": [
        {"name": "a", "match": {"path": {"prefix": "/a"}}, "version": "v2"},
        {"name": "b", "match": {"path": {"prefix": "/"}}, "version": "v3"}]}"#,
    );
    assert_eq!(r.decide(&get("/a/1"), 0).version, "v2");
    assert_eq!(r.decide(&get("/b"), 0).version, "v3");
}

fn split_share(weights: (u32, u32), n: usize) -> f64 {
    let r = router(&format!(
        r#"{{"default_version": "v1", "routes": [{{"name": "s", "split": [
            {{"version": "v1", "weight": {}}}, {{"version": "v2", "weight": {}}}]}}]}}"#,
        weights.0, weights.1
    ));
    let req = get("/");
    let v2 = randoms()
        .take(n)
        .filter(|&x| r.decide(&req, x).version == "v2")
        .count();
    v2 as f64 / n as f64
}

#[test]
fn random_splits_hold_their_weights() {
    for (w, want) in [
        ((90, 10), 0.10),
        ((50, 50), 0.50),
        ((80, 20), 0.20),
        ((3, 1), 0.25),
    ] {
        let share = split_share(w, 20_000);
        assert!((share - want).abs() < 0.01, "{w:?}: v2 share {share}");
    }
}

#[test]
fn sticky_split_is_stable_per_user_and_holds_weights_across_users() {
    let r = router(LAB);
    let mut v2_users = 0;
    for user in 0..2000 {
        let req = get("/home").with("x-user-id", format!("user-{user}"));
        let first = r.decide(&req, 1);
        assert_eq!(first.reason, Reason::StickySplit);
        for random in [2, 3, u64::MAX] {
            assert_eq!(
                r.decide(&req, random).version,
                first.version,
                "user-{user} moved"
            );
        }
        v2_users += usize::from(first.version == "v2");
    }
    let share = v2_users as f64 / 2000.0;
    assert!((share - 0.10).abs() < 0.02, "v2 share across users {share}");
}

#[test]
fn sticky_by_cookie_and_fallback_to_random_without_key() {
    let r = router(
        r#"{"default_version": "v1", "routes": [{"name": "s",
        "split": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}],
        "sticky": {"cookie": "uid"}}]}"#,
    );
    let req = get("/").with("cookie", "uid=42");
    let v = r.decide(&req, 0).version;
    assert!((0..50).all(|x| r.decide(&req, x).version == v));
    assert_eq!(r.decide(&req, 0).reason, Reason::StickySplit);
    let anon = get("/");
    assert_eq!(r.decide(&anon, 0).reason, Reason::RandomSplit);
    let versions: std::collections::HashSet<_> = randoms()
        .take(100)
        .map(|x| r.decide(&anon, x).version)
        .collect();
    assert_eq!(versions.len(), 2, "without a key the split is per request");
}

#[test]
fn override_pins_only_allowed_versions() {
    let r = router(LAB);
    let d = r.decide(
        &get("/")
            .with("x-version-override", "v2")
            .with("x-user-id", "u"),
        0,
    );
    assert_eq!(
        (d.version, d.rule, d.reason),
        ("v2", OVERRIDE_RULE, Reason::Override)
    );
    let req = get("/")
        .with("x-version-override", "v9")
        .with("end-user", "jason");
    assert_eq!(r.decide(&req, 0).rule, "jason-to-v2");
    assert!(r.override_rejected(&req));
    assert!(!r.override_rejected(&get("/")));
}

#[test]
fn spoofed_version_header_is_not_read() {
    let r = router(r#"{"default_version": "v1"}"#);
    assert_eq!(r.decide(&get("/").with("x-version", "v2"), 0).version, "v1");
    assert!(!r.header_names().iter().any(|h| h == "x-version"));
    let e = err(
        r#"{"default_version": "v1", "routes": [{"match": {"headers": {"x-version": {"exact": "v2"}}}, "version": "v2"}]}"#,
    );
    assert_eq!(e.field, "routes[0].match.headers.x-version");
}

#[test]
fn outcomes_cover_every_decision() {
    let r = router(LAB);
    let names: Vec<_> = r
        .outcomes()
        .iter()
        .map(|o| format!("{}.{}", o.rule, o.version))
        .collect();
    assert_eq!(
        names,
        [
            "jason-to-v2.v2",
            "config-v2.v2",
            "beta-cookie.v2",
            "canary.v1",
            "canary.v2",
            "override.v1",
            "override.v2",
            "default.v1"
        ]
    );
    let d = r.decide(&get("/").with("end-user", "jason"), 0);
    assert_eq!(r.outcomes()[d.outcome].rule, d.rule);
}

#[test]
fn header_names_are_only_what_decisions_read() {
    let r = router(LAB);
    let mut names = r.header_names().to_vec();
    names.sort();
    assert_eq!(
        names,
        [
            ":path",
            "config-version",
            "cookie",
            "end-user",
            "x-user-id",
            "x-version-override"
        ]
    );
}

#[test]
fn bad_configuration_names_the_field() {
    assert!(Router::from_json(b"not json").is_err());
    assert!(err(r#"{"default_version": "v1", "bogus": 1}"#)
        .message
        .contains("unknown field `bogus`"));
    assert!(err(r#"{}"#).message.contains("default_version"));
    let e = err(
        r#"{"default_version": "v1", "routes": [{"match": {"headers": {"a": {"regex": "[z-a]"}}}, "version": "v2"}]}"#,
    );
    assert_eq!(e.field, "routes[0].match.headers.a.regex");
    let e = err(
        r#"{"default_version": "v1", "routes": [{"split": [{"version": "v1", "weight": 0}]}]}"#,
    );
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("routes[0].split", "total weight must be positive")
    );
    let e = err(r#"{"default_version": "v1", "routes": [{"split": []}]}"#);
    assert_eq!(e.field, "routes[0].split");
    let e = err(
        r#"{"default_version": "v1", "routes": [{"split": [{"version": "v1", "weight": -3}]}]}"#,
    );
    assert_eq!(e.field, "routes[0].split[0].weight");
    let e = err(
        r#"{"default_version": "v1", "routes": [{"version": "v2", "split": [{"version": "v1", "weight": 1}]}]}"#,
    );
    assert_eq!(e.field, "routes[0]");
    let e = err(r#"{"default_version": "v1", "routes": [{}]}"#);
    assert_eq!(e.field, "routes[0]");
    let e = err(
        r#"{"default_version": "v1", "routes": [{"version": "v2", "sticky": {"header": "u"}}]}"#,
    );
    assert_eq!(e.field, "routes[0].sticky");
    let e =
        err(r#"{"default_version": "v1", "override": {"header": "x-o", "allow": ["v1", "v7"]}}"#);
    assert_eq!(e.field, "override.allow[1]");
    assert!(e.message.contains("v7"));
    let e =
        err(r#"{"default_version": "v1", "override": {"header": "x-version", "allow": ["v1"]}}"#);
    assert_eq!(e.field, "override.header");
    let e = err(r#"{"default_version": "v1", "versions": ["v1"], "routes": [{"version": "v2"}]}"#);
    assert_eq!(e.field, "routes[0].version");
    let e = err(
        r#"{"default_version": "v1", "routes": [{"name": "a", "version": "v1"}, {"name": "a", "version": "v1"}]}"#,
    );
    assert_eq!(e.field, "routes[1].name");
    let e = err(r#"{"default_version": "v1", "version_header": "bad header"}"#);
    assert_eq!(e.field, "version_header");
    let e = err(r#"{"default_version": "has space"}"#);
    assert_eq!(e.field, "default_version");
    let e = err(
        r#"{"default_version": "v1", "routes": [{"split": [{"version": "v1", "weight": 1}], "sticky": {"jwt": "sub"}}]}"#,
    );
    assert_eq!(
        e.field, "routes[0].sticky.jwt",
        "an error about a key names it"
    );
    let e = err(
        r#"{"default_version": "v1", "routes": [{"split": [{"version": "v1", "weight": 1}], "sticky": {"claim": ""}}]}"#,
    );
    assert_eq!(e.field, "routes[0].sticky.claim");
}

#[test]
fn served_version_header_can_be_turned_off() {
    assert_eq!(
        router(r#"{"default_version": "v1", "served_version_header": null}"#)
            .served_version_header(),
        None
    );
    assert_eq!(
        router(r#"{"default_version": "v1", "served_version_header": "X-Served-By"}"#)
            .served_version_header(),
        Some("x-served-by")
    );
}

#[test]
fn weights_use_any_positive_integers_without_overflow() {
    let r = router(
        r#"{"default_version": "v1", "routes": [{"split": [
        {"version": "v1", "weight": 4294967295}, {"version": "v2", "weight": 4294967295}]}]}"#,
    );
    let req = get("/");
    let v2 = randoms()
        .take(10_000)
        .filter(|&x| r.decide(&req, x).version == "v2")
        .count();
    assert!((4_500..5_500).contains(&v2), "{v2}");
}

#[test]
fn an_equidistributed_sequence_holds_weights_over_small_windows() {
    let r = router(
        r#"{"default_version": "v1", "routes": [{"split": [
        {"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}]}"#,
    );
    let req = get("/");
    let mut x = 0x1234_5678u64;
    let picks: Vec<bool> = (0..1000)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            r.decide(&req, x).version == "v2"
        })
        .collect();
    for window in picks.chunks(100) {
        let v2 = window.iter().filter(|&&b| b).count();
        assert!((8..=12).contains(&v2), "{v2} of 100 went to v2");
    }
}

/// A request whose credential an earlier filter verified.
struct WithClaims(HeaderList, serde_json::Value);

impl RequestHeaders for WithClaims {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.header(name)
    }

    fn claims(&self) -> Option<&serde_json::Value> {
        Some(&self.1)
    }
}

#[test]
fn claims_drive_matches_and_sticky_splits() {
    let r = router(
        r#"{"default_version": "v1", "routes": [
        {"name": "testers", "match": {"claims": {"groups": {"contains": "testers"}}}, "version": "v3"},
        {"name": "canary", "split": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 1}],
         "sticky": {"claim": "sub"}}]}"#,
    );
    assert!(r.reads_claims());
    let user = |sub: &str, groups: serde_json::Value| {
        WithClaims(get("/"), serde_json::json!({"sub": sub, "groups": groups}))
    };
    let d = r.decide(&user("kim", serde_json::json!(["testers"])), 0);
    assert_eq!((d.version, d.rule), ("v3", "testers"));
    // The same subject always lands on the same version, whatever the draw.
    let jason = user("jason", serde_json::json!([]));
    let v = r.decide(&jason, 0).version;
    assert!(randoms().take(50).all(|x| r.decide(&jason, x).version == v));
    assert_eq!(r.decide(&jason, 0).reason, Reason::StickySplit);
    // Across subjects the split holds.
    let v2 = (0..1000)
        .filter(|i| {
            r.decide(&user(&format!("u{i}"), serde_json::json!([])), 0)
                .version
                == "v2"
        })
        .count();
    assert!((400..600).contains(&v2), "{v2}");
    // Without verified claims: no claims match, a per-request draw.
    assert_eq!(r.decide(&get("/"), 0).reason, Reason::RandomSplit);
    assert!(!router(LAB).reads_claims());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn req(pairs: &[(&str, &str)]) -> HeaderList {
        HeaderList::from_pairs(pairs.iter().copied())
    }

    fn split(w1: u32, w2: u32) -> Router {
        router(&format!(
            r#"{{"default_version": "v1", "routes": [{{"name": "canary",
                 "split": [{{"version": "v1", "weight": {w1}}}, {{"version": "v2", "weight": {w2}}}],
                 "sticky": {{"header": "x-user"}}}}]}}"#
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A sticky key always lands on the same version and bucket, whatever the draw.
        #[test]
        fn a_sticky_key_always_gets_the_same_version(
            key in "[ -~]{1,40}", w1 in 1u32..1000, w2 in 0u32..1000, r1 in any::<u64>(), r2 in any::<u64>()
        ) {
            let r = split(w1, w2);
            let q = req(&[("x-user", &key)]);
            let (a, b) = (r.decide(&q, r1), r.decide(&q, r2));
            prop_assert_eq!(a.version, b.version);
            prop_assert_eq!(a.bucket, b.bucket);
            let (bucket, total) = a.bucket.unwrap();
            prop_assert!(bucket < total && total == u64::from(w1 + w2));
            // The bucket decides: below v1's weight is v1.
            prop_assert_eq!(a.version, if bucket < u64::from(w1) { "v1" } else { "v2" });
        }

        /// Over many keys each version's share stays within a few points of its weight.
        #[test]
        fn weights_hold_over_many_keys(w1 in 1u32..100, w2 in 1u32..100, salt in any::<u32>()) {
            let r = split(w1, w2);
            let n = 4000;
            let v2 = (0..n)
                .filter(|i| r.decide(&req(&[("x-user", &format!("{salt}-{i}"))]), 0).version == "v2")
                .count();
            let want = f64::from(w2) / f64::from(w1 + w2);
            let got = v2 as f64 / f64::from(n);
            // 5 standard deviations of a binomial share at n = 4000 is under 0.04.
            prop_assert!((got - want).abs() < 0.04, "v2 share {got:.3}, weight {want:.3}");
        }
    }
}
