//! A request as JavaScript hands it over, and its header map as the Envoy
//! filter would see it: pseudo-headers first, names lower-cased, a header
//! given as a list kept as repeated values, cookies folded into `cookie`.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use switchyard_core::HeaderList;

/// `{method, path, authority, scheme, headers, cookies, claims}`; every key
/// but `path` may be left out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Added to the `cookie` header, after any the headers carry.
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
    /// Claims the host verified itself (`decide` only; `authorize` sets them
    /// from the credential it verifies).
    #[serde(default)]
    pub claims: Option<Value>,
}

/// One value, or a list for a header sent more than once.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    One(String),
    Many(Vec<String>),
}

// By hand rather than `#[serde(untagged)]`, whose buffering of every value
// cost the package about 20 kB of wasm.
impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HeaderValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, or a list of strings for a repeated header")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HeaderValue, E> {
                Ok(HeaderValue::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HeaderValue, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(HeaderValue::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn default_method() -> String {
    "GET".into()
}

fn default_path() -> String {
    "/".into()
}

fn default_authority() -> String {
    "localhost".into()
}

fn default_scheme() -> String {
    "http".into()
}

impl Request {
    /// Parses a request, naming the field a bad one got wrong.
    pub fn from_json(text: &str) -> Result<Self, crate::Error> {
        let de = &mut serde_json::Deserializer::from_slice(text.as_bytes());
        serde_path_to_error::deserialize(de)
            .map_err(|e| crate::Error::request(e.path().to_string(), e.inner().to_string()))
    }

    /// The header map the filter's policies read.
    pub fn headers(&self) -> Result<HeaderList, crate::Error> {
        let mut list = HeaderList(vec![
            (":method".into(), self.method.clone().into_bytes()),
            (":path".into(), self.path.clone().into_bytes()),
            (":authority".into(), self.authority.clone().into_bytes()),
            (":scheme".into(), self.scheme.clone().into_bytes()),
        ]);
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() || lower.starts_with(':') {
                return Err(crate::Error::request(
                    format!("headers.{name}"),
                    "not a header name; give :method, :path and :authority as method, path and authority",
                ));
            }
            match value {
                HeaderValue::One(v) => list.0.push((lower, v.clone().into_bytes())),
                HeaderValue::Many(vs) => {
                    for v in vs {
                        list.0.push((lower.clone(), v.clone().into_bytes()));
                    }
                }
            }
        }
        if !self.cookies.is_empty() {
            let folded = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            match list.0.iter_mut().find(|(k, _)| k == "cookie") {
                Some((_, existing)) => {
                    existing.extend_from_slice(b"; ");
                    existing.extend_from_slice(folded.as_bytes());
                }
                None => list.0.push(("cookie".into(), folded.into_bytes())),
            }
        }
        Ok(list)
    }
}

/// The compact form `route` takes on its fast path: method, path,
/// authority, scheme, then name, value, … all joined by NUL (which no
/// header may carry; the JavaScript side sends anything else as JSON).
/// Names are lower-cased here; `cookie` comes already folded.
pub fn headers_from_flat(flat: &str) -> Result<HeaderList, crate::Error> {
    let mut parts = flat.split('\0');
    let mut list = HeaderList(Vec::with_capacity(8));
    for pseudo in [":method", ":path", ":authority", ":scheme"] {
        let v = parts
            .next()
            .ok_or_else(|| crate::Error::request(pseudo, "missing from the compact request"))?;
        list.0.push((pseudo.to_owned(), v.as_bytes().to_vec()));
    }
    while let Some(name) = parts.next() {
        let lower = name.to_ascii_lowercase();
        if lower.is_empty() || lower.starts_with(':') {
            return Err(crate::Error::request(
                format!("headers.{name}"),
                "not a header name",
            ));
        }
        let value = parts
            .next()
            .ok_or_else(|| crate::Error::request(format!("headers.{name}"), "no value"))?;
        list.0.push((lower, value.as_bytes().to_vec()));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::RequestHeaders;

    #[test]
    fn pseudo_headers_repeats_and_cookies_fold_into_one_map() {
        let r = Request::from_json(
            r#"{"path": "/a", "headers": {"End-User": "jason", "x-api-key": ["a", "b"],
                "cookie": "x=1"}, "cookies": {"user": "u1"}}"#,
        )
        .unwrap();
        let h = r.headers().unwrap();
        assert_eq!(h.header(":method"), Some(&b"GET"[..]));
        assert_eq!(h.header(":path"), Some(&b"/a"[..]));
        assert_eq!(h.header("end-user"), Some(&b"jason"[..]));
        let mut keys = Vec::new();
        h.each_value("x-api-key", &mut |v| keys.push(v.to_vec()));
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(h.header("cookie"), Some(&b"x=1; user=u1"[..]));
    }

    #[test]
    fn the_compact_form_builds_the_same_map_as_json() {
        let json = Request::from_json(
            r#"{"method": "POST", "path": "/a", "headers": {"End-User": "jason", "x-k": ["1", "2"]}}"#,
        )
        .unwrap()
        .headers()
        .unwrap();
        let flat = [
            "POST",
            "/a",
            "localhost",
            "http",
            "End-User",
            "jason",
            "x-k",
            "1",
            "x-k",
            "2",
        ]
        .join("\0");
        let flat = headers_from_flat(&flat).unwrap();
        assert_eq!(flat, json);
        assert!(headers_from_flat("GET\0/").is_err());
        assert!(headers_from_flat("GET\0/\0h\0http\0name").is_err());
        assert!(headers_from_flat("GET\0/\0h\0http\0:path\0/x").is_err());
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e = Request::from_json(r#"{"headers": {"a": 1}}"#).unwrap_err();
        assert_eq!(e.field, "headers.a", "{e:?}");
        let e = Request::from_json(r#"{"pathh": "/"}"#).unwrap_err();
        assert!(e.message.contains("pathh"), "{e:?}");
        let e = Request::from_json(r#"{"headers": {":path": "/x"}}"#)
            .unwrap()
            .headers()
            .unwrap_err();
        assert_eq!(e.field, "headers.:path");
        assert!(Request::from_json("[").is_err());
    }
}
