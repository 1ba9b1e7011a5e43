//! A request as JavaScript hands it over, and its header map as the Envoy
//! filter would see it: pseudo-headers first, names lower-cased, a header
//! given as a list kept as repeated values, cookies folded into `cookie`.

use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use switchyard_core::{HeaderList, RequestHeaders};

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
        crate::from_json_under(text, "").map_err(|e| crate::Error::request(e.field, e.message))
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
/// `cookie` comes already folded.
///
/// The map borrows from the text: a hot path that allocated every name and
/// value spent a quarter of its time in the allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatHeaders<'a>(pub Vec<(Cow<'a, str>, Cow<'a, [u8]>)>);

/// Reads the compact form; names are lower-cased (a copy only when a name
/// has capitals).
pub fn headers_from_flat(flat: &str) -> Result<FlatHeaders<'_>, crate::Error> {
    let mut parts = flat.split('\0');
    let mut list = FlatHeaders(Vec::with_capacity(8));
    for pseudo in [":method", ":path", ":authority", ":scheme"] {
        let v = parts
            .next()
            .ok_or_else(|| crate::Error::request(pseudo, "missing from the compact request"))?;
        list.0
            .push((Cow::Borrowed(pseudo), Cow::Borrowed(v.as_bytes())));
    }
    while let Some(name) = parts.next() {
        if name.is_empty() || name.starts_with(':') {
            return Err(crate::Error::request(
                format!("headers.{name}"),
                "not a header name",
            ));
        }
        let lower = match name.bytes().any(|b| b.is_ascii_uppercase()) {
            true => Cow::Owned(name.to_ascii_lowercase()),
            false => Cow::Borrowed(name),
        };
        let value = parts
            .next()
            .ok_or_else(|| crate::Error::request(format!("headers.{name}"), "no value"))?;
        list.0.push((lower, Cow::Borrowed(value.as_bytes())));
    }
    Ok(list)
}

impl RequestHeaders for FlatHeaders<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| &**v)
    }

    fn each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for (_, v) in self.0.iter().filter(|(k, _)| k == name) {
            f(v);
        }
    }
}

/// A header map a host hands the engine to edit before its policies read
/// it: the path check writes the normalised `:path`, auth strips the
/// identity headers a client may not send.
pub trait EditHeaders: RequestHeaders {
    /// Sets `name` to `value`: the first occurrence replaced, the others removed.
    fn set(&mut self, name: &str, value: Vec<u8>);
    /// Removes every occurrence of `name`.
    fn remove(&mut self, name: &str);
}

impl EditHeaders for HeaderList {
    fn set(&mut self, name: &str, value: Vec<u8>) {
        if let Err(value) = replace_first(&mut self.0, name, value) {
            self.0.push((name.to_owned(), value));
        }
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }
}

impl EditHeaders for FlatHeaders<'_> {
    fn set(&mut self, name: &str, value: Vec<u8>) {
        if let Err(value) = replace_first(&mut self.0, name, Cow::Owned(value)) {
            self.0.push((Cow::Owned(name.to_owned()), value));
        }
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }
}

/// Gives the first `name` `value` and drops the later ones (as
/// `set_http_request_header`); `Err(value)` back when `name` is absent.
fn replace_first<K: AsRef<str>, V>(pairs: &mut Vec<(K, V)>, name: &str, value: V) -> Result<(), V> {
    let Some(first) = pairs.iter().position(|(k, _)| k.as_ref() == name) else {
        return Err(value);
    };
    pairs[first].1 = value;
    let mut at = 0;
    pairs.retain(|(k, _)| {
        let keep = at <= first || k.as_ref() != name;
        at += 1;
        keep
    });
    Ok(())
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
        let flat: Vec<(String, Vec<u8>)> = flat
            .0
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(flat, json.0);
        assert!(headers_from_flat("GET\0/").is_err());
        assert!(headers_from_flat("GET\0/\0h\0http\0name").is_err());
        assert!(headers_from_flat("GET\0/\0h\0http\0:path\0/x").is_err());
    }

    #[test]
    fn both_maps_edit_alike() {
        let text = ["GET", "/a", "h", "http", "x", "1", "y", "2", "x", "3"].join("\0");
        let mut flat = headers_from_flat(&text).unwrap();
        let mut list = HeaderList(
            flat.0
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        );
        for (name, value) in [("x", "9"), (":path", "/b"), ("z", "new")] {
            flat.set(name, value.into());
            list.set(name, value.into());
        }
        flat.remove("y");
        list.remove("y");
        let flat: Vec<(String, Vec<u8>)> = flat
            .0
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(flat, list.0);
        let names: Vec<&str> = list.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [":method", ":path", ":authority", ":scheme", "x", "z"]
        );
        assert_eq!(list.header("x"), Some(&b"9"[..]));
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
