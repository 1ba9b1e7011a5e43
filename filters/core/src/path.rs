//! The path every rule decides on: the request path as the upstream will act
//! on it, not as the client spelled it.
//!
//! `/public/../admin`, `/public/%2e%2e/admin` and `/public//../admin` all
//! start with `/public/`, and most servers serve `/admin` for them. So every
//! policy matches on the RFC 3986 normal form (percent-encoded unreserved
//! characters decoded, repeated slashes merged, dot segments removed), and
//! the filter forwards that form, so the upstream receives exactly the path
//! that was decided on.
//!
//! Some spellings have no one meaning: servers disagree on whether `%2F` is a
//! separator, whether `\` is one, whether `;` starts parameters. Those are
//! [`Ambiguity`]s: refused with 400 by default, or (with `"ambiguous":
//! "normalize"`) resolved the way the most permissive server would and
//! forwarded in that form. Bytes no server should see (control characters,
//! broken percent-encoding) are refused in either mode.

use crate::config::ConfigError;
use serde::Deserialize;

/// `path_normalization`: one setting for every policy of a filter.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathNormalization {
    /// What to do with a path whose meaning depends on the server.
    #[serde(default)]
    pub ambiguous: AmbiguousPaths,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AmbiguousPaths {
    /// Answer 400.
    #[default]
    Reject,
    /// `%2F`, `%5C` and `\` become `/`, `;` parameters and a `#` fragment
    /// are dropped, and the result is normalised and forwarded.
    Normalize,
}

/// Why a path was refused; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// `%2F` or `%5C`: a separator to some servers, a character to others.
    EncodedSlash,
    /// `\`: a separator to Windows servers and some frameworks.
    Backslash,
    /// `;`: path parameters to Java servers (`/public;x=1/../admin`).
    PathParameter,
    /// `#`: a fragment never belongs in a request path.
    Fragment,
    /// A control byte or NUL, raw or percent-encoded (refused in every mode).
    ControlByte,
    /// `%` not followed by two hex digits (refused in every mode).
    BadPercentEncoding,
}

impl Ambiguity {
    pub const ALL: [Ambiguity; 6] = [
        Ambiguity::EncodedSlash,
        Ambiguity::Backslash,
        Ambiguity::PathParameter,
        Ambiguity::Fragment,
        Ambiguity::ControlByte,
        Ambiguity::BadPercentEncoding,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ambiguity::EncodedSlash => "encoded_slash",
            Ambiguity::Backslash => "backslash",
            Ambiguity::PathParameter => "path_parameter",
            Ambiguity::Fragment => "fragment",
            Ambiguity::ControlByte => "control_byte",
            Ambiguity::BadPercentEncoding => "bad_percent_encoding",
        }
    }

    /// Index into [`Ambiguity::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        Ambiguity::ALL.iter().position(|a| *a == self).unwrap_or(0)
    }

    /// True for what no mode can turn into a path.
    pub fn always_refused(self) -> bool {
        matches!(self, Ambiguity::ControlByte | Ambiguity::BadPercentEncoding)
    }

    /// The JSON body of the 400 answer.
    pub fn body(self) -> String {
        format!(
            r#"{{"error":"ambiguous_path","reason":"{}"}}"#,
            self.as_str()
        )
    }
}

impl PathNormalization {
    /// The one setting for a filter: the chain's own (`top`), or what the
    /// policies that set one agree on, or the safe default. A policy may
    /// repeat the setting (a single filter's configuration moved into the
    /// chain as it is) but not contradict it.
    pub fn settle<'a>(
        top: Option<Self>,
        declared: impl IntoIterator<Item = (&'a str, Option<Self>)>,
    ) -> Result<Self, ConfigError> {
        let mut settled = top;
        for (section, own) in declared {
            match (settled, own) {
                (Some(a), Some(b)) if a != b => {
                    return Err(ConfigError::new(
                        format!("{section}.path_normalization"),
                        "differs from another path_normalization in this chain; set it once, at the top level",
                    ))
                }
                (None, own) => settled = own,
                _ => {}
            }
        }
        Ok(settled.unwrap_or_default())
    }

    /// The path to decide on and forward: `Ok(None)` when `raw` is already in
    /// normal form, `Ok(Some(normal))` when it must be rewritten. The query
    /// string is kept as sent.
    pub fn normalize(&self, raw: &[u8]) -> Result<Option<Vec<u8>>, Ambiguity> {
        // Most paths: one pass up to the query, nothing to decode, no copy made.
        if raw.first() == Some(&b'/') && plainly_normal(raw) {
            return Ok(None);
        }
        let split = raw.iter().position(|&b| b == b'?').unwrap_or(raw.len());
        let (path, query) = raw.split_at(split);
        // `*` (OPTIONS) and absolute forms are not paths to match on.
        if !path.starts_with(b"/") {
            return check_bytes(path).map(|()| None);
        }
        self.normalize_in_full(path, query)
    }

    fn normalize_in_full(&self, path: &[u8], query: &[u8]) -> Result<Option<Vec<u8>>, Ambiguity> {
        let resolve = self.ambiguous == AmbiguousPaths::Normalize;
        let decoded = decode(path, resolve)?;
        let normal = remove_dot_segments(&decoded);
        if normal == path {
            return Ok(None);
        }
        let mut out = normal;
        out.extend_from_slice(query);
        Ok(Some(out))
    }
}

/// What a byte is to [`plainly_normal`]: most are [`PLAIN`], so the scan
/// is one table load and one branch a byte.
const PLAIN: u8 = 0;
/// An escape, control byte, `\`, `;` or `#`: the full normalisation decides.
const NOT_PLAIN: u8 = 1;
const SLASH: u8 = 2;
const DOT: u8 = 3;
const QUERY: u8 = 4;

static BYTE_CLASS: [u8; 256] = {
    let mut class = [PLAIN; 256];
    let mut b = 0;
    while b < 0x20 {
        class[b] = NOT_PLAIN;
        b += 1;
    }
    class[0x7f] = NOT_PLAIN;
    class[b'%' as usize] = NOT_PLAIN;
    class[b'\\' as usize] = NOT_PLAIN;
    class[b';' as usize] = NOT_PLAIN;
    class[b'#' as usize] = NOT_PLAIN;
    class[b'/' as usize] = SLASH;
    class[b'.' as usize] = DOT;
    class[b'?' as usize] = QUERY;
    class
};

/// True when `target`'s path (up to its `?`) has nothing to decode, merge or
/// resolve: no escape, control byte, `\`, `;`, `#`, repeated slash or dot
/// segment. The query is not looked at.
fn plainly_normal(target: &[u8]) -> bool {
    let mut after_slash = false;
    for (i, &b) in target.iter().enumerate() {
        match BYTE_CLASS[usize::from(b)] {
            PLAIN => after_slash = false,
            SLASH if after_slash => return false,
            SLASH => after_slash = true,
            DOT if after_slash && dot_segment(&target[i..]) => return false,
            DOT => after_slash = false,
            QUERY => return true,
            _ => return false,
        }
    }
    true
}

/// Whether `rest`, from a dot that opens a segment, is `.` or `..` up to
/// the next `/` or the query.
fn dot_segment(rest: &[u8]) -> bool {
    let end = rest
        .iter()
        .position(|&c| c == b'/' || c == b'?')
        .unwrap_or(rest.len());
    matches!(&rest[..end], b"." | b"..")
}

/// Refuses control bytes and broken escapes in a non-path target.
fn check_bytes(target: &[u8]) -> Result<(), Ambiguity> {
    if target.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Ambiguity::ControlByte);
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes percent-encoded unreserved bytes, upper-cases the hex of the
/// rest, merges repeated slashes; `resolve` settles ambiguities instead of
/// refusing them.
fn decode(path: &[u8], resolve: bool) -> Result<Vec<u8>, Ambiguity> {
    let mut out = Vec::with_capacity(path.len());
    let push_slash = |out: &mut Vec<u8>| {
        if out.last() != Some(&b'/') {
            out.push(b'/');
        }
    };
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            0..=0x1f | 0x7f => return Err(Ambiguity::ControlByte),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    path.get(i + 1).copied().and_then(hex),
                    path.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Ambiguity::BadPercentEncoding);
                };
                let c = hi << 4 | lo;
                i += 3;
                match c {
                    0..=0x1f | 0x7f => return Err(Ambiguity::ControlByte),
                    b'/' | b'\\' if resolve => push_slash(&mut out),
                    b'/' | b'\\' => return Err(Ambiguity::EncodedSlash),
                    c if is_unreserved(c) => out.push(c),
                    c => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.extend_from_slice(&[
                            b'%',
                            HEX[usize::from(c >> 4)],
                            HEX[usize::from(c & 15)],
                        ]);
                    }
                }
                continue;
            }
            b'\\' if resolve => push_slash(&mut out),
            b'\\' => return Err(Ambiguity::Backslash),
            b';' if resolve => {
                // Parameters run to the end of their segment.
                while i < path.len() && path[i] != b'/' {
                    i += 1;
                }
                continue;
            }
            b';' => return Err(Ambiguity::PathParameter),
            b'#' if resolve => break,
            b'#' => return Err(Ambiguity::Fragment),
            b'/' => push_slash(&mut out),
            _ => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path whose slashes are already merged.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut parts = path[1..].split(|&b| b == b'/').peekable();
    // A trailing `.` or `..` leaves the path ending in `/`, as a directory.
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            b"." => trailing_slash = last,
            b".." => {
                segments.pop();
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(raw: &str) -> Result<String, Ambiguity> {
        PathNormalization::default()
            .normalize(raw.as_bytes())
            .map(|n| String::from_utf8(n.unwrap_or_else(|| raw.as_bytes().to_vec())).unwrap())
    }

    fn lenient(raw: &str) -> Result<String, Ambiguity> {
        let p = PathNormalization {
            ambiguous: AmbiguousPaths::Normalize,
        };
        p.normalize(raw.as_bytes())
            .map(|n| String::from_utf8(n.unwrap_or_else(|| raw.as_bytes().to_vec())).unwrap())
    }

    #[test]
    fn the_reported_bypasses_are_decided_on_the_path_the_upstream_serves() {
        assert_eq!(strict("/public/../admin/users").unwrap(), "/admin/users");
        assert_eq!(strict("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(strict("/public/%2E%2e/admin").unwrap(), "/admin");
        assert_eq!(strict("/public/..\\admin"), Err(Ambiguity::Backslash));
        assert_eq!(strict("/public/;/../admin"), Err(Ambiguity::PathParameter));
        assert_eq!(lenient("/public/..\\admin").unwrap(), "/admin");
        assert_eq!(lenient("/public/;/../admin").unwrap(), "/admin");
        assert_eq!(lenient("/public;x=1/../admin").unwrap(), "/admin");
    }

    #[test]
    fn a_normal_path_is_left_alone() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a%20b",
            "/%C3%A9t%C3%A9",
            "/a?x=../..;%2F",
            "*",
        ] {
            assert_eq!(
                PathNormalization::default().normalize(p.as_bytes()),
                Ok(None),
                "{p}"
            );
        }
    }

    #[test]
    fn rfc_3986_normal_form() {
        assert_eq!(strict("//a///b").unwrap(), "/a/b");
        assert_eq!(strict("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(strict("/a/b/..").unwrap(), "/a/");
        assert_eq!(strict("/../../x").unwrap(), "/x");
        assert_eq!(strict("/..").unwrap(), "/");
        assert_eq!(
            strict("/a/..b/c.").unwrap(),
            "/a/..b/c.",
            "not dot segments"
        );
        // Merged before resolving, as the upstream that merges them does.
        assert_eq!(strict("/public//../admin").unwrap(), "/admin");
        assert_eq!(strict("/%7Euser/%61").unwrap(), "/~user/a");
        assert_eq!(strict("/a%3fb%2a").unwrap(), "/a%3Fb%2A");
        assert_eq!(strict("/a/../b?q=/../x").unwrap(), "/b?q=/../x");
    }

    #[test]
    fn ambiguities_are_refused_or_resolved_as_configured() {
        for (raw, why, resolved) in [
            ("/public/%2F../admin", Ambiguity::EncodedSlash, "/admin"),
            ("/public%2f..%2fadmin", Ambiguity::EncodedSlash, "/admin"),
            ("/public/%5c../admin", Ambiguity::EncodedSlash, "/admin"),
            ("/public\\x", Ambiguity::Backslash, "/public/x"),
            ("/a;jsessionid=1", Ambiguity::PathParameter, "/a"),
            ("/public/x#/../../admin", Ambiguity::Fragment, "/public/x"),
        ] {
            assert_eq!(strict(raw), Err(why), "{raw}");
            assert_eq!(lenient(raw).as_deref(), Ok(resolved), "{raw}");
        }
    }

    #[test]
    fn control_bytes_and_broken_escapes_are_refused_in_every_mode() {
        for (raw, why) in [
            ("/a\0b", Ambiguity::ControlByte),
            ("/a%00", Ambiguity::ControlByte),
            ("/a%0d%0aX: y", Ambiguity::ControlByte),
            ("/a\x7f", Ambiguity::ControlByte),
            ("/a%", Ambiguity::BadPercentEncoding),
            ("/a%2", Ambiguity::BadPercentEncoding),
            ("/a%zz", Ambiguity::BadPercentEncoding),
        ] {
            assert_eq!(strict(raw), Err(why), "{raw:?}");
            assert_eq!(lenient(raw), Err(why), "{raw:?}");
            assert!(why.always_refused());
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for raw in [
            "/public/%2e%2e/admin",
            "//a/./b/../c/",
            "/%7e/%41%3a",
            "/x\\..\\y;z",
        ] {
            if let Ok(once) = lenient(raw) {
                assert_eq!(lenient(&once).unwrap(), once, "{raw}");
                assert_eq!(strict(&once).unwrap(), once, "{raw}");
            }
        }
    }

    #[test]
    fn one_setting_per_filter() {
        let lenient = PathNormalization {
            ambiguous: AmbiguousPaths::Normalize,
        };
        let safe = PathNormalization::default();
        assert_eq!(
            PathNormalization::settle(None, []).unwrap(),
            safe,
            "safe by default"
        );
        assert_eq!(
            PathNormalization::settle(None, [("auth", None), ("router", Some(lenient))]).unwrap(),
            lenient
        );
        assert_eq!(
            PathNormalization::settle(Some(lenient), [("router", Some(lenient))]).unwrap(),
            lenient
        );
        let err =
            PathNormalization::settle(Some(lenient), [("auth", None), ("router", Some(safe))])
                .unwrap_err();
        assert_eq!(err.field, "router.path_normalization", "{err}");
    }

    #[test]
    fn the_setting_is_part_of_every_policy_configuration() {
        use crate::config::from_json;
        let cfg: crate::router::RouterConfig = from_json(
            br#"{"default_version": "v1", "path_normalization": {"ambiguous": "normalize"}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.path_normalization,
            Some(PathNormalization {
                ambiguous: AmbiguousPaths::Normalize
            })
        );
        let err = crate::router::Router::from_json(
            br#"{"default_version": "v1", "path_normalization": {"ambiguous": "allow"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.field, "path_normalization.ambiguous", "{err}");
        let err = crate::timeouts::Timeouts::from_json(br#"{"path_normalization": {"mode": "x"}}"#)
            .unwrap_err();
        assert!(err.message.contains("unknown field"), "{err}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Paths built from the pieces that matter: separators, dots, escapes
    /// (valid, broken, of slashes and controls), `;`, `\`, `#`, `?`, letters.
    fn hostile_path() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"/".to_vec()),
            Just(b"//".to_vec()),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            Just(b"%2e".to_vec()),
            Just(b"%2E%2e".to_vec()),
            Just(b"%2f".to_vec()),
            Just(b"%5C".to_vec()),
            Just(b"%41".to_vec()),
            Just(b"%3a".to_vec()),
            Just(b"%".to_vec()),
            Just(b"%0".to_vec()),
            Just(b"%00".to_vec()),
            Just(b"\\".to_vec()),
            Just(b";x=1".to_vec()),
            Just(b"#f".to_vec()),
            Just(b"?q=/../".to_vec()),
            Just(b"admin".to_vec()),
            Just(b"public".to_vec()),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|pieces| {
            let mut p = b"/".to_vec();
            pieces.into_iter().for_each(|x| p.extend(x));
            p
        })
    }

    fn is_normal(path: &[u8]) -> bool {
        let path = &path[..path.iter().position(|&b| b == b'?').unwrap_or(path.len())];
        path.starts_with(b"/")
            && !path.windows(2).any(|w| w == b"//")
            && !path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
            && !path
                .iter()
                .any(|&b| b < 0x20 || b == 0x7f || b == b'\\' || b == b';' || b == b'#')
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Whatever is forwarded is in normal form and stays as it is.
        #[test]
        fn what_is_forwarded_is_normal_and_stable(raw in hostile_path()) {
            for mode in [AmbiguousPaths::Reject, AmbiguousPaths::Normalize] {
                let p = PathNormalization { ambiguous: mode };
                if let Ok(out) = p.normalize(&raw) {
                    let forwarded = out.unwrap_or_else(|| raw.clone());
                    prop_assert!(is_normal(&forwarded), "{:?} -> {:?}", String::from_utf8_lossy(&raw), String::from_utf8_lossy(&forwarded));
                    prop_assert_eq!(p.normalize(&forwarded), Ok(None));
                }
            }
        }

        /// Where the strict mode accepts a path, the lenient one decides the same.
        #[test]
        fn the_modes_agree_where_both_accept(raw in hostile_path()) {
            let strict = PathNormalization::default().normalize(&raw);
            let lenient = PathNormalization { ambiguous: AmbiguousPaths::Normalize }.normalize(&raw);
            if let Ok(s) = strict {
                prop_assert_eq!(lenient, Ok(s));
            } else if let (Err(why), Ok(_)) = (strict, lenient) {
                // Refused only for what the lenient mode can settle.
                prop_assert!(!why.always_refused(), "{:?}", why);
            }
        }

        /// The shortcut for plain paths decides as the full normalisation does.
        #[test]
        fn the_plain_path_shortcut_agrees_with_the_full_normalisation(raw in hostile_path()) {
            let path = &raw[..raw.iter().position(|&b| b == b'?').unwrap_or(raw.len())];
            if plainly_normal(&raw) {
                for mode in [AmbiguousPaths::Reject, AmbiguousPaths::Normalize] {
                    let p = PathNormalization { ambiguous: mode };
                    prop_assert_eq!(p.normalize_in_full(path, b""), Ok(None), "{:?}", String::from_utf8_lossy(path));
                }
            }
        }

        /// No input panics, however odd.
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = PathNormalization::default().normalize(&raw);
            let _ = PathNormalization { ambiguous: AmbiguousPaths::Normalize }.normalize(&raw);
        }
    }
}
