//! Primary-versus-shadow comparison: status, headers (as multisets, minus
//! ignored and per-hop ones), and bodies — JSON-aware when both are JSON
//! (key order ignored, ignored pointers removed), bytes otherwise.

use serde_json::Value;

/// Headers that differ between any two responses for reasons of transport,
/// not behaviour; never compared.
const ALWAYS_IGNORED: &[&str] = &[
    ":status",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "x-envoy-upstream-service-time",
];

/// One response as recorded: the body up to the configured limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The body went past the limit; only the first bytes are kept.
    pub truncated: bool,
}

/// A response's `:status` (0 if absent or unreadable).
pub fn status_of(headers: &[(String, Vec<u8>)]) -> u16 {
    headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// How the shadow answered the filter's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An answer from the shadow service: compare it.
    Real,
    /// No real answer: a reset, a refused connection.
    Error,
    /// No real answer in time.
    Timeout,
}

/// Classifies the answer to a copy. Envoy answers a timeout (504), a reset
/// or a refused connection (503) itself, without the router's
/// `x-envoy-upstream-service-time`, and reports a call that fails outright
/// as no headers; none of these is a difference.
pub fn classify_answer(headers: &[(String, Vec<u8>)], elapsed_ms: u64, timeout_ms: u64) -> Answer {
    let from_upstream = headers
        .iter()
        .any(|(k, _)| k == "x-envoy-upstream-service-time");
    let status = status_of(headers);
    if !headers.is_empty() && (from_upstream || status < 500) {
        Answer::Real
    } else if status == 504 || elapsed_ms >= timeout_ms {
        Answer::Timeout
    } else {
        Answer::Error
    }
}

impl Captured {
    /// Appends body bytes up to `limit`, remembering anything beyond.
    pub fn push_body(&mut self, chunk: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.body.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// How a shadow response differs from the primary's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    /// (primary, shadow)
    pub status: Option<(u16, u16)>,
    /// Names of headers whose values differ (or that only one side has).
    pub headers: Vec<String>,
    /// Where the bodies first differ: a JSON pointer, or `bytes`.
    pub body: Option<String>,
    /// A body was over the limit, so bodies were not compared.
    pub body_skipped: bool,
}

impl Difference {
    pub fn is_match(&self) -> bool {
        self.status.is_none() && self.headers.is_empty() && self.body.is_none()
    }

    /// A one-line, readable summary for the log.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some((p, s)) = self.status {
            parts.push(format!("status {p} vs {s}"));
        }
        if !self.headers.is_empty() {
            parts.push(format!("headers {}", self.headers.join(",")));
        }
        if let Some(b) = &self.body {
            parts.push(format!("body {b}"));
        }
        if parts.is_empty() {
            parts.push("match".into());
        }
        parts.join("; ")
    }
}

pub(super) fn compare(
    primary: &Captured,
    shadow: &Captured,
    ignore_headers: &[String],
    ignore_json_paths: &[String],
) -> Difference {
    let status = (primary.status != shadow.status).then_some((primary.status, shadow.status));
    let comparable = |h: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = h
            .iter()
            .filter(|(k, _)| {
                !ALWAYS_IGNORED.contains(&k.as_str()) && !ignore_headers.iter().any(|i| i == k)
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        v.sort();
        v
    };
    let (p, s) = (comparable(&primary.headers), comparable(&shadow.headers));
    let mut headers: Vec<String> = Vec::new();
    for name in p.iter().chain(&s).map(|(k, _)| k) {
        if headers.contains(name) {
            continue;
        }
        let values = |list: &[(String, Vec<u8>)]| -> Vec<Vec<u8>> {
            list.iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        if values(&p) != values(&s) {
            headers.push(name.clone());
        }
    }
    let body_skipped = primary.truncated || shadow.truncated;
    let body = if body_skipped {
        None
    } else {
        body_difference(&primary.body, &shadow.body, ignore_json_paths)
    };
    Difference {
        status,
        headers,
        body,
        body_skipped,
    }
}

fn body_difference(primary: &[u8], shadow: &[u8], ignore: &[String]) -> Option<String> {
    body_differences(primary, shadow, ignore, 1).pop()
}

/// Where two bodies differ, at most `limit` places, in key order: JSON
/// pointers with both values when both are JSON, else `bytes`.
pub fn body_differences(
    primary: &[u8],
    shadow: &[u8],
    ignore: &[String],
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let parsed = (
        serde_json::from_slice::<Value>(primary),
        serde_json::from_slice::<Value>(shadow),
    );
    if let (Ok(mut p), Ok(mut s)) = parsed {
        for path in ignore {
            remove_pointer(&mut p, path);
            remove_pointer(&mut s, path);
        }
        differences(&p, &s, String::new(), &mut out, limit);
    } else if primary != shadow && limit > 0 {
        out.push("bytes".to_owned());
    }
    out
}

/// Removes the value at a JSON pointer (RFC 6901), if present.
fn remove_pointer(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// Appends the JSON pointer of each difference, with both values when short,
/// until `out` holds `limit`.
fn differences(p: &Value, s: &Value, at: String, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit {
        return;
    }
    match (p, s) {
        (Value::Object(a), Value::Object(b)) => {
            // serde_json's map is ordered by key, so key order never matters.
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => differences(x, y, here, out, limit),
                    (x, y) => out.push(describe(&here, x, y)),
                }
                if out.len() >= limit {
                    return;
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, format!("{at}/{i}"), out, limit);
                if out.len() >= limit {
                    return;
                }
            }
        }
        _ if p == s => {}
        _ => out.push(describe(&at, Some(p), Some(s))),
    }
}

fn describe(at: &str, p: Option<&Value>, s: Option<&Value>) -> String {
    let show = |v: Option<&Value>| -> String {
        match v {
            None => "absent".into(),
            Some(v) => {
                let t = v.to_string();
                if t.chars().count() > 40 {
                    format!("{}…", t.chars().take(40).collect::<String>())
                } else {
                    t
                }
            }
        }
    };
    let at = if at.is_empty() { "/" } else { at };
    format!("{at}: {} vs {}", show(p), show(s))
}
