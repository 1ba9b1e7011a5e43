//! The chain driver and the Rust API: filters in Envoy's order, streams
//! through them to simulated upstreams, events on a virtual clock. This
//! file holds the API's types and setters; loading filters, the stream
//! driver, calls and the clock each have their own module.

mod calls;
mod clock;
mod loading;
mod stream;

use crate::flow::{Flow, Stage};
use crate::grpc::{self, GrpcEvent};
use crate::model::{Cluster, Headers, LogEntry, Request, Response};
use crate::router;
use crate::vm::{
    check_module, engine, AbiVersion, CallResponse, Ctx, Host, PluginInfo, StreamMaps, Vm, VmSpec,
};
use crate::world::{CallEnding, CallKind, HttpCall, TraceEntry, World};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use wasmtime::{Engine, Linker, Module};

/// What Envoy does when a filter's VM has failed (trapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailurePolicy {
    /// Answer 503 (Envoy's default).
    #[default]
    FailClosed,
    /// Skip the filter.
    FailOpen,
}

/// One filter of the chain.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    pub wasm: PathBuf,
    pub configuration: Vec<u8>,
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_configuration: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub failure_policy: FailurePolicy,
    /// `Some(singleton)`: a bootstrap service (Envoy's `WasmService`), a root
    /// context that never sees a stream; `None`: an HTTP filter.
    pub service: Option<bool>,
}

impl FilterSpec {
    pub fn new(wasm: impl AsRef<Path>) -> Self {
        let wasm = wasm.as_ref().to_path_buf();
        let name = wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            root_id: name.clone(),
            vm_id: name.clone(),
            name,
            wasm,
            configuration: Vec::new(),
            vm_configuration: Vec::new(),
            env: Vec::new(),
            failure_policy: FailurePolicy::FailClosed,
            service: None,
        }
    }

    /// Makes this a bootstrap service instead of a filter: `singleton` one
    /// VM for the whole proxy (Envoy's main thread), else one per worker
    /// (which, as in Envoy, shares a VM with filters of the same vm_id, code
    /// and VM configuration). It shares data and queues with every plugin of
    /// its `vm_id`.
    pub fn service(mut self, singleton: bool) -> Self {
        self.service = Some(singleton);
        self
    }

    pub fn config(mut self, configuration: impl Into<Vec<u8>>) -> Self {
        self.configuration = configuration.into();
        self
    }

    pub fn root_id(mut self, root_id: &str) -> Self {
        self.root_id = root_id.into();
        self
    }

    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.into();
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn failure_policy(mut self, p: FailurePolicy) -> Self {
        self.failure_policy = p;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.vm_configuration = bytes.into();
        self
    }
}

/// Why a filter could not be loaded or configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HarnessError {
    /// The module could not be read, compiled, checked or instantiated.
    Load(String),
    /// `on_vm_start` or `on_configure` returned false (or trapped): Envoy rejects the plugin.
    Rejected(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(m) => write!(f, "cannot load filter: {m}"),
            Self::Rejected(m) => write!(f, "filter rejected its configuration: {m}"),
        }
    }
}

impl std::error::Error for HarnessError {}

pub type StreamId = u64;

/// What the upstream received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamRequest {
    pub cluster: String,
    #[serde(serialize_with = "crate::world::headers_as_text")]
    pub headers: Headers,
    #[serde(serialize_with = "crate::world::bytes_as_text")]
    pub body: Vec<u8>,
    #[serde(serialize_with = "crate::world::optional_headers_as_text")]
    pub trailers: Option<Headers>,
    /// Attempts the router made (1 + retries).
    pub attempts: u32,
    /// The router controls the filters left on the request (timeouts,
    /// retries), which Envoy's router consumed instead of forwarding.
    #[serde(serialize_with = "crate::world::headers_as_text")]
    pub router_headers: Headers,
}

/// Everything observed for one request.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub stream: StreamId,
    /// The request as the upstream received it; `None` if it never reached one.
    pub upstream: Option<UpstreamRequest>,
    /// What the client got; `None` if the stream was reset or never completed.
    pub response: Option<Response>,
    /// The filter (index in the chain) that answered locally, with its details.
    pub local_reply: Option<(usize, String)>,
    pub completed: bool,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub logs: Vec<LogEntry>,
    pub http_calls: Vec<HttpCall>,
    pub trace: Vec<TraceEntry>,
}

impl Exchange {
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// A header of the request as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.upstream.as_ref()?.headers.get_str(name)
    }

    /// A header of the response the client got.
    pub fn response_header(&self, name: &str) -> Option<String> {
        self.response.as_ref()?.headers.get_str(name)
    }

    pub fn reached_upstream(&self) -> bool {
        self.upstream.is_some()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(needle))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The request moves through the chain (`StreamRun::flow`).
    Request,
    /// Waiting for the upstream's answer at this virtual time.
    Upstream {
        at_ns: u64,
    },
    /// The response moves back through the chain (`StreamRun::flow`).
    Response,
    Done,
}

/// What a callback's answer means for the stream.
enum Step {
    Go,
    Pause,
    /// A local reply, a reset or a failed VM took the stream elsewhere.
    Stop,
}

/// The router's progress on one request (timeouts and retries).
struct RouterRun {
    policy: router::Policy,
    cluster_name: String,
    cluster: Cluster,
    retries: u32,
    global_at_ns: Option<u64>,
    attempt: Attempt,
}

enum Attempt {
    /// The next attempt starts at this time.
    Backoff { until_ns: u64 },
    Waiting {
        answer_at_ns: u64,
        per_try_at_ns: Option<u64>,
        /// `None`: the upstream resets, or refuses the connection.
        answer: Option<Response>,
        refused: bool,
    },
}

struct StreamRun {
    contexts: Vec<Option<u32>>,
    phase: Phase,
    /// The current direction's progress through the chain.
    flow: Flow,
    upstream: Option<UpstreamRequest>,
    router: Option<RouterRun>,
    pending_response: Option<Option<Response>>,
    response: Option<Response>,
    local_reply: Option<(usize, String)>,
    reset: bool,
    started_ns: u64,
    finished_ns: Option<u64>,
    marks: (usize, usize, usize),
}

struct Filter {
    spec: FilterSpec,
    /// Shared by every filter whose plugin runs in the same VM.
    vm: Rc<RefCell<Vm>>,
    root: u32,
    tick_period_ms: u64,
    tick_sets: u64,
    next_tick_ns: Option<u64>,
}

/// How long a stream may stay paused before `send` gives up on it (virtual).
const STREAM_WAIT_LIMIT_MS: u64 = 300_000;
const DEFAULT_FUEL: u64 = 2_000_000_000;
const DEFAULT_MEMORY_LIMIT: usize = 256 << 20;

/// A Proxy-Wasm host with a chain of filters.
pub struct Harness {
    engine: Engine,
    linker: Linker<Host>,
    modules: HashMap<PathBuf, (Module, AbiVersion)>,
    world: Rc<RefCell<World>>,
    streams: Rc<RefCell<HashMap<u64, StreamMaps>>>,
    filters: Vec<Filter>,
    upstream: Cluster,
    /// Route table: first `(header, value)` that the request carries picks the cluster.
    routes: Vec<(String, String, String)>,
    runs: BTreeMap<StreamId, StreamRun>,
    next_stream: StreamId,
    fuel: Option<u64>,
    memory_limit: usize,
    manual_calls: bool,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_fuel(Some(DEFAULT_FUEL))
    }

    /// `fuel`: instructions a single callback may run before it is stopped as
    /// runaway (`None`: unlimited, slightly faster).
    pub fn with_fuel(fuel: Option<u64>) -> Self {
        let engine = engine(fuel.is_some()).expect("wasmtime engine");
        let linker = crate::vm::linker(&engine).expect("register host functions");
        Self {
            engine,
            linker,
            modules: HashMap::new(),
            world: Rc::new(RefCell::new(World::new())),
            streams: Rc::new(RefCell::new(HashMap::new())),
            filters: Vec::new(),
            upstream: Cluster::default(),
            routes: Vec::new(),
            runs: BTreeMap::new(),
            next_stream: 1,
            fuel,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            manual_calls: false,
        }
    }

    /// Caps each VM's linear memory (bytes).
    pub fn memory_limit(&mut self, bytes: usize) -> &mut Self {
        self.memory_limit = bytes;
        self
    }

    /// Defines a simulated cluster for HTTP calls and routes.
    pub fn cluster(&mut self, name: &str, cluster: Cluster) -> &mut Self {
        let mut w = self.world.borrow_mut();
        w.cluster_hits.remove(name);
        w.clusters.insert(name.into(), cluster);
        drop(w);
        self
    }

    /// The route's default upstream answer.
    pub fn upstream(&mut self, cluster: Cluster) -> &mut Self {
        self.world.borrow_mut().cluster_hits.remove("upstream");
        self.upstream = cluster;
        self
    }

    /// Routes requests carrying `header: value` to `cluster` (first match wins).
    pub fn route(&mut self, header: &str, value: &str, cluster: &str) -> &mut Self {
        self.routes
            .push((header.to_ascii_lowercase(), value.into(), cluster.into()));
        self
    }

    /// Leaves HTTP calls unanswered until [`Harness::answer_call`].
    pub fn manual_http_calls(&mut self, manual: bool) -> &mut Self {
        self.manual_calls = manual;
        self
    }

    pub fn set_trace(&mut self, on: bool) -> &mut Self {
        self.world.borrow_mut().trace_enabled = on;
        self
    }

    /// Sets a static property, e.g. `node.metadata.REGION`.
    pub fn property(&mut self, path: &str, value: &[u8]) -> &mut Self {
        self.world
            .borrow_mut()
            .properties
            .insert(path.into(), value.to_vec());
        self
    }

    /// Makes the host lack a foreign function, as an older Envoy would
    /// (only `verify_signature` can be withdrawn).
    pub fn without_foreign_function(&mut self, name: &str) -> &mut Self {
        self.world.borrow_mut().disabled_foreign.insert(name.into());
        self
    }

    pub fn world(&self) -> std::cell::Ref<'_, World> {
        self.world.borrow()
    }

    /// A stat by name (`wasmcustom.` prefix optional, as Envoy adds it).
    pub fn metric(&self, name: &str) -> Option<i64> {
        let w = self.world.borrow();
        w.metric(name)
            .or_else(|| w.metric(name.strip_prefix("wasmcustom.")?))
    }

    pub fn metrics(&self) -> BTreeMap<String, i64> {
        self.world
            .borrow()
            .metrics
            .iter()
            // As Envoy's stats values: histograms are reported apart.
            .filter(|m| m.kind != crate::world::MetricKind::Histogram)
            .map(|m| (m.name.clone(), m.value))
            .collect()
    }

    pub fn logs(&self) -> Vec<LogEntry> {
        self.world.borrow().logs.clone()
    }

    /// How many VMs run the chain (plugins with the same `vm_id` and module share one).
    pub fn vm_count(&self) -> usize {
        let mut seen: Vec<*const RefCell<Vm>> =
            self.filters.iter().map(|f| Rc::as_ptr(&f.vm)).collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }

    /// The ABI version each filter speaks.
    pub fn abi_version(&self, filter: usize) -> Option<AbiVersion> {
        self.filters.get(filter).map(|f| f.vm.borrow().abi)
    }

    /// Why a filter's VM is dead, if it is.
    pub fn failure(&self, filter: usize) -> Option<String> {
        self.filters.get(filter)?.vm.borrow().failed.clone()
    }

    /// Bytes of linear memory each VM holds now (for leak checks).
    pub fn memory_sizes(&mut self) -> Vec<usize> {
        self.filters
            .iter_mut()
            .map(|f| {
                let vm = f.vm.borrow();
                vm.store
                    .data()
                    .memory
                    .map(|m| m.data_size(&vm.store))
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
