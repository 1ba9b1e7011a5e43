//! Requests, responses and simulated upstreams, as a test writes them.

use serde::{Deserialize, Serialize};

/// An ordered header map, as Envoy hands it to a filter: lower-case names,
/// pseudo-headers first, values as bytes (they need not be UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map the way Envoy's codec does: names lower-cased, `host`
    /// turned into `:authority`, pseudo-headers moved first.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut pseudo = Vec::new();
        let mut regular = Vec::new();
        for (k, v) in pairs {
            let mut name = k.as_ref().to_ascii_lowercase();
            if name == "host" {
                name = ":authority".into();
            }
            let entry = (name, v.as_ref().to_vec());
            if entry.0.starts_with(':') {
                pseudo.push(entry);
            } else {
                regular.push(entry);
            }
        }
        pseudo.extend(regular);
        Self(pseudo)
    }

    /// A trailer block: names lower-cased, nothing moved or renamed (no
    /// pseudo-headers, no `host`, in trailers).
    pub fn trailers<K: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().to_vec()))
                .collect(),
        )
    }

    /// The first value of `name` (Envoy's `get` returns the first of duplicates).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value as text (lossy), for assertions.
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Replaces every value of `name` (appends when absent).
    pub fn replace(&mut self, name: &str, value: &[u8]) {
        if let Some(i) = self.0.iter().position(|(k, _)| k == name) {
            self.0[i].1 = value.to_vec();
            let mut seen = false;
            self.0.retain(|(k, _)| {
                if k != name {
                    return true;
                }
                let keep = !seen;
                seen = true;
                keep
            });
        } else {
            self.add(name, value);
        }
    }

    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.0.push((name.to_owned(), value.to_vec()));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Proxy-Wasm's wire format for header maps: count, then (key, value)
    /// sizes, then each key and value NUL-terminated.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + self.0.len() * 8
                + self
                    .0
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 2)
                    .sum::<usize>(),
        );
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in &self.0 {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    /// Parses the wire format; `None` when it is malformed.
    pub fn deserialize(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| -> Option<usize> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
        };
        if bytes.is_empty() {
            return Some(Self::new());
        }
        let n = word(0)?;
        let mut sizes = Vec::with_capacity(n.min(1024));
        for i in 0..n {
            sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
        }
        let mut at = 4 + n * 8;
        let mut out = Vec::with_capacity(sizes.len());
        for (ks, vs) in sizes {
            let k = bytes.get(at..at + ks)?;
            at += ks + 1;
            let v = bytes.get(at..at + vs)?;
            at += vs + 1;
            out.push((String::from_utf8(k.to_vec()).ok()?, v.to_vec()));
        }
        Some(Self(out))
    }
}

/// The downstream connection a request arrives on: what `source.*`,
/// `destination.*` and `connection.*` properties report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Connection {
    /// The client's `ip:port`.
    pub source: String,
    /// The listener's `ip:port`.
    pub destination: String,
    /// `None`: plaintext.
    pub tls: Option<Tls>,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            source: "127.0.0.1:54321".into(),
            destination: "127.0.0.1:10000".into(),
            tls: None,
        }
    }
}

/// A TLS connection, and the client certificate if one was presented
/// (mutual TLS: `connection.mtls` is true when any `peer_*` is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub version: String,
    /// SNI (`connection.requested_server_name`).
    pub sni: String,
    /// E.g. an Istio workload's `spiffe://cluster.local/ns/default/sa/productpage`.
    pub peer_uri_san: Option<String>,
    pub peer_dns_san: Option<String>,
    pub peer_subject: Option<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            version: "TLSv1.3".into(),
            sni: String::new(),
            peer_uri_san: None,
            peer_dns_san: None,
            peer_subject: None,
        }
    }
}

impl Tls {
    pub fn mtls(&self) -> bool {
        self.peer_uri_san.is_some() || self.peer_dns_san.is_some() || self.peer_subject.is_some()
    }
}

/// A client request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub headers: Headers,
    pub body: Option<Vec<u8>>,
    pub trailers: Option<Headers>,
    /// Sizes of the chunks the body arrives in (empty: one chunk).
    pub chunk_sizes: Vec<usize>,
    pub connection: Connection,
    /// The client speaks HTTP/2: its last DATA frame (or its trailers) ends
    /// the stream, with no empty end-of-stream body callback as in HTTP/1.1.
    pub http2: bool,
}

impl Request {
    /// A GET with `:authority` `example.com` (override with `.header("host", …)`).
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn new(method: &str, path: &str) -> Self {
        Self {
            headers: Headers(vec![
                (":authority".into(), b"example.com".to_vec()),
                (":path".into(), path.as_bytes().to_vec()),
                (":method".into(), method.as_bytes().to_vec()),
                (":scheme".into(), b"http".to_vec()),
            ]),
            body: None,
            trailers: None,
            chunk_sizes: Vec::new(),
            connection: Connection::default(),
            http2: false,
        }
    }

    /// Sent over HTTP/2 (prior knowledge, as a gRPC client does).
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// The connection the request arrives on (plaintext from 127.0.0.1 by default).
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connection = connection;
        self
    }

    /// Adds a header as a client would send it (`Host` becomes `:authority`).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let name = name.to_ascii_lowercase();
        let name = if name == "host" {
            ":authority".to_owned()
        } else {
            name
        };
        if name.starts_with(':') {
            self.headers.replace(&name, value.as_ref());
        } else {
            self.headers.add(&name, value.as_ref());
        }
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// A body that arrives in these chunks, one body callback each (as
    /// Envoy calls a filter once per read from the client).
    pub fn body_chunks<C: AsRef<[u8]>>(mut self, chunks: impl IntoIterator<Item = C>) -> Self {
        let mut body = Vec::new();
        self.chunk_sizes.clear();
        for c in chunks {
            body.extend_from_slice(c.as_ref());
            self.chunk_sizes.push(c.as_ref().len());
        }
        self.body = Some(body);
        self
    }

    pub fn trailers(mut self, trailers: Headers) -> Self {
        self.trailers = Some(trailers);
        self
    }
}

/// A response, from an upstream or sent locally by a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Includes `:status`.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Option<Headers>,
    /// Sizes of the chunks an upstream sends the body in (empty: one chunk).
    pub chunk_sizes: Vec<usize>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Headers(vec![(":status".into(), status.to_string().into_bytes())]),
            body: Vec::new(),
            trailers: None,
            chunk_sizes: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.add(&name.to_ascii_lowercase(), value.as_ref());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How a simulated upstream answers: a response after `delay_ms`, or a reset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub delay_ms: u64,
    /// The body in chunks, sent apart (instead of `body`).
    #[serde(default)]
    pub chunks: Vec<String>,
    /// Trailers after the body. HTTP/1 carries them only in a chunked body,
    /// so the answer is chunked and declares them in a `trailer` header.
    #[serde(default)]
    pub trailers: Vec<(String, String)>,
    /// The connection is reset instead of answering.
    #[serde(default)]
    pub reset: bool,
    /// Nothing listens: every connection is refused (a whole cluster only;
    /// Envoy's router and HTTP calls then make up a 503).
    #[serde(default)]
    pub refused: bool,
    /// A gRPC service (HTTP/2): `body` is the reply message of a unary call,
    /// `grpc_status`/`grpc_message` its status (0: OK).
    #[serde(default)]
    pub grpc: bool,
    #[serde(default)]
    pub grpc_status: u32,
    #[serde(default)]
    pub grpc_message: String,
    /// A gRPC stream service that sends its initial metadata and messages
    /// (`chunks`) as soon as the stream opens (after `delay_ms`), and its
    /// status once the filter ends its side: a bidirectional stream.
    #[serde(default)]
    pub reply_at_open: bool,
    /// Answers for the first requests to this cluster, in order; later
    /// requests get the cluster's own answer (e.g. fail once, then succeed).
    #[serde(default)]
    pub first: Vec<Cluster>,
}

fn ok() -> u16 {
    200
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: String::new(),
            chunks: Vec::new(),
            trailers: Vec::new(),
            delay_ms: 0,
            reset: false,
            refused: false,
            grpc: false,
            grpc_status: 0,
            grpc_message: String::new(),
            reply_at_open: false,
            first: Vec::new(),
        }
    }
}

impl Cluster {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    pub fn reset() -> Self {
        Self {
            reset: true,
            ..Self::default()
        }
    }

    /// Nothing listens: connections are refused at once.
    pub fn refused() -> Self {
        Self {
            refused: true,
            ..Self::default()
        }
    }

    /// How long the answer takes (a refusal is immediate).
    pub fn answer_delay_ms(&self) -> u64 {
        if self.refused {
            0
        } else {
            self.delay_ms
        }
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.into();
        self
    }

    /// The body in chunks the upstream sends apart.
    pub fn chunks<S: Into<String>>(mut self, chunks: impl IntoIterator<Item = S>) -> Self {
        self.chunks = chunks.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a trailer after the body.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The `trailer` header an HTTP/1 server sends to declare its trailers.
    pub fn trailer_names(&self) -> Option<String> {
        let names: Vec<String> = self
            .trailers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        (!names.is_empty()).then(|| names.join(", "))
    }

    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first requests get `answers`, in order, before this cluster's own.
    pub fn first(mut self, answers: impl IntoIterator<Item = Cluster>) -> Self {
        self.first = answers.into_iter().collect();
        self
    }

    /// The response this cluster gives (`None` for a reset or a refusal).
    pub fn response(&self) -> Option<Response> {
        if self.reset || self.refused {
            return None;
        }
        let mut r = Response::new(self.status);
        for (k, v) in &self.headers {
            r.headers.add(&k.to_ascii_lowercase(), v.as_bytes());
        }
        if let Some(names) = self.trailer_names() {
            if !r.headers.contains("trailer") {
                r.headers.add("trailer", names.as_bytes());
            }
            r.trailers = Some(Headers::trailers(self.trailers.iter().map(|(k, v)| (k, v))));
        }
        // A real upstream frames its body: a length, or chunks (trailers too).
        if !self.chunks.is_empty() || r.trailers.is_some() {
            if self.chunks.is_empty() {
                r.body = self.body.as_bytes().to_vec();
            } else {
                r.body = self.chunks.concat().into_bytes();
                r.chunk_sizes = self.chunks.iter().map(String::len).collect();
            }
            if !r.headers.contains("transfer-encoding") {
                r.headers.add("transfer-encoding", b"chunked");
            }
            return Some(r);
        }
        // 204 and 304 carry no body and so no length.
        let bodiless = matches!(self.status, 100..=199 | 204 | 304);
        if !bodiless
            && !r.headers.contains("content-length")
            && !r.headers.contains("transfer-encoding")
        {
            r.headers
                .add("content-length", self.body.len().to_string().as_bytes());
        }
        r.body = self.body.as_bytes().to_vec();
        Some(r)
    }
}

/// One log line a filter wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    pub level: crate::world::LogLevel,
    pub message: String,
    /// Which filter of the chain wrote it.
    pub plugin: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trips() {
        let h = Headers::from_pairs([("Host", "a"), ("X-A", "1"), (":path", "/")]);
        assert_eq!(h.0[0].0, ":authority");
        assert_eq!(h.0[1].0, ":path");
        assert_eq!(h.0[2].0, "x-a");
        assert_eq!(Headers::deserialize(&h.serialize()), Some(h));
        assert_eq!(Headers::deserialize(&[1, 0, 0, 0]), None);
        assert_eq!(Headers::deserialize(&[]), Some(Headers::new()));
    }

    #[test]
    fn replace_keeps_one_value() {
        let mut h = Headers::from_pairs([("a", "1"), ("a", "2"), ("b", "3")]);
        h.replace("a", b"9");
        assert_eq!(
            h.0,
            vec![("a".into(), b"9".to_vec()), ("b".into(), b"3".to_vec())]
        );
        assert_eq!(h.get("a"), Some(&b"9"[..]));
    }
}
