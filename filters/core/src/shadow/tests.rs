use super::*;
use crate::headers::HeaderList;

/// The issue's example configuration.
const EXAMPLE: &str = r#"{
  "rules": [
    {"name": "httpbin-v2", "match": {"path": {"prefix": "/"}}, "percent": 10.0,
     "target_cluster": "httpbin-v2", "mode": "mirror"},
    {"name": "reviews-compare", "match": {"path": {"prefix": "/reviews"}}, "percent": 5.0,
     "target_cluster": "reviews-v2", "mode": "compare"}
  ],
  "sample_by": "x-request-id",
  "cluster_header": "x-shadow-cluster",
  "tag_header": "x-shadow",
  "safe": {"methods": ["GET", "HEAD", "OPTIONS"], "strip_headers": ["authorization", "cookie"]},
  "compare": {"ignore_headers": ["date", "x-request-id", "server"], "ignore_json_paths": ["/timestamp"],
              "max_body_bytes": 65536, "timeout_ms": 2000, "log_diffs": 10}
}"#;

fn req(pairs: &[(&str, &str)]) -> HeaderList {
    HeaderList::from_pairs(pairs.iter().copied())
}

fn compare_all() -> Shadow {
    Shadow::from_json(
        br#"{"rules": [{"name": "all", "percent": 100, "target_cluster": "v2", "mode": "compare"}],
             "safe": {"strip_headers": ["authorization"]},
             "compare": {"ignore_headers": ["date"], "ignore_json_paths": ["/timestamp", "/meta/trace"]}}"#,
    )
    .unwrap()
}

fn captured(status: u16, headers: &[(&str, &str)], body: &str) -> Captured {
    Captured {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.as_bytes().to_vec(),
        truncated: false,
    }
}

#[test]
fn sampling_is_deterministic_and_holds_its_rate() {
    let s = Shadow::from_json(EXAMPLE.as_bytes()).unwrap();
    let mut sampled = 0;
    for i in 0..10_000 {
        let id = format!("{i:08x}-request");
        let r = req(&[(":method", "GET"), (":path", "/x"), ("x-request-id", &id)]);
        let d = s.decide(&r, 0);
        assert_eq!(d, s.decide(&r, u64::MAX), "{id} decided twice differently");
        sampled += usize::from(d.mirror == Decision::Shadow(0));
        // /x is not under /reviews: never compared.
        assert_eq!(d.compare, Decision::None);
    }
    // 10 % within ±1 point.
    assert!((900..=1100).contains(&sampled), "{sampled}");
}

#[test]
fn each_mode_takes_its_first_matching_rule() {
    // The issue's example: everything mirrored at 10 %, /reviews compared at 5 %.
    let s = Shadow::from_json(
        br#"{"rules": [
          {"name": "all", "match": {"path": {"prefix": "/"}}, "percent": 100, "target_cluster": "a", "mode": "mirror"},
          {"name": "reviews", "match": {"path": {"prefix": "/reviews"}}, "percent": 100, "target_cluster": "b", "mode": "compare"}]}"#,
    )
    .unwrap();
    let d = s.decide(&req(&[(":method", "GET"), (":path", "/reviews/1")]), 0);
    assert_eq!(
        (d.mirror, d.compare),
        (Decision::Shadow(0), Decision::Shadow(1))
    );
    let d = s.decide(&req(&[(":method", "GET"), (":path", "/other")]), 0);
    assert_eq!((d.mirror, d.compare), (Decision::Shadow(0), Decision::None));
}

#[test]
fn only_safe_methods_are_shadowed() {
    let s = compare_all();
    let compare = |r: &HeaderList| s.decide(r, 0).compare;
    assert_eq!(compare(&req(&[(":method", "GET")])), Decision::Shadow(0));
    assert_eq!(compare(&req(&[(":method", "POST")])), Decision::Unsafe(0));
    assert_eq!(compare(&req(&[])), Decision::Unsafe(0));
    let none = Shadow::from_json(br#"{"rules": [{"name": "r", "match": {"path": {"prefix": "/a"}}, "percent": 100, "target_cluster": "c"}]}"#).unwrap();
    assert_eq!(
        none.decide(&req(&[(":path", "/b")]), 0).mirror,
        Decision::None
    );
    assert_eq!(none.rules[0].mode, Mode::Mirror);
}

#[test]
fn the_shadow_copy_is_stripped_suffixed_and_tagged() {
    let s = compare_all();
    let primary: Vec<(String, Vec<u8>)> = [
        (":authority", "reviews:9080"),
        (":path", "/reviews/1"),
        (":method", "GET"),
        ("authorization", "Bearer secret"),
        ("x-shadow", "false"),
        ("x-shadow-cluster", "evil"),
        ("content-length", "0"),
        ("x-request-id", "abc"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    let copy = s.shadow_request(&primary);
    let get = |n: &str| {
        copy.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(get(":authority"), ["reviews-shadow:9080"]);
    assert_eq!(get("x-shadow"), ["true"]);
    assert!(get("authorization").is_empty() && get("x-shadow-cluster").is_empty());
    assert!(get("content-length").is_empty());
    assert_eq!(get("x-request-id"), ["abc"]);
    assert_eq!(shadow_authority(b"example.com"), b"example.com-shadow");
    assert_eq!(shadow_authority(b"[::1]:80"), b"[::1]-shadow:80");
}

#[test]
fn the_receiving_side_recognises_shadows() {
    let s = Shadow::from_json(br#"{"receiver": {"answer_unsafe": 405}}"#).unwrap();
    assert!(s.is_shadow(&req(&[(":authority", "httpbin-shadow:8000")])));
    assert!(s.is_shadow(&req(&[(":authority", "httpbin-shadow")])));
    assert!(s.is_shadow(&req(&[(":authority", "httpbin"), ("x-shadow", "true")])));
    assert!(!s.is_shadow(&req(&[(":authority", "httpbin:8000")])));
    assert!(!s.is_shadow(&req(&[(":authority", "shadow.example.com")])));
    assert_eq!(s.answer_unsafe(&req(&[(":method", "POST")])), Some(405));
    assert_eq!(s.answer_unsafe(&req(&[(":method", "GET")])), None);
    assert_eq!(
        compare_all().answer_unsafe(&req(&[(":method", "POST")])),
        None
    );
}

#[test]
fn equal_responses_match_whatever_the_key_order_and_ignored_parts() {
    let s = compare_all();
    let p = captured(
        200,
        &[
            ("content-type", "application/json"),
            ("date", "Mon"),
            ("content-length", "40"),
        ],
        r#"{"id": 1, "name": "a", "timestamp": 100, "meta": {"trace": "x", "v": 1}}"#,
    );
    let sh = captured(
        200,
        &[("date", "Tue"), ("content-type", "application/json")],
        r#"{"meta": {"v": 1, "trace": "y"}, "timestamp": 200, "name": "a", "id": 1}"#,
    );
    let d = s.compare(&p, &sh);
    assert!(d.is_match(), "{}", d.summary());
}

#[test]
fn differences_are_found_and_summarised() {
    let s = compare_all();
    let p = captured(
        200,
        &[("x-version", "v1")],
        r#"{"items": [{"name": "a"}], "n": 1}"#,
    );
    let status = s.compare(
        &p,
        &captured(
            500,
            &[("x-version", "v1")],
            r#"{"items": [{"name": "a"}], "n": 1}"#,
        ),
    );
    assert_eq!(
        (status.status, status.headers.len(), &status.body),
        (Some((200, 500)), 0, &None)
    );
    let header = s.compare(
        &p,
        &captured(
            200,
            &[("x-version", "v2")],
            r#"{"items": [{"name": "a"}], "n": 1}"#,
        ),
    );
    assert_eq!(header.headers, ["x-version"]);
    let body = s.compare(
        &p,
        &captured(
            200,
            &[("x-version", "v1")],
            r#"{"items": [{"name": "A"}], "n": 1}"#,
        ),
    );
    assert_eq!(body.body.as_deref(), Some(r#"/items/0/name: "a" vs "A""#));
    assert_eq!(body.summary(), r#"body /items/0/name: "a" vs "A""#);
    let missing = s.compare(
        &p,
        &captured(200, &[("x-version", "v1")], r#"{"items": [{"name": "a"}]}"#),
    );
    assert_eq!(missing.body.as_deref(), Some("/n: 1 vs absent"));
    let text = s.compare(&captured(200, &[], "hello"), &captured(200, &[], "hellO"));
    assert_eq!(text.body.as_deref(), Some("bytes"));
}

#[test]
fn only_real_answers_are_compared() {
    let pairs = |h: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let real_503 = pairs(&[(":status", "503"), ("x-envoy-upstream-service-time", "3")]);
    assert_eq!(classify_answer(&real_503, 10, 2000), Answer::Real);
    assert_eq!(
        classify_answer(&pairs(&[(":status", "404")]), 10, 2000),
        Answer::Real
    );
    // Envoy's own answer to a refused connection.
    let refused = pairs(&[(":status", "503"), ("content-type", "text/plain")]);
    assert_eq!(classify_answer(&refused, 10, 2000), Answer::Error);
    assert_eq!(
        classify_answer(&pairs(&[(":status", "504")]), 10, 2000),
        Answer::Timeout
    );
    // No headers: a reset early, a timeout late.
    assert_eq!(classify_answer(&[], 10, 2000), Answer::Error);
    assert_eq!(classify_answer(&[], 2000, 2000), Answer::Timeout);
    assert_eq!(status_of(&pairs(&[(":status", "2x0")])), 0);
}

#[test]
fn bodies_over_the_limit_are_not_compared() {
    let mut p = Captured::default();
    p.push_body(b"0123456789", 4);
    p.push_body(b"more", 4);
    assert_eq!((p.body.as_slice(), p.truncated), (&b"0123"[..], true));
    let s = compare_all();
    let d = s.compare(&p, &captured(0, &[], "different"));
    assert!(d.body_skipped && d.body.is_none());
}

#[test]
fn bad_configuration_names_the_field() {
    let err = |json: &str| Shadow::from_json(json.as_bytes()).unwrap_err().field;
    for (json, field) in [
        (
            r#"{"rules": [{"name": "r", "percent": 101, "target_cluster": "c"}]}"#,
            "rules[0].percent",
        ),
        (
            r#"{"rules": [{"name": "r", "percent": -1, "target_cluster": "c"}]}"#,
            "rules[0].percent",
        ),
        (
            r#"{"rules": [{"name": "r", "percent": 5, "target_cluster": "c", "mode": "copy"}]}"#,
            "rules[0].mode",
        ),
        (r#"{"rules": [{"name": "r", "percent": 5}]}"#, "rules[0]"),
        (
            r#"{"rules": [{"name": "r", "percent": 5, "target_cluster": ""}]}"#,
            "rules[0].target_cluster",
        ),
        (r#"{"safe": {"methods": ["get"]}}"#, "safe.methods[0]"),
        (
            r#"{"safe": {"strip_headers": ["Authorization"]}}"#,
            "safe.strip_headers[0]",
        ),
        (
            r#"{"compare": {"ignore_json_paths": ["timestamp"]}}"#,
            "compare.ignore_json_paths[0]",
        ),
        (r#"{"compare": {"timeout_ms": 0}}"#, "compare.timeout_ms"),
        (
            r#"{"receiver": {"answer_unsafe": 99}}"#,
            "receiver.answer_unsafe",
        ),
        (r#"{"tag_header": "X Shadow"}"#, "tag_header"),
    ] {
        assert!(
            err(json).starts_with(field),
            "{json}: {} != {field}",
            err(json)
        );
    }
    assert!(Shadow::from_json(EXAMPLE.as_bytes()).is_ok());
}
