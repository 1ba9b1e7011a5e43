//! Scenario files: a chain, simulated clusters and requests with
//! expectations, in YAML or JSON. The same file runs in the harness and
//! (for `--envoy` and `diff`) in real Envoy, so results are kept as an
//! [`Observation`]: only what a client, an upstream and the stats can see.

use crate::harness::{FailurePolicy, FilterSpec, Harness, HarnessError};
use crate::model::{Cluster, Headers, Request};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub filters: Vec<FilterEntry>,
    /// Bootstrap services (Envoy's `bootstrap_extensions` `WasmService`),
    /// started before the filters; they share data and queues by `vm_id`.
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    #[serde(default)]
    pub clusters: BTreeMap<String, Cluster>,
    /// Header-based routes to clusters (first match wins), like Envoy's route table.
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    /// The route's default answer.
    #[serde(default)]
    pub upstream: Cluster,
    pub requests: Vec<RequestEntry>,
    /// Where the harness's virtual clock starts: `now`, or an RFC 3339
    /// instant (default 2026-01-01T00:00:00Z). A `--envoy` run keeps Envoy's
    /// wall clock, so tokens valid in both are minted for `now`.
    #[serde(default)]
    pub clock_start: crate::world::ClockStart,
    /// Where relative `wasm` paths are resolved (the scenario file's folder).
    #[serde(skip)]
    pub base: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterEntry {
    pub wasm: PathBuf,
    /// A string is passed as is; anything else as JSON.
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub root_id: Option<String>,
    #[serde(default)]
    pub vm_id: Option<String>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// A bootstrap service: a module's root context with no HTTP streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub wasm: PathBuf,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub root_id: Option<String>,
    #[serde(default)]
    pub vm_id: Option<String>,
    /// One for the whole proxy (Envoy's main thread; default), else one per worker.
    #[serde(default = "yes")]
    pub singleton: bool,
}

fn yes() -> bool {
    true
}

impl ServiceEntry {
    /// The same plugin as a [`FilterEntry`] (for paths and configuration).
    pub fn as_plugin(&self) -> FilterEntry {
        FilterEntry {
            wasm: self.wasm.clone(),
            config: self.config.clone(),
            name: self.name.clone(),
            root_id: self.root_id.clone(),
            vm_id: self.vm_id.clone(),
            failure_policy: FailurePolicy::FailOpen,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub header: String,
    pub value: String,
    pub cluster: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEntry {
    #[serde(default)]
    pub name: String,
    /// Virtual time to send it at (ms since the scenario started).
    #[serde(default)]
    pub at_ms: Option<u64>,
    #[serde(default)]
    pub headers: Pairs,
    #[serde(default)]
    pub body: Option<String>,
    /// The body in chunks the client sends apart (instead of `body`).
    #[serde(default)]
    pub body_chunks: Option<Vec<String>>,
    /// Trailers after the body (the body is then sent chunked, as HTTP/1 needs).
    #[serde(default)]
    pub trailers: Option<Pairs>,
    /// Sent over HTTP/2 (prior knowledge) instead of HTTP/1.1.
    #[serde(default)]
    pub http2: bool,
    /// The connection it arrives on (harness only: Envoy's is the real socket).
    #[serde(default)]
    pub connection: Option<crate::model::Connection>,
    /// This request's upstream answer instead of `upstream`.
    #[serde(default)]
    pub upstream: Option<Cluster>,
    #[serde(default)]
    pub expect: Expect,
}

/// Header pairs in file order (a map, or a list of `[name, value]`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pairs(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of header names to values, or a list of [name, value]")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = s.next_element::<(String, String)>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// What a request must produce; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub upstream_reached: Option<bool>,
    /// A value of null means "absent".
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Option<String>>,
    /// The body as the upstream received it (exact, or `{contains: …}`).
    pub upstream_body: Option<BodyExpect>,
    /// Trailers as the upstream received them (null: absent).
    #[serde(default)]
    pub upstream_trailers: BTreeMap<String, Option<String>>,
    pub upstream_cluster: Option<String>,
    /// Attempts the router made (1 + retries).
    pub upstream_attempts: Option<u32>,
    pub status: Option<u16>,
    #[serde(default)]
    pub response_headers: BTreeMap<String, Option<String>>,
    pub body: Option<BodyExpect>,
    /// Trailers as the client received them (null: absent).
    #[serde(default)]
    pub response_trailers: BTreeMap<String, Option<String>>,
    /// Each must appear in some log line of the request.
    #[serde(default)]
    pub logs: Vec<String>,
    /// Each must appear in some line the services logged between the previous request's start and this one's.
    #[serde(default)]
    pub service_logs: Vec<String>,
    /// Stat values after the request (`wasmcustom.` prefix optional).
    #[serde(default)]
    pub metrics: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BodyExpect {
    Exact(String),
    Contains { contains: String },
}

impl BodyExpect {
    /// What is wrong with `got`, if anything.
    fn mismatch(&self, what: &str, got: &str) -> Option<String> {
        match self {
            Self::Exact(want) if want != got => {
                Some(format!("{what}: expected {want:?}, got {got:?}"))
            }
            Self::Contains { contains } if !got.contains(contains.as_str()) => Some(format!(
                "{what}: expected to contain {contains:?}, got {got:?}"
            )),
            _ => None,
        }
    }
}

/// What was observed for one request, in the harness or in Envoy.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Observation {
    pub name: String,
    pub status: Option<u16>,
    pub upstream_reached: bool,
    pub upstream_cluster: Option<String>,
    pub upstream_headers: Vec<(String, String)>,
    pub upstream_body: String,
    pub upstream_trailers: Vec<(String, String)>,
    pub upstream_attempts: u32,
    /// The filters' HTTP and gRPC calls as their clusters received them
    /// (cluster, headers); refused ones never arrive.
    pub calls: Vec<(String, Vec<(String, String)>)>,
    pub response_headers: Vec<(String, String)>,
    pub body: String,
    pub response_trailers: Vec<(String, String)>,
    /// The filters' log lines while the request ran.
    pub logs: Vec<String>,
    /// The services' log lines from the previous request's start to this
    /// one's (from the end of start-up, for the first).
    pub service_logs: Vec<String>,
    pub metrics: BTreeMap<String, i64>,
    pub duration_ms: u64,
}

impl Observation {
    fn header<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
        list.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every expectation that does not hold, as "what: expected …, got …".
    pub fn check(&self, e: &Expect) -> Vec<String> {
        let mut fails = Vec::new();
        if let Some(want) = e.upstream_reached {
            if want != self.upstream_reached {
                fails.push(format!(
                    "upstream_reached: expected {want}, got {}",
                    self.upstream_reached
                ));
            }
        }
        if let Some(want) = e.upstream_attempts {
            if want != self.upstream_attempts {
                fails.push(format!(
                    "upstream_attempts: expected {want}, got {}",
                    self.upstream_attempts
                ));
            }
        }
        if let Some(want) = &e.upstream_cluster {
            if self.upstream_cluster.as_ref() != Some(want) {
                fails.push(format!(
                    "upstream_cluster: expected {want:?}, got {:?}",
                    self.upstream_cluster
                ));
            }
        }
        let mut fields = |what: &str, want: &BTreeMap<String, Option<String>>, got| {
            for (name, want) in want {
                let got = Self::header(got, &name.to_ascii_lowercase());
                if got != want.as_deref() {
                    fails.push(format!("{what}.{name}: expected {want:?}, got {got:?}"));
                }
            }
        };
        fields(
            "upstream_headers",
            &e.upstream_headers,
            &self.upstream_headers,
        );
        fields(
            "upstream_trailers",
            &e.upstream_trailers,
            &self.upstream_trailers,
        );
        fields(
            "response_headers",
            &e.response_headers,
            &self.response_headers,
        );
        fields(
            "response_trailers",
            &e.response_trailers,
            &self.response_trailers,
        );
        if let Some(want) = e.status {
            if self.status != Some(want) {
                fails.push(format!("status: expected {want}, got {:?}", self.status));
            }
        }
        fails.extend(
            e.upstream_body
                .as_ref()
                .and_then(|b| b.mismatch("upstream_body", &self.upstream_body)),
        );
        fails.extend(e.body.as_ref().and_then(|b| b.mismatch("body", &self.body)));
        for want in &e.logs {
            if !self.logs.iter().any(|l| l.contains(want.as_str())) {
                fails.push(format!(
                    "logs: expected a line containing {want:?}, got {:?}",
                    self.logs
                ));
            }
        }
        for want in &e.service_logs {
            if !self.service_logs.iter().any(|l| l.contains(want.as_str())) {
                fails.push(format!(
                    "service_logs: expected a line containing {want:?}, got {:?}",
                    self.service_logs
                ));
            }
        }
        for (name, want) in &e.metrics {
            let got = self.metrics.get(name).or_else(|| {
                self.metrics
                    .get(name.strip_prefix("wasmcustom.").unwrap_or(name))
            });
            if got != Some(want) {
                fails.push(format!("metrics.{name}: expected {want}, got {got:?}"));
            }
        }
        fails
    }
}

impl Scenario {
    /// Reads a YAML or JSON scenario.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut s: Scenario =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        s.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for r in &s.requests {
            if r.body.is_some() && r.body_chunks.is_some() {
                return Err(format!(
                    "{}: request {:?}: give `body` or `body_chunks`, not both",
                    path.display(),
                    r.name
                ));
            }
        }
        let upstreams = s
            .requests
            .iter()
            .filter_map(|r| r.upstream.as_ref())
            .chain(s.clusters.values())
            .chain([&s.upstream]);
        for c in upstreams.flat_map(|c| std::iter::once(c).chain(&c.first)) {
            if !c.body.is_empty() && !c.chunks.is_empty() {
                return Err(format!(
                    "{}: an upstream answer gives both `body` and `chunks`",
                    path.display()
                ));
            }
        }
        Ok(s)
    }

    /// The plugin names of the services (as Envoy's log names them).
    pub fn service_names(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| {
                let f = s.as_plugin();
                f.name.clone().unwrap_or_else(|| {
                    self.wasm_path(&f)
                        .file_stem()
                        .map(|x| x.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
            })
            .collect()
    }

    /// Replaces the chain with one filter (`--filter`/`--config`).
    pub fn with_single_filter(&mut self, wasm: PathBuf, config: Value) {
        self.filters = vec![FilterEntry {
            wasm,
            config,
            name: None,
            root_id: None,
            vm_id: None,
            failure_policy: FailurePolicy::FailClosed,
        }];
    }

    pub fn wasm_path(&self, f: &FilterEntry) -> PathBuf {
        if f.wasm.is_absolute() {
            f.wasm.clone()
        } else {
            self.base.join(&f.wasm)
        }
    }

    pub fn config_bytes(f: &FilterEntry) -> Vec<u8> {
        match &f.config {
            Value::Null => Vec::new(),
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        }
    }

    /// The request as a client sends it (defaults: GET /, authority example.com).
    pub fn request(entry: &RequestEntry) -> Request {
        let mut headers = Headers::from_pairs(
            entry
                .headers
                .0
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        for (k, v) in [
            (":method", "GET"),
            (":path", "/"),
            (":authority", "example.com"),
            (":scheme", "http"),
        ] {
            if !headers.contains(k) {
                headers.0.insert(0, (k.into(), v.as_bytes().to_vec()));
            }
        }
        let pseudo: Vec<_> = headers
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(':'))
            .cloned()
            .collect();
        let rest: Vec<_> = headers
            .0
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .cloned()
            .collect();
        let request = Request {
            headers: Headers(pseudo.into_iter().chain(rest).collect()),
            body: entry.body.clone().map(String::into_bytes),
            trailers: entry
                .trailers
                .as_ref()
                .map(|t| Headers::trailers(t.0.iter().map(|(k, v)| (k, v)))),
            connection: entry.connection.clone().unwrap_or_default(),
            http2: entry.http2,
            ..Request::default()
        };
        match &entry.body_chunks {
            Some(chunks) => request.body_chunks(chunks),
            None => request,
        }
    }

    /// The harness's spec of a scenario plugin (a filter, or a service's as a filter).
    fn plugin_spec(&self, f: &FilterEntry) -> FilterSpec {
        let mut spec = FilterSpec::new(self.wasm_path(f)).config(Self::config_bytes(f));
        if let Some(n) = &f.name {
            spec = spec.name(n);
        }
        if let Some(r) = &f.root_id {
            spec = spec.root_id(r);
        }
        if let Some(v) = &f.vm_id {
            spec = spec.vm_id(v);
        }
        spec
    }

    /// Builds the harness for this scenario.
    pub fn harness(&self) -> Result<Harness, HarnessError> {
        let mut h = Harness::new();
        h.start_clock(self.clock_start)?;
        for (name, c) in &self.clusters {
            h.cluster(name, c.clone());
        }
        for r in &self.routes {
            h.route(&r.header, &r.value, &r.cluster);
        }
        h.upstream(self.upstream.clone());
        for svc in &self.services {
            h.add_service(self.plugin_spec(&svc.as_plugin()).service(svc.singleton))?;
        }
        for f in &self.filters {
            h.add_filter(self.plugin_spec(f).failure_policy(f.failure_policy))?;
        }
        Ok(h)
    }

    /// Runs every request in the harness, in order, each at its `at_ms`.
    pub fn run_in_harness(&self) -> Result<Vec<Observation>, HarnessError> {
        let mut h = self.harness()?;
        let mut out = Vec::with_capacity(self.requests.len());
        // As under `--envoy`: services' lines from one request's start to the next's.
        let services = self.service_names();
        let mut service_mark = h.world().logs.len();
        for entry in &self.requests {
            if let Some(at) = entry.at_ms {
                let now = h.now_ms();
                if at > now {
                    h.advance(at - now);
                }
            }
            h.upstream(
                entry
                    .upstream
                    .clone()
                    .unwrap_or_else(|| self.upstream.clone()),
            );
            let service_logs: Vec<String> = {
                let w = h.world();
                let lines = w.logs[service_mark..]
                    .iter()
                    .filter(|l| services.contains(&l.plugin))
                    .map(|l| l.message.clone())
                    .collect();
                service_mark = w.logs.len();
                lines
            };
            let ex = h.send(Self::request(entry));
            let text = |hs: &Headers| {
                hs.0.iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect::<Vec<_>>()
            };
            out.push(Observation {
                name: entry.name.clone(),
                status: ex.status(),
                upstream_reached: ex.reached_upstream(),
                upstream_cluster: ex.upstream.as_ref().map(|u| u.cluster.clone()),
                upstream_attempts: ex.upstream.as_ref().map_or(0, |u| u.attempts),
                upstream_headers: ex
                    .upstream
                    .as_ref()
                    .map(|u| text(&u.headers))
                    .unwrap_or_default(),
                calls: ex
                    .http_calls
                    .iter()
                    .filter(|c| c.answer.as_ref().is_some_and(|a| !a.refused))
                    .map(|c| (c.cluster.clone(), text(&c.headers)))
                    .collect(),
                upstream_body: ex
                    .upstream
                    .as_ref()
                    .map(|u| String::from_utf8_lossy(&u.body).into_owned())
                    .unwrap_or_default(),
                upstream_trailers: ex
                    .upstream
                    .as_ref()
                    .and_then(|u| u.trailers.as_ref())
                    .map(text)
                    .unwrap_or_default(),
                response_headers: ex
                    .response
                    .as_ref()
                    .map(|r| text(&r.headers))
                    .unwrap_or_default(),
                body: ex
                    .response
                    .as_ref()
                    .map(|r| r.body_str())
                    .unwrap_or_default(),
                response_trailers: ex
                    .response
                    .as_ref()
                    .and_then(|r| r.trailers.as_ref())
                    .map(text)
                    .unwrap_or_default(),
                logs: ex
                    .logs
                    .iter()
                    .filter(|l| !services.contains(&l.plugin))
                    .map(|l| l.message.clone())
                    .collect(),
                service_logs,
                metrics: h.metrics(),
                duration_ms: ex.duration_ms,
            });
        }
        Ok(out)
    }
}
