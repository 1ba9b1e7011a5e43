//! State shared by every filter of a harness, as Envoy shares it across a
//! worker: the virtual clock, stats, shared data and queues (scoped by
//! `vm_id`), simulated clusters, outstanding HTTP calls, logs and the trace.

use crate::model::{Cluster, LogEntry};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

pub use crate::log_level::LogLevel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counter or gauge value.
    pub value: i64,
    /// Histogram samples.
    pub samples: Vec<u64>,
}

/// What a filter dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Http,
    /// A unary gRPC call: `:path` is `/service/method`, the body its message.
    GrpcCall,
    /// A gRPC stream: the body is every message sent, one after another.
    GrpcStream,
}

/// An HTTP call (or gRPC call or stream) a filter dispatched.
#[derive(Debug, Clone, Serialize)]
pub struct HttpCall {
    pub token: u32,
    /// Index of the filter (VM) in the chain that made it.
    #[serde(skip)]
    pub vm: usize,
    #[serde(skip)]
    pub root_context: u32,
    pub cluster: String,
    /// As the cluster receives them: the filter's, plus what Envoy's async
    /// client adds (`x-envoy-internal`, `x-envoy-expected-rq-timeout-ms`;
    /// for gRPC `te`, `grpc-timeout`, `content-type`).
    #[serde(serialize_with = "crate::world::headers_as_text")]
    pub headers: crate::model::Headers,
    #[serde(serialize_with = "crate::world::bytes_as_text")]
    pub body: Vec<u8>,
    pub timeout_ms: u64,
    pub dispatched_at_ms: u64,
    pub answered: bool,
    pub kind: CallKind,
    /// When the caller finished sending (a gRPC stream is answered only then).
    pub client_done_at_ms: Option<u64>,
    /// A stream whose service replies at open: its initial metadata and
    /// messages have been delivered, its status waits for the caller.
    pub replied_at_open: bool,
    /// How the cluster answers this call (picked at dispatch, for `Cluster::first`).
    #[serde(skip)]
    pub(crate) answer: Option<Cluster>,
}

/// How a call ends for the filter, as Envoy's router sees it.
pub(crate) enum CallEnding<'a> {
    Refused,
    TimedOut,
    Reset,
    Answered(&'a Cluster),
}

impl HttpCall {
    /// Its timeout cuts a slower answer; a refusal comes at once.
    pub(crate) fn ending(&self) -> CallEnding<'_> {
        let Some(cluster) = self.answer.as_ref() else {
            return CallEnding::Refused;
        };
        if self.timeout_ms > 0 && cluster.answer_delay_ms() > self.timeout_ms {
            CallEnding::TimedOut
        } else if cluster.refused {
            CallEnding::Refused
        } else if cluster.reset {
            CallEnding::Reset
        } else {
            CallEnding::Answered(cluster)
        }
    }
}

/// The `status` of trace entries that are callbacks into the filter, not host calls.
pub const CALLBACK: u32 = u32::MAX;

/// One host call (or callback), for the trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEntry {
    pub at_ms: u64,
    pub vm: usize,
    pub context: u32,
    pub call: &'static str,
    pub status: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub vm_id: String,
    pub name: String,
    /// The VM and root context that registered it (notified on enqueue).
    pub owner: (usize, u32),
    pub items: VecDeque<Vec<u8>>,
}

#[derive(Default)]
pub struct World {
    /// Virtual time since the Unix epoch, in nanoseconds.
    pub now_ns: u64,
    /// Where the virtual clock started ([`ClockStart`]); scenario times count from here.
    pub start_ns: u64,
    pub logs: Vec<LogEntry>,
    pub metrics: Vec<Metric>,
    pub(crate) metric_by_name: HashMap<String, usize>,
    pub(crate) shared_data: HashMap<(String, String), (Vec<u8>, u32)>,
    pub(crate) queues: Vec<Queue>,
    /// Queue ids whose owners must be told (asynchronously, as Envoy posts it).
    pub(crate) queue_notifications: VecDeque<u32>,
    pub clusters: BTreeMap<String, Cluster>,
    /// Requests each cluster has answered (for `Cluster::first`).
    pub(crate) cluster_hits: HashMap<String, usize>,
    pub http_calls: Vec<HttpCall>,
    /// Every call before this index is answered (so long runs stay fast).
    pub(crate) first_open_call: usize,
    pub(crate) next_token: u32,
    /// Envoy numbers gRPC calls odd and gRPC streams even.
    pub(crate) next_grpc_call: u32,
    pub(crate) next_grpc_stream: u32,
    pub trace: Vec<TraceEntry>,
    pub trace_enabled: bool,
    /// Times a filter asked to re-pick the route (`clear_route_cache`).
    pub route_cache_clears: u64,
    /// `verify_signature` calls that checked a signature (valid or not).
    pub signatures_verified: u64,
    /// Foreign functions the test asked the harness to lack (as an older Envoy would).
    pub disabled_foreign: std::collections::HashSet<String>,
    pub(crate) random_state: u64,
    /// `node.metadata` and other static properties, by dotted path.
    pub properties: BTreeMap<String, Vec<u8>>,
}

/// 2026-01-01T00:00:00Z: virtual time starts at a fixed, realistic instant
/// unless told otherwise ([`ClockStart`]), so runs repeat exactly.
pub const EPOCH_START_NS: u64 = 1_767_225_600 * 1_000_000_000;

/// Where the virtual clock starts: the fixed default (deterministic), the
/// wall clock when the run begins (`now`: tokens a real identity provider
/// minted today are current), or an RFC 3339 instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockStart {
    #[default]
    Fixed,
    Now,
    /// Nanoseconds since the Unix epoch.
    At(u64),
}

impl ClockStart {
    /// The instant, in nanoseconds since the Unix epoch.
    pub fn unix_ns(self) -> u64 {
        match self {
            Self::Fixed => EPOCH_START_NS,
            Self::At(ns) => ns,
            Self::Now => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(EPOCH_START_NS, |d| d.as_nanos() as u64),
        }
    }
}

impl std::str::FromStr for ClockStart {
    type Err = String;

    /// `now`, `default` (2026-01-01T00:00:00Z) or an RFC 3339 instant such as
    /// `2026-12-01T09:30:00Z`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "now" => Ok(Self::Now),
            "default" => Ok(Self::Fixed),
            t => humantime::parse_rfc3339_weak(t)
                .ok()
                .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| Self::At(d.as_nanos() as u64))
                .ok_or_else(|| {
                    format!(
                        "clock start {t:?}: expected `now`, `default` or an RFC 3339 instant after 1970 such as 2026-12-01T09:30:00Z"
                    )
                }),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ClockStart {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl World {
    pub fn new() -> Self {
        Self {
            now_ns: EPOCH_START_NS,
            start_ns: EPOCH_START_NS,
            next_token: 1,
            next_grpc_call: 1,
            next_grpc_stream: 2,
            random_state: 0x853C_49E6_748F_EA9B,
            trace_enabled: true,
            ..Self::default()
        }
    }

    pub fn now_ms(&self) -> u64 {
        (self.now_ns - self.start_ns) / 1_000_000
    }

    /// Calls not answered yet.
    pub(crate) fn open_calls(&self) -> impl Iterator<Item = &HttpCall> {
        self.http_calls[self.first_open_call..]
            .iter()
            .filter(|c| !c.answered)
    }

    pub(crate) fn open_calls_mut(&mut self) -> impl Iterator<Item = &mut HttpCall> {
        self.http_calls[self.first_open_call..]
            .iter_mut()
            .filter(|c| !c.answered)
    }

    /// Moves the open-call watermark past answered calls.
    pub(crate) fn settle_calls(&mut self) {
        while self
            .http_calls
            .get(self.first_open_call)
            .is_some_and(|c| c.answered)
        {
            self.first_open_call += 1;
        }
    }

    /// How cluster `name` (configured as `cluster`) answers its next request.
    pub(crate) fn next_answer(&mut self, name: &str, cluster: &Cluster) -> Cluster {
        let hits = self.cluster_hits.entry(name.to_owned()).or_default();
        *hits += 1;
        cluster
            .first
            .get(*hits - 1)
            .cloned()
            .unwrap_or_else(|| cluster.clone())
    }

    /// Deterministic random bytes for WASI `random_get` (splitmix64).
    pub fn fill_random(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.random_state = self.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.random_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }

    /// Defines (or finds) a metric; ids carry the kind in the low two bits, as in Envoy.
    pub(crate) fn define_metric(&mut self, kind: MetricKind, name: &str) -> u32 {
        let index = match self.metric_by_name.get(name) {
            Some(&i) => i,
            None => {
                self.metrics.push(Metric {
                    name: name.to_owned(),
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
                self.metric_by_name
                    .insert(name.to_owned(), self.metrics.len() - 1);
                self.metrics.len() - 1
            }
        };
        ((index as u32) << 2) | kind as u32
    }

    pub(crate) fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let m = self.metrics.get_mut((id >> 2) as usize)?;
        (m.kind as u32 == (id & 3)).then_some(m)
    }

    /// Records a callback into a filter in the trace (status `u32::MAX` marks callbacks).
    pub(crate) fn trace_callback(&mut self, vm: usize, context: u32, call: &'static str) {
        if self.trace_enabled {
            let at_ms = self.now_ms();
            self.trace.push(TraceEntry {
                at_ms,
                vm,
                context,
                call,
                status: CALLBACK,
            });
        }
    }

    /// A metric's value by name (counter or gauge), as the tests read stats.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metric_by_name
            .get(name)
            .map(|&i| self.metrics[i].value)
    }
}

pub(crate) fn headers_as_text<S: serde::Serializer>(
    h: &crate::model::Headers,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(h.0.len()))?;
    for (k, v) in &h.0 {
        seq.serialize_element(&(k, String::from_utf8_lossy(v)))?;
    }
    seq.end()
}

#[allow(clippy::ref_option)] // serde's serialize_with passes `&Option<_>`
pub(crate) fn optional_headers_as_text<S: serde::Serializer>(
    h: &Option<crate::model::Headers>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => headers_as_text(h, s),
        None => s.serialize_none(),
    }
}

pub(crate) fn bytes_as_text<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}
