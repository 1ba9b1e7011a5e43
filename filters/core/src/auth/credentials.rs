//! Where a provider finds its credential in a request (a header with its
//! scheme, a cookie, a query parameter), and the ambiguity check: a
//! credential sent twice, or joined into one value, is refused, since the
//! upstream might read the other one.

use super::*;
use crate::matcher::{cookie_count, cookie_value, query_count, query_value};

#[derive(Debug)]
pub(super) enum Source {
    Header { name: String, prefix: String },
    Cookie(String),
    Query(String),
}

impl Source {
    /// True when this source appears more than once: a repeated header (or
    /// one Envoy joined with `,`), a cookie set twice (in one `cookie` header
    /// or several), a query parameter given twice.
    pub(super) fn repeated(&self, req: &(impl RequestHeaders + ?Sized)) -> bool {
        let mut n = 0usize;
        match self {
            Source::Header { name, .. } => {
                req.each_value(name, &mut |v| n += 1 + usize::from(joined(Some(v))));
            }
            Source::Cookie(name) => req.each_value("cookie", &mut |c| n += cookie_count(c, name)),
            Source::Query(name) => {
                if let Some(path) = req.header(":path") {
                    n = query_count(path, name);
                }
            }
        }
        n > 1
    }

    pub(super) fn read<'r>(&self, req: &'r (impl RequestHeaders + ?Sized)) -> Option<&'r [u8]> {
        let v = match self {
            Source::Header { name, prefix } => {
                let v = req.header(name)?;
                if prefix.is_empty() {
                    v
                } else if v.len() >= prefix.len()
                    && v[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                {
                    &v[prefix.len()..]
                } else {
                    return None;
                }
            }
            Source::Cookie(name) => cookie_value(req.header("cookie")?, name)?,
            Source::Query(name) => query_value(req.header(":path")?, name)?,
        };
        let v = v.trim_ascii();
        (!v.is_empty()).then_some(v)
    }
}

impl Auth {
    /// True when provider `p`'s credential is in the request more than once
    /// (with any values), or in two of its sources with different values.
    pub(super) fn ambiguous(&self, p: usize, req: &(impl RequestHeaders + ?Sized)) -> bool {
        let repeated = |name: &str| {
            let mut n = 0;
            req.each_value(name, &mut |_| n += 1);
            n > 1
        };
        match &self.providers[p].kind {
            Kind::Jwt(j) => {
                // Values differing between sources need two sources to read.
                let compare = j.from.len() > 1;
                let mut found: Option<&[u8]> = None;
                for s in &j.from {
                    if s.repeated(req) {
                        return true;
                    }
                    if !compare {
                        continue;
                    }
                    match (found, s.read(req)) {
                        (Some(a), Some(b)) if a != b => return true,
                        (None, b) => found = b,
                        _ => {}
                    }
                }
                false
            }
            Kind::ApiKey(a) => repeated(&a.header),
            Kind::Basic(_) => repeated("authorization") || joined(req.header("authorization")),
            Kind::ExtAuth(e) => {
                e.forward_headers.iter().any(|h| h == "authorization") && repeated("authorization")
            }
        }
    }
}

/// True for a token or basic credential with a `,` in it: never part of one,
/// but how Envoy joins a repeated `authorization` header (an inline header)
/// into one value before any filter sees it.
fn joined(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| crate::bytes::has_byte(v, b','))
}

/// The credentials after an auth scheme (`Basic xyz` → `xyz`), scheme case-insensitive.
pub(super) fn strip_scheme<'v>(value: &'v [u8], scheme: &str) -> Option<&'v [u8]> {
    let n = scheme.len();
    (value.len() > n && value[..n].eq_ignore_ascii_case(scheme.as_bytes()) && value[n] == b' ')
        .then(|| &value[n + 1..])
}
