//! The `match` block shared by every Switchyard filter.
//!
//! A match is a conjunction of conditions on the path, authority, method,
//! headers, cookies and query parameters. Values are compared as bytes, so a
//! header that is not UTF-8 simply fails to match instead of failing the request.

use crate::claims::{all_match, compile_claims, ClaimMatchConfig, ClaimMatcher};
use crate::config::{is_header_name, ConfigError};
use crate::headers::RequestHeaders;
pub use crate::string_match::{StringMatchConfig, StringMatcher};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The `match` block as written in configuration. Every given condition must hold.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Compared with the path without its query string.
    #[serde(default)]
    pub path: Option<StringMatchConfig>,
    #[serde(default)]
    pub authority: Option<StringMatchConfig>,
    /// Any of these methods (case-sensitive, as HTTP methods are).
    #[serde(default)]
    pub method: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::unique_keys")]
    pub headers: BTreeMap<String, StringMatchConfig>,
    #[serde(default, deserialize_with = "crate::config::unique_keys")]
    pub cookies: BTreeMap<String, StringMatchConfig>,
    /// Compared with the raw (not percent-decoded) parameter value.
    #[serde(default, deserialize_with = "crate::config::unique_keys")]
    pub query: BTreeMap<String, StringMatchConfig>,
    /// Conditions on the claims of a credential the auth filter verified.
    #[serde(default, deserialize_with = "crate::config::unique_keys")]
    pub claims: BTreeMap<String, ClaimMatchConfig>,
}

#[derive(Debug, Clone)]
enum Subject {
    Path,
    Authority,
    Header(Box<str>),
    Cookie(Box<str>),
    Query(Box<str>),
}

#[derive(Debug, Clone)]
enum Condition {
    /// The value, its comparison, and the configuration field it came from.
    Value(Subject, StringMatcher, Box<str>),
    Method(Vec<Box<[u8]>>, Box<str>),
}

/// The first condition of a `match` a request does not meet: what an
/// explained decision shows beside the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// The configuration field of the condition (`routes[0].match.headers.end-user`).
    pub field: String,
    /// The comparison, as written (`exact "jason"`).
    pub expected: String,
    /// What the request had (lossy UTF-8), or `None` when it was absent.
    pub actual: Option<String>,
}

/// A compiled `match` block.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    conditions: Vec<Condition>,
    claims: Vec<ClaimMatcher>,
}

impl RequestMatch {
    /// Compiles `config`; `field` is where it sits, for error messages.
    pub fn compile(config: &MatchConfig, field: &str) -> Result<Self, ConfigError> {
        let mut conditions = Vec::new();
        if let Some(m) = &config.path {
            let at = format!("{field}.path");
            conditions.push(Condition::Value(
                Subject::Path,
                StringMatcher::compile(m, &at)?,
                at.into(),
            ));
        }
        if let Some(m) = &config.authority {
            let at = format!("{field}.authority");
            conditions.push(Condition::Value(
                Subject::Authority,
                StringMatcher::compile(m, &at)?,
                at.into(),
            ));
        }
        if let Some(methods) = &config.method {
            if methods.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.method"),
                    "list at least one method, or leave the key out",
                ));
            }
            conditions.push(Condition::Method(
                methods.iter().map(|m| m.as_bytes().into()).collect(),
                format!("{field}.method").into(),
            ));
        }
        for (name, m) in &config.headers {
            let lower = name.to_ascii_lowercase();
            let valid =
                is_header_name(&lower) || (lower.starts_with(':') && is_header_name(&lower[1..]));
            if !valid {
                return Err(ConfigError::new(
                    format!("{field}.headers.{name}"),
                    "not a valid header name",
                ));
            }
            let at = format!("{field}.headers.{name}");
            conditions.push(Condition::Value(
                Subject::Header(lower.into()),
                StringMatcher::compile(m, &at)?,
                at.into(),
            ));
        }
        for (name, m) in &config.cookies {
            let at = format!("{field}.cookies.{name}");
            conditions.push(Condition::Value(
                Subject::Cookie(name.as_str().into()),
                StringMatcher::compile(m, &at)?,
                at.into(),
            ));
        }
        for (name, m) in &config.query {
            let at = format!("{field}.query.{name}");
            conditions.push(Condition::Value(
                Subject::Query(name.as_str().into()),
                StringMatcher::compile(m, &at)?,
                at.into(),
            ));
        }
        let claims = compile_claims(&config.claims, &format!("{field}.claims"))?;
        Ok(Self { conditions, claims })
    }

    /// True when every condition holds (an empty match holds for every request).
    pub fn matches(&self, req: &(impl RequestHeaders + ?Sized)) -> bool {
        self.conditions.iter().all(|c| c.holds(req))
            && (self.claims.is_empty() || all_match(&self.claims, req.claims()))
    }

    /// The first condition `req` does not meet, in the order [`Self::matches`]
    /// checks them, or `None` when the match holds. Only explanations call
    /// this; the filters call `matches`.
    pub fn unmet(&self, req: &(impl RequestHeaders + ?Sized)) -> Option<Unmet> {
        let lossy = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        for c in &self.conditions {
            if c.holds(req) {
                continue;
            }
            return Some(match c {
                Condition::Method(methods, at) => Unmet {
                    field: at.to_string(),
                    expected: format!(
                        "one of {}",
                        methods
                            .iter()
                            .map(|m| lossy(m))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    actual: req.header(":method").map(lossy),
                },
                Condition::Value(subject, matcher, at) => Unmet {
                    field: at.to_string(),
                    expected: matcher.describe(),
                    actual: subject.value(req).map(lossy),
                },
            });
        }
        self.claims
            .iter()
            .find(|c| !c.matches(req.claims()))
            .map(|c| c.unmet(req.claims()))
    }

    /// True when this match has conditions on verified claims.
    pub fn reads_claims(&self) -> bool {
        !self.claims.is_empty()
    }

    /// The header names this match reads, so a host can fetch only those.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.conditions.iter().map(|c| match c {
            Condition::Method(..) => ":method",
            Condition::Value(Subject::Path | Subject::Query(_), ..) => ":path",
            Condition::Value(Subject::Authority, ..) => ":authority",
            Condition::Value(Subject::Cookie(_), ..) => "cookie",
            Condition::Value(Subject::Header(h), ..) => h,
        })
    }

    /// True when a condition reads header `name` directly.
    pub fn reads_header(&self, name: &str) -> bool {
        self.conditions
            .iter()
            .any(|c| matches!(c, Condition::Value(Subject::Header(h), ..) if &**h == name))
    }
}

impl Condition {
    fn holds(&self, req: &(impl RequestHeaders + ?Sized)) -> bool {
        match self {
            Condition::Method(methods, _) => req
                .header(":method")
                .is_some_and(|m| methods.iter().any(|x| &x[..] == m)),
            Condition::Value(subject, matcher, _) => matcher.matches(subject.value(req)),
        }
    }
}

impl Subject {
    fn value<'r>(&self, req: &'r (impl RequestHeaders + ?Sized)) -> Option<&'r [u8]> {
        match self {
            Subject::Path => req.path(),
            Subject::Authority => req.header(":authority"),
            Subject::Header(name) => req.header(name),
            Subject::Cookie(name) => req.header("cookie").and_then(|c| cookie_value(c, name)),
            Subject::Query(name) => req.header(":path").and_then(|p| query_value(p, name)),
        }
    }
}

/// The path before `?`.
pub fn path_without_query(path: &[u8]) -> &[u8] {
    match path.iter().position(|&b| b == b'?') {
        Some(i) => &path[..i],
        None => path,
    }
}

/// The value of cookie `name` in a `cookie` header (`a=1; b=2`); first one wins.
pub fn cookie_value<'c>(header: &'c [u8], name: &str) -> Option<&'c [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| {
            let v = pair[eq + 1..].trim_ascii();
            // RFC 6265 allows a value in double quotes.
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v)
        })
    })
}

/// How many times cookie `name` is set in a `cookie` header.
pub fn cookie_count(header: &[u8], name: &str) -> usize {
    header
        .split(|&b| b == b';')
        .filter(|pair| {
            let pair = pair.trim_ascii();
            pair.iter()
                .position(|&b| b == b'=')
                .is_some_and(|eq| pair[..eq].trim_ascii() == name.as_bytes())
        })
        .count()
}

/// How many times query parameter `name` is given in a `:path`.
pub fn query_count(path: &[u8], name: &str) -> usize {
    let Some(q) = path.iter().position(|&b| b == b'?') else {
        return 0;
    };
    let query = &path[q + 1..];
    let query = match query.iter().position(|&b| b == b'#') {
        Some(h) => &query[..h],
        None => query,
    };
    query
        .split(|&b| b == b'&')
        .filter(|pair| {
            let k = pair.split(|&b| b == b'=').next().unwrap_or(pair);
            k == name.as_bytes()
        })
        .count()
}

/// The raw value of query parameter `name` in a `:path`; a bare `name` gives `""`.
pub fn query_value<'p>(path: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let q = path.iter().position(|&b| b == b'?')?;
    let query = &path[q + 1..];
    let query = match query.iter().position(|&b| b == b'#') {
        Some(h) => &query[..h],
        None => query,
    };
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (k == name.as_bytes()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_json;
    use crate::headers::HeaderList;

    fn compile(json: &str) -> RequestMatch {
        RequestMatch::compile(&from_json::<MatchConfig>(json.as_bytes()).unwrap(), "match").unwrap()
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderList {
        HeaderList::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn empty_match_matches_everything() {
        assert!(compile("{}").matches(&req(&[])));
    }

    #[test]
    fn header_operators() {
        let m = compile(r#"{"headers": {"End-User": {"exact": "jason"}}}"#);
        assert!(m.matches(&req(&[("end-user", "jason")])));
        assert!(!m.matches(&req(&[("end-user", "jasonx")])));
        assert!(!m.matches(&req(&[])));

        let m = compile(r#"{"headers": {"x": {"prefix": "ab"}, "y": {"suffix": "yz"}}}"#);
        assert!(m.matches(&req(&[("x", "abc"), ("y", "xyz")])));
        assert!(!m.matches(&req(&[("x", "abc"), ("y", "xy")])));

        let m = compile(r#"{"headers": {"x": {"present": true}}}"#);
        assert!(m.matches(&req(&[("x", "")])));
        assert!(!m.matches(&req(&[])));
        let m = compile(r#"{"headers": {"x": {"present": false}}}"#);
        assert!(m.matches(&req(&[])));
        assert!(!m.matches(&req(&[("x", "1")])));
    }

    #[test]
    fn regex_is_a_full_match_and_skips_non_utf8() {
        let m = compile(r#"{"headers": {"x": {"regex": "v[0-9]+"}}}"#);
        assert!(m.matches(&req(&[("x", "v12")])));
        assert!(!m.matches(&req(&[("x", "av12")])));
        assert!(!m.matches(&req(&[("x", "v12a")])));
        let invalid_utf8 = HeaderList::new().with("x", [b'v', 0xff]);
        assert!(!m.matches(&invalid_utf8));
    }

    #[test]
    fn path_ignores_query_and_query_params_match() {
        let m = compile(r#"{"path": {"exact": "/api/items"}, "query": {"beta": {"exact": "1"}}}"#);
        assert!(m.matches(&req(&[(":path", "/api/items?x=2&beta=1")])));
        assert!(!m.matches(&req(&[(":path", "/api/items?beta=2")])));
        assert!(!m.matches(&req(&[(":path", "/api/items")])));
        assert_eq!(query_value(b"/p?flag&x=1", "flag"), Some(&b""[..]));
        assert_eq!(query_value(b"/p?x=1#frag", "x"), Some(&b"1"[..]));
        assert_eq!(query_value(b"/p", "x"), None);
    }

    #[test]
    fn cookies_are_parsed_from_the_cookie_header() {
        let m = compile(r#"{"cookies": {"beta": {"exact": "1"}}}"#);
        assert!(m.matches(&req(&[("cookie", "a=2; beta=1")])));
        assert!(m.matches(&req(&[("cookie", "beta=\"1\"")])));
        assert!(!m.matches(&req(&[("cookie", "xbeta=1")])));
        assert!(!m.matches(&req(&[("cookie", "beta")])));
        assert!(!m.matches(&req(&[])));
    }

    #[test]
    fn method_and_authority() {
        let m = compile(r#"{"method": ["GET", "HEAD"], "authority": {"suffix": ".example.com"}}"#);
        assert!(m.matches(&req(&[(":method", "GET"), (":authority", "a.example.com")])));
        assert!(!m.matches(&req(&[
            (":method", "POST"),
            (":authority", "a.example.com")
        ])));
        assert!(!m.matches(&req(&[(":method", "GET"), (":authority", "example.org")])));
    }

    #[test]
    fn config_errors_name_the_field() {
        let cfg = from_json::<MatchConfig>(br#"{"headers": {"x": {"regex": "("}}}"#).unwrap();
        let err = RequestMatch::compile(&cfg, "routes[0].match").unwrap_err();
        assert_eq!(err.field, "routes[0].match.headers.x.regex");
        let err = from_json::<MatchConfig>(br#"{"headers": {"x": {"exact": "a", "prefix": "b"}}}"#);
        assert_eq!(
            err.unwrap_err().field,
            "headers.x",
            "two kinds of match: the block is at fault"
        );
        let err = from_json::<MatchConfig>(br#"{"header": {}}"#).unwrap_err();
        assert!(err.message.contains("unknown field `header`"));
        let cfg = from_json::<MatchConfig>(br#"{"method": []}"#).unwrap();
        assert_eq!(
            RequestMatch::compile(&cfg, "m").unwrap_err().field,
            "m.method"
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_it() {
        let err = from_json::<MatchConfig>(
            br#"{"headers": {"end-user": {"exact": "a"}, "end-user": {"prefix": ""}}}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("duplicate key `end-user`"), "{err}");
        assert_eq!(err.field, "headers.end-user", "{err}");
        for twice in [
            br#"{"cookies": {"b": {"exact": "1"}, "b": {"exact": "2"}}}"#.as_slice(),
            br#"{"query": {"q": {"exact": "1"}, "q": {"exact": "1"}}}"#,
            br#"{"claims": {"sub": {"exact": "a"}, "sub": {"exact": "b"}}}"#,
            br#"{"path": {"exact": "/a"}, "path": {"exact": "/b"}}"#,
        ] {
            assert!(
                from_json::<MatchConfig>(twice).is_err(),
                "{}",
                String::from_utf8_lossy(twice)
            );
        }
    }

    #[test]
    fn unmet_names_the_first_failing_condition_with_both_values() {
        let m = compile(
            r#"{"method": ["GET"], "headers": {"end-user": {"exact": "jason"}}, "path": {"regex": "/a.*"}}"#,
        );
        let ok = req(&[(":method", "GET"), (":path", "/ab"), ("end-user", "jason")]);
        assert_eq!(m.unmet(&ok), None, "a holding match has nothing unmet");
        let path = m.unmet(&req(&[
            (":method", "GET"),
            (":path", "/b"),
            ("end-user", "jason"),
        ]));
        assert_eq!(
            path,
            Some(Unmet {
                field: "match.path".into(),
                expected: "regex \"/a.*\"".into(),
                actual: Some("/b".into())
            })
        );
        let user = m
            .unmet(&req(&[(":method", "GET"), (":path", "/a")]))
            .unwrap();
        assert_eq!(
            (user.field.as_str(), user.actual),
            ("match.headers.end-user", None)
        );
        let method = m
            .unmet(&req(&[
                (":method", "PUT"),
                (":path", "/a"),
                ("end-user", "jason"),
            ]))
            .unwrap();
        assert_eq!(method.expected, "one of GET");
    }

    #[test]
    fn huge_and_odd_cookie_headers_do_not_panic() {
        let big = "a=1; ".repeat(20_000) + "beta=1";
        let m = compile(r#"{"cookies": {"beta": {"exact": "1"}}}"#);
        assert!(m.matches(&req(&[("cookie", &big)])));
        for odd in ["", ";", "=", ";;==;", "beta=", " ; beta = 1 "] {
            let _ = m.matches(&req(&[("cookie", odd)]));
        }
        assert!(m.matches(&req(&[("cookie", " ; beta = 1 ")])));
    }
}
