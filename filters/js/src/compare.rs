//! `diffResponses`: the comparison the shadow filter makes in `compare`
//! mode, on two responses a JavaScript host captured.

use crate::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_core::shadow::compare::Captured;
use switchyard_core::shadow::Shadow;

/// Body differences listed at most (the filter logs the first).
const MAX_DIFFERENCES: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Text; a JSON body may be given as the value itself.
    #[serde(default)]
    pub body: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// Nothing compared differs.
    #[serde(rename = "match")]
    pub matches: bool,
    /// `[primary, shadow]` when the statuses differ.
    pub status: Option<(u16, u16)>,
    /// Headers whose values differ or that only one side has.
    pub headers: Vec<String>,
    /// Every body difference (up to 100): `"/items/0/id: 1 vs 2"`, or `bytes`.
    pub body: Vec<String>,
    /// A body was over `max_body_bytes`, so bodies were not compared.
    pub body_skipped: bool,
    /// The filter's one-line log summary.
    pub summary: String,
}

fn captured(r: Response, limit: usize) -> Captured {
    let body = match r.body {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.into_bytes(),
        Some(v) => v.to_string().into_bytes(),
    };
    let truncated = body.len() > limit;
    let mut c = Captured {
        status: r.status,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_bytes()))
            .collect(),
        body: Vec::new(),
        truncated: false,
    };
    c.push_body(&body, limit);
    c.truncated |= truncated;
    c
}

/// `options` is the shadow configuration's `compare` block
/// (`ignore_headers`, `ignore_json_paths`, `max_body_bytes`), checked as the
/// filter checks it.
pub fn diff(primary: &str, shadow: &str, options: &str) -> Result<Diff, Error> {
    let parse = |text: &str, what: &str| -> Result<Response, Error> {
        crate::from_json_under(text, what).map_err(|e| Error::request(e.field, e.message))
    };
    let (p, s) = (parse(primary, "primary")?, parse(shadow, "shadow")?);
    let compare: Value = serde_json::from_slice(options.as_bytes())
        .map_err(|e| Error::options("options", e.to_string()))?;
    let config = serde_json::json!({ "rules": [], "compare": compare });
    let policy = Shadow::from_json(config.to_string().as_bytes())
        .map_err(|e| Error::options(e.field, e.message))?;
    let limit = policy.compare.max_body_bytes;
    let (p, s) = (captured(p, limit), captured(s, limit));
    let d = policy.compare(&p, &s);
    Ok(Diff {
        matches: d.is_match(),
        status: d.status,
        headers: d.headers.clone(),
        body: policy.body_differences(&p, &s, MAX_DIFFERENCES),
        body_skipped: d.body_skipped,
        summary: d.summary(),
    })
}
