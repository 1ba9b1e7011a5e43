//! The external-auth provider: the request described to an authorization
//! service, and its answer turned into an outcome.

use super::*;

/// The answer of an external auth service.
#[derive(Debug, Clone)]
pub enum ExtAuthAnswer {
    /// A response: status and the headers the filter may use.
    Response {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// No usable response: timeout, reset, unknown cluster.
    Failed,
}

/// A reply passed back from the auth service (its 401 or 403).
#[derive(Debug, Clone)]
pub struct PassBack {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Auth {
    /// The request to send to ext-auth provider `p`: headers as (name, value).
    pub fn ext_auth_request(
        &self,
        p: usize,
        req: &(impl RequestHeaders + ?Sized),
    ) -> Vec<(String, Vec<u8>)> {
        let Some(e) = self.ext_auth(p) else {
            return Vec::new();
        };
        let mut out = vec![
            (":method".to_owned(), b"GET".to_vec()),
            (":path".to_owned(), e.path.as_bytes().to_vec()),
            (":authority".to_owned(), e.authority.as_bytes().to_vec()),
        ];
        for (name, from) in [
            ("x-forwarded-method", ":method"),
            ("x-forwarded-uri", ":path"),
            ("x-forwarded-host", ":authority"),
        ] {
            if let Some(v) = req.header(from) {
                out.push((name.to_owned(), v.to_vec()));
            }
        }
        for h in &e.forward_headers {
            if let Some(v) = req.header(h) {
                out.push((h.clone(), v.to_vec()));
            }
        }
        out
    }

    pub(super) fn ext_auth_outcome(
        &self,
        p: usize,
        e: &ExtAuthConfig,
        answer: ExtAuthAnswer,
    ) -> Outcome {
        let ExtAuthAnswer::Response {
            status,
            headers,
            body,
        } = answer
        else {
            return Outcome::Unavailable(Reason::ExtAuthUnavailable);
        };
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        match status {
            200..=299 => {
                let id_header = e
                    .identity_header
                    .as_deref()
                    .or(self.identity.as_ref().map(|i| i.header.as_str()));
                let name = id_header
                    .and_then(get)
                    .filter(|v| claims::is_header_value(v));
                let mut identity = self.identity_for_name(p, name.map(Vec::as_slice));
                identity.headers = e
                    .copy_response_headers
                    .iter()
                    .filter_map(|h| Some((h.clone(), get(h)?.clone())))
                    .filter(|(_, v)| claims::is_header_value(v))
                    .collect();
                Outcome::Accepted(identity)
            }
            401 | 403 => Outcome::PassedBack(PassBack {
                status,
                headers: ["www-authenticate", "content-type"]
                    .into_iter()
                    .filter_map(|h| Some((h.to_owned(), get(h)?.clone())))
                    .collect(),
                body,
            }),
            _ => Outcome::Unavailable(Reason::ExtAuthUnavailable),
        }
    }
}

pub(super) fn compile_ext_auth(
    e: &ExtAuthConfig,
    field: &str,
) -> Result<ExtAuthConfig, ConfigError> {
    let f = |k: &str| format!("{field}.{k}");
    non_empty(&e.cluster, f("cluster"))?;
    non_empty(&e.authority, f("authority"))?;
    path_value(&e.path, f("path"))?;
    if e.timeout_ms == 0 {
        return Err(ConfigError::new(f("timeout_ms"), "must be positive"));
    }
    let headers = |list: &[String], key: &str| -> Result<Vec<String>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, h)| header_name(h, format!("{field}.{key}[{i}]")))
            .collect()
    };
    Ok(ExtAuthConfig {
        forward_headers: headers(&e.forward_headers, "forward_headers")?,
        copy_response_headers: headers(&e.copy_response_headers, "copy_response_headers")?,
        identity_header: match &e.identity_header {
            Some(h) => Some(header_name(h, f("identity_header"))?),
            None => None,
        },
        ..e.clone()
    })
}
