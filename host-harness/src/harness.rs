//! The chain driver and the Rust API: filters in Envoy's order, streams
//! through them to simulated upstreams, events on a virtual clock.

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

    /// Loads a filter at the end of the chain: instantiate, `on_vm_start`, `on_configure`.
    pub fn add_filter(&mut self, spec: FilterSpec) -> Result<&mut Self, HarnessError> {
        let (module, abi) = match self.modules.get(&spec.wasm) {
            Some(m) => m.clone(),
            None => {
                let bytes = std::fs::read(&spec.wasm)
                    .map_err(|e| HarnessError::Load(format!("{}: {e}", spec.wasm.display())))?;
                let module = Module::new(&self.engine, &bytes)
                    .map_err(|e| HarnessError::Load(format!("{}: {e:#}", spec.wasm.display())))?;
                let abi = check_module(&module, &self.linker, &self.engine)
                    .map_err(|e| HarnessError::Load(format!("{}: {e:#}", spec.wasm.display())))?;
                self.modules
                    .insert(spec.wasm.clone(), (module.clone(), abi));
                (module, abi)
            }
        };
        let index = self.filters.len();
        // Envoy runs plugins with the same vm_id, code and VM configuration in one VM.
        let shared = self
            .filters
            .iter()
            .find(|f| {
                f.spec.wasm == spec.wasm
                    && f.spec.vm_id == spec.vm_id
                    && f.spec.vm_configuration == spec.vm_configuration
                    // A singleton service runs on Envoy's main thread, apart
                    // from every worker's VM.
                    && f.spec.service != Some(true)
                    && spec.service != Some(true)
            })
            .map(|f| f.vm.clone());
        let vm = match shared {
            Some(vm) => vm,
            None => {
                let vm_spec = VmSpec {
                    module: &module,
                    linker: &self.linker,
                    plugin_name: spec.name.clone(),
                    root_id: spec.root_id.clone(),
                    vm_id: spec.vm_id.clone(),
                    configuration: spec.configuration.clone(),
                    vm_configuration: spec.vm_configuration.clone(),
                    env: spec.env.clone(),
                    memory_limit: self.memory_limit,
                    fuel: self.fuel,
                };
                let vm = Vm::instantiate(
                    &self.engine,
                    vm_spec,
                    abi,
                    self.world.clone(),
                    self.streams.clone(),
                    index,
                )
                .map_err(|e| HarnessError::Load(format!("{}: {e:#}", spec.wasm.display())))?;
                Rc::new(RefCell::new(vm))
            }
        };
        let handle = vm.clone();
        let mut vm = vm.borrow_mut();
        let root = vm.new_context(Ctx::Root, None);
        vm.add_plugin(
            root,
            PluginInfo {
                name: spec.name.clone(),
                root_id: spec.root_id.clone(),
                configuration: spec.configuration.clone(),
                tick_period_ms: 0,
                tick_sets: 0,
            },
        );
        if vm.store.data().root_context == 0 {
            vm.store.data_mut().root_context = root;
        }
        let (vm_size, cfg_size) = (
            spec.vm_configuration.len() as i32,
            spec.configuration.len() as i32,
        );
        let ex = vm.exports.clone();
        let fuel = self.fuel;
        let started = vm.call(root, fuel, |s| {
            if let Some(f) = &ex.on_context_create {
                f.call(&mut *s, (root as i32, 0))?;
            }
            let ok = match &ex.on_vm_start {
                Some(f) => f.call(&mut *s, (root as i32, vm_size))? != 0,
                None => true,
            };
            Ok(ok)
        });
        match started {
            Ok(true) => {}
            Ok(false) => {
                return Err(HarnessError::Rejected(format!(
                    "{}: on_vm_start returned false",
                    spec.name
                )))
            }
            Err(e) => {
                return Err(HarnessError::Rejected(format!(
                    "{}: on_vm_start: {e}",
                    spec.name
                )))
            }
        }
        let configured = vm.call(root, fuel, |s| match &ex.on_configure {
            Some(f) => Ok(f.call(&mut *s, (root as i32, cfg_size))? != 0),
            None => Ok(true),
        });
        match configured {
            Ok(true) => {}
            Ok(false) => {
                let why = self
                    .world
                    .borrow()
                    .logs
                    .iter()
                    .rev()
                    .find(|l| l.plugin == spec.name && l.level >= crate::world::LogLevel::Warn)
                    .map(|l| l.message.clone());
                return Err(HarnessError::Rejected(format!(
                    "{}: on_configure returned false{}",
                    spec.name,
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                )));
            }
            Err(e) => {
                return Err(HarnessError::Rejected(format!(
                    "{}: on_configure: {e}",
                    spec.name
                )))
            }
        }
        drop(vm);
        self.filters.push(Filter {
            spec,
            vm: handle,
            root,
            tick_period_ms: 0,
            tick_sets: 0,
            next_tick_ns: None,
        });
        self.after_callback();
        Ok(self)
    }

    /// Loads a bootstrap service (`spec` with [`FilterSpec::service`], or a
    /// singleton if not set): VM start, configure, then only its root
    /// callbacks (ticks, queues, HTTP call answers); no stream reaches it.
    pub fn add_service(&mut self, spec: FilterSpec) -> Result<&mut Self, HarnessError> {
        let singleton = spec.service.unwrap_or(true);
        self.add_filter(spec.service(singleton))
    }

    /// Adds a filter with a JSON/text configuration; shorthand for tests.
    pub fn filter(
        &mut self,
        wasm: impl AsRef<Path>,
        config: &str,
    ) -> Result<&mut Self, HarnessError> {
        self.add_filter(FilterSpec::new(wasm).config(config.as_bytes().to_vec()))
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

    /// Virtual milliseconds since the clock started.
    pub fn now_ms(&self) -> u64 {
        self.world.borrow().now_ms()
    }

    /// Starts the virtual clock at `start` instead of 2026-01-01T00:00:00Z
    /// (e.g. [`ClockStart::Now`] for tokens minted today by a real identity
    /// provider). Only before the first filter is added: a filter may read
    /// the time as it starts, and time never runs backwards.
    pub fn start_clock(&mut self, start: crate::world::ClockStart) -> Result<(), HarnessError> {
        if !self.filters.is_empty() || !self.runs.is_empty() {
            return Err(HarnessError::Load(
                "the clock start must be set before any filter is added".into(),
            ));
        }
        let mut w = self.world.borrow_mut();
        w.start_ns = start.unix_ns();
        w.now_ns = w.start_ns;
        Ok(())
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

    /// Sends a request and runs the clock until it completes (or stays stuck
    /// for five virtual minutes).
    pub fn send(&mut self, request: Request) -> Exchange {
        let id = self.start(request);
        let limit = self.world.borrow().now_ns + STREAM_WAIT_LIMIT_MS * 1_000_000;
        while !self.is_done(id) {
            match self.next_event_time() {
                Some(t) if t <= limit => self.run_until(t),
                _ => break,
            }
        }
        // Posted events (queue notifications) run once this stream's work returns.
        self.deliver_queue_notifications();
        let exchange = self.exchange(id).expect("stream exists");
        // A sent request is over for the caller: keep nothing of it.
        self.runs.remove(&id);
        exchange
    }

    /// Forgets a finished stream started with [`Harness::start`].
    pub fn forget(&mut self, id: StreamId) {
        if self.is_done(id) {
            self.runs.remove(&id);
        }
    }

    /// The client goes away mid-request: the stream ends at once (no
    /// response), its filters get `on_log`/`on_done`/`on_delete`, and its
    /// pending HTTP calls are cancelled, as Envoy does on a downstream reset.
    pub fn abort(&mut self, id: StreamId) {
        if self.is_done(id) {
            return;
        }
        if let Some(run) = self.runs.get_mut(&id) {
            run.reset = true;
        }
        self.finish(id);
        self.after_callback();
    }

    /// Starts a stream without waiting for it (for interleaved streams).
    pub fn start(&mut self, request: Request) -> StreamId {
        self.deliver_queue_notifications();
        let id = self.next_stream;
        self.next_stream += 1;
        let now = self.world.borrow().now_ns;
        let mut headers = envoy_order(&request.headers);
        // What Envoy's connection manager does before any filter runs: a
        // client (external by default since Envoy 1.3x) cannot steer the router.
        for name in router::INTERNAL_ONLY_HEADERS {
            headers.remove(name);
        }
        if !headers.contains("x-forwarded-proto") {
            headers.add("x-forwarded-proto", b"http");
        }
        if !headers.contains("x-request-id") {
            let mut r = [0u8; 16];
            self.world.borrow_mut().fill_random(&mut r);
            headers.add("x-request-id", uuid(&r).as_bytes());
        }
        self.streams.borrow_mut().insert(
            id,
            StreamMaps {
                request_headers: Some(headers),
                request_trailers: request.trailers.clone(),
                started_at_ns: now,
                connection: request.connection.clone(),
                connection_id: id,
                http2: request.http2,
                ..StreamMaps::default()
            },
        );
        let marks = {
            let w = self.world.borrow();
            (w.logs.len(), w.http_calls.len(), w.trace.len())
        };
        let mut contexts = Vec::with_capacity(self.filters.len());
        for f in &mut self.filters {
            if f.spec.service.is_some() || f.vm.borrow_mut().failed.is_some() {
                contexts.push(None);
                continue;
            }
            let ctx = f.vm.borrow_mut().new_context(Ctx::Stream(id), Some(f.root));
            let (root, ex) = (f.root, f.vm.borrow_mut().exports.clone());
            let created = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
                if let Some(cc) = &ex.on_context_create {
                    cc.call(&mut *s, (ctx as i32, root as i32))?;
                }
                Ok(())
            });
            contexts.push(created.ok().map(|()| ctx));
        }
        self.runs.insert(
            id,
            StreamRun {
                contexts,
                phase: Phase::Request,
                flow: Flow::new(
                    (0..self.filters.len()).collect(),
                    Flow::arrivals(
                        request.body.as_deref().unwrap_or_default(),
                        &request.chunk_sizes,
                        !request.http2 && request.trailers.is_none(),
                    ),
                    request.trailers.is_some(),
                ),
                upstream: None,
                router: None,
                pending_response: None,
                response: None,
                local_reply: None,
                reset: false,
                started_ns: now,
                finished_ns: None,
                marks,
            },
        );
        self.drive(id);
        // A stream's callbacks may have set the root's tick period.
        self.after_callback();
        id
    }

    pub fn is_done(&self, id: StreamId) -> bool {
        self.runs.get(&id).is_none_or(|r| r.phase == Phase::Done)
    }

    /// What has been observed for a stream so far.
    pub fn exchange(&self, id: StreamId) -> Option<Exchange> {
        let run = self.runs.get(&id)?;
        let w = self.world.borrow();
        let end = run.finished_ns.unwrap_or(w.now_ns);
        Some(Exchange {
            stream: id,
            upstream: run.upstream.clone(),
            response: run.response.clone(),
            local_reply: run.local_reply.clone(),
            completed: run.phase == Phase::Done,
            started_ms: (run.started_ns - w.start_ns) / 1_000_000,
            duration_ms: (end - run.started_ns) / 1_000_000,
            logs: w.logs[run.marks.0..].to_vec(),
            http_calls: w.http_calls[run.marks.1..].to_vec(),
            trace: w.trace[run.marks.2..].to_vec(),
        })
    }

    /// HTTP calls not answered yet.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.world.borrow().open_calls().cloned().collect()
    }

    /// Answers an HTTP call now (`None`: it fails outright, zero headers;
    /// Envoy answers timeouts, resets and refusals itself, see `call_answer`).
    pub fn answer_call(&mut self, token: u32, response: Option<Response>) {
        self.deliver_call(token, response);
        self.after_callback();
    }

    /// Advances the virtual clock, running every timer, call and upstream due.
    pub fn advance(&mut self, ms: u64) {
        let target = self.world.borrow().now_ns + ms * 1_000_000;
        self.run_until(target);
    }

    fn run_until(&mut self, target_ns: u64) {
        loop {
            self.deliver_queue_notifications();
            match self.next_event_time() {
                Some(t) if t <= target_ns => {
                    let mut w = self.world.borrow_mut();
                    w.now_ns = t.max(w.now_ns);
                    drop(w);
                    self.fire_due();
                }
                _ => break,
            }
        }
        let mut w = self.world.borrow_mut();
        w.now_ns = w.now_ns.max(target_ns);
    }

    fn next_event_time(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        for f in &self.filters {
            if let (Some(t), None) = (f.next_tick_ns, f.vm.borrow().failed.as_ref()) {
                consider(t);
            }
        }
        for run in self.runs.values() {
            if let Phase::Upstream { at_ns } = run.phase {
                consider(at_ns);
            }
        }
        if !self.manual_calls {
            let w = self.world.borrow();
            for c in w.open_calls() {
                if let Some(t) = call_due_ns(&w, c) {
                    consider(t);
                }
            }
        }
        next
    }

    fn fire_due(&mut self) {
        let now = self.world.borrow().now_ns;
        // Upstream answers.
        let due: Vec<StreamId> = self
            .runs
            .iter()
            .filter(|(_, r)| matches!(r.phase, Phase::Upstream { at_ns } if at_ns <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.upstream_due(id);
        }
        // HTTP calls.
        if !self.manual_calls {
            let due: Vec<(u32, Due)> = {
                let w = self.world.borrow();
                w.open_calls()
                    .filter(|c| call_due_ns(&w, c).is_some_and(|t| t <= now))
                    .map(|c| {
                        let answer = match c.kind {
                            CallKind::Http => Due::Http(call_answer(c)),
                            _ if grpc::replies_at_open(c) => Due::Opening(
                                c.answer
                                    .as_ref()
                                    .map(|a| grpc::opening(a, c.client_done_at_ms.is_some()))
                                    .unwrap_or_default(),
                            ),
                            _ => Due::Grpc(grpc::exchange(c)),
                        };
                        (c.token, answer)
                    })
                    .collect()
            };
            for (token, answer) in due {
                match answer {
                    Due::Http(response) => self.deliver_call(token, Some(response)),
                    Due::Grpc(events) => self.deliver_grpc(token, events, true),
                    Due::Opening(events) => self.deliver_grpc(token, events, false),
                }
            }
        }
        // Ticks.
        for i in 0..self.filters.len() {
            let f = &mut self.filters[i];
            if f.next_tick_ns.is_some_and(|t| t <= now) && f.vm.borrow_mut().failed.is_none() {
                f.next_tick_ns = Some(now + f.tick_period_ms * 1_000_000);
                let (root, ex) = (f.root, f.vm.borrow_mut().exports.clone());
                self.world.borrow_mut().trace_callback(i, root, "on_tick");
                let _ = f.vm.borrow_mut().call(root, self.fuel, |s| {
                    if let Some(t) = &ex.on_tick {
                        t.call(&mut *s, root as i32)?;
                    }
                    Ok(())
                });
            }
        }
        self.after_callback();
    }

    /// Marks an open call of this kind answered and hands it over.
    fn take_call(&self, token: u32, grpc: bool) -> Option<HttpCall> {
        let mut w = self.world.borrow_mut();
        let c = w
            .open_calls_mut()
            .find(|c| c.token == token && (c.kind != CallKind::Http) == grpc)?;
        c.answered = true;
        let c = c.clone();
        w.settle_calls();
        Some(c)
    }

    fn deliver_call(&mut self, token: u32, response: Option<Response>) {
        let Some(call) = self.take_call(token, false) else {
            return;
        };
        let Some(f) = self.filters.get_mut(call.vm) else {
            return;
        };
        let ex = f.vm.borrow_mut().exports.clone();
        let (nh, nb, nt, cr) = match response {
            Some(r) => (
                r.headers.len() as i32,
                r.body.len() as i32,
                r.trailers.as_ref().map_or(0, |t| t.len()) as i32,
                CallResponse {
                    headers: r.headers,
                    body: r.body,
                    trailers: r.trailers.unwrap_or_default(),
                },
            ),
            // A call that fails outright reaches the filter as zero headers.
            None => (0, 0, 0, CallResponse::default()),
        };
        f.vm.borrow_mut().store.data_mut().call_response = Some(cr);
        let ctx = call.root_context;
        self.world
            .borrow_mut()
            .trace_callback(call.vm, ctx, "on_http_call_response");
        let _ = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
            if let Some(cb) = &ex.on_http_call_response {
                cb.call(&mut *s, (ctx as i32, token as i32, nh, nb, nt))?;
            }
            Ok(())
        });
        f.vm.borrow_mut().store.data_mut().call_response = None;
    }

    /// A gRPC call or stream ends: its callbacks in order, each with what
    /// it may read (message, metadata, `proxy_get_status`).
    /// Runs gRPC callbacks on the root that made the call; `ends`: the
    /// call is over after them, else the stream stays open.
    fn deliver_grpc(&mut self, token: u32, events: Vec<GrpcEvent>, ends: bool) {
        let call = if ends {
            self.take_call(token, true)
        } else {
            self.world
                .borrow_mut()
                .open_calls_mut()
                .find(|c| c.token == token && c.kind == CallKind::GrpcStream)
                .map(|c| {
                    c.replied_at_open = true;
                    c.clone()
                })
        };
        let Some(call) = call else {
            return;
        };
        let Some(f) = self.filters.get_mut(call.vm) else {
            return;
        };
        let ex = f.vm.borrow_mut().exports.clone();
        let ctx = call.root_context;
        for event in events {
            let (name, n, cb) = match &event {
                GrpcEvent::InitialMetadata(m) => (
                    "on_grpc_receive_initial_metadata",
                    m.len() as i32,
                    &ex.on_grpc_receive_initial_metadata,
                ),
                GrpcEvent::Message(m) => ("on_grpc_receive", m.len() as i32, &ex.on_grpc_receive),
                GrpcEvent::TrailingMetadata(m) => (
                    "on_grpc_receive_trailing_metadata",
                    m.len() as i32,
                    &ex.on_grpc_receive_trailing_metadata,
                ),
                GrpcEvent::Close { status, .. } => {
                    ("on_grpc_close", *status as i32, &ex.on_grpc_close)
                }
            };
            f.vm.borrow_mut().store.data_mut().grpc_event = Some(event);
            self.world.borrow_mut().trace_callback(call.vm, ctx, name);
            let _ = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
                if let Some(cb) = cb {
                    cb.call(&mut *s, (ctx as i32, token as i32, n))?;
                }
                Ok(())
            });
            f.vm.borrow_mut().store.data_mut().grpc_event = None;
        }
    }

    /// Ends a unary gRPC call now (for `manual_http_calls`): a reply, or a
    /// status and its detail.
    pub fn answer_grpc_call(&mut self, token: u32, answer: Result<Vec<u8>, (u32, String)>) {
        let event = match answer {
            Ok(m) => GrpcEvent::Message(m),
            Err((status, detail)) => GrpcEvent::Close { status, detail },
        };
        self.deliver_grpc(token, vec![event], true);
        self.after_callback();
    }

    /// Ends a gRPC stream now (for `manual_http_calls`) with these callbacks.
    pub fn answer_grpc_stream(&mut self, token: u32, events: Vec<GrpcEvent>) {
        self.deliver_grpc(token, events, true);
        self.after_callback();
    }

    /// Runs these callbacks on an open gRPC stream and keeps it open (for
    /// `manual_http_calls`): a service that replies while the filter is
    /// still sending. End it with `answer_grpc_stream`.
    pub fn reply_on_grpc_stream(&mut self, token: u32, events: Vec<GrpcEvent>) {
        self.deliver_grpc(token, events, false);
        self.after_callback();
    }

    fn deliver_queue_notifications(&mut self) {
        loop {
            let Some(qid) = self.world.borrow_mut().queue_notifications.pop_front() else {
                break;
            };
            let owner = self
                .world
                .borrow()
                .queues
                .get(qid as usize - 1)
                .map(|q| q.owner);
            let Some((vm, root)) = owner else { continue };
            let Some(f) = self.filters.get_mut(vm) else {
                continue;
            };
            let ex = f.vm.borrow_mut().exports.clone();
            self.world
                .borrow_mut()
                .trace_callback(vm, root, "on_queue_ready");
            let _ = f.vm.borrow_mut().call(root, self.fuel, |s| {
                if let Some(cb) = &ex.on_queue_ready {
                    cb.call(&mut *s, (root as i32, qid as i32))?;
                }
                Ok(())
            });
            self.after_callback();
        }
    }

    /// After any callback: pick up tick-period changes, continues, local replies.
    fn after_callback(&mut self) {
        let now = self.world.borrow().now_ns;
        for f in &mut self.filters {
            // Every set re-arms the timer, even with the same period (Envoy).
            let (period, sets) = f.vm.borrow().tick_period_of(f.root);
            if sets != f.tick_sets {
                f.tick_sets = sets;
                f.tick_period_ms = period;
                f.next_tick_ns = (period > 0).then(|| now + period * 1_000_000);
            }
        }
        let ids: Vec<StreamId> = self
            .runs
            .iter()
            .filter(|(_, r)| r.phase != Phase::Done)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let (cont_req, cont_resp, local, reset) = {
                let mut streams = self.streams.borrow_mut();
                let Some(s) = streams.get_mut(&id) else {
                    continue;
                };
                (
                    std::mem::take(&mut s.continue_request),
                    std::mem::take(&mut s.continue_response),
                    s.local_response.take(),
                    std::mem::take(&mut s.reset),
                )
            };
            let run = self.runs.get_mut(&id).expect("run");
            if reset {
                run.reset = true;
                self.finish(id);
                continue;
            }
            if let Some((response, details)) = local {
                let from = run.flow.paused.map_or(0, |(p, _)| run.flow.order[p]);
                self.local_reply(id, from, response, details);
                continue;
            }
            let resume = match run.phase {
                Phase::Request => cont_req,
                Phase::Response => cont_resp,
                _ => false,
            };
            if resume && run.flow.paused.is_some() {
                self.resume(id);
            }
        }
    }

    /// Runs a stream's callbacks until it pauses, waits for the upstream or
    /// ends: headers filter by filter, then what waited at a filter that let
    /// them pass, then the client's (or upstream's) body and trailers.
    fn drive(&mut self, id: StreamId) {
        loop {
            let Some(run) = self.runs.get(&id) else {
                return;
            };
            if !matches!(run.phase, Phase::Request | Phase::Response) {
                return;
            }
            let f = &run.flow;
            if f.paused.is_some() || f.headers_next >= f.len() {
                break;
            }
            let (p, end_of_stream) = (f.headers_next, f.headers_end_stream);
            match self.run_callback(id, p, Stage::Headers, 0, end_of_stream) {
                Step::Go => self.headers_passed(id, p),
                Step::Pause => {
                    self.flow_mut(id).paused = Some((p, Stage::Headers));
                    // Filters before this one still see the body.
                    break;
                }
                Step::Stop => return,
            }
        }
        if !self.release_held(id) {
            return;
        }
        while let Some(chunk) = self.flow_mut(id).source.pop_front() {
            let f = self.flow_mut(id);
            let end_of_stream = f.source.is_empty() && !f.source_trailers;
            if !self.deliver(id, 0, chunk, end_of_stream) {
                return;
            }
        }
        if std::mem::take(&mut self.flow_mut(id).source_trailers) && !self.deliver_trailers(id, 0) {
            return;
        }
        let run = &self.runs[&id];
        if run.flow.complete {
            match run.phase {
                Phase::Request => self.send_upstream(id),
                Phase::Response => self.finish(id),
                _ => {}
            }
        }
    }

    fn flow_mut(&mut self, id: StreamId) -> &mut Flow {
        &mut self.runs.get_mut(&id).expect("run").flow
    }

    fn headers_passed(&mut self, id: StreamId, p: usize) {
        let f = self.flow_mut(id);
        f.headers_next = p + 1;
        if f.headers_next >= f.len() && f.headers_end_stream {
            f.complete = true;
        }
    }

    /// Delivers what waited at filters that have now let the headers pass;
    /// false when the stream stopped.
    fn release_held(&mut self, id: StreamId) -> bool {
        let mut p = 0;
        loop {
            let Some(run) = self.runs.get_mut(&id) else {
                return false;
            };
            let f = &mut run.flow;
            if p >= f.gate() {
                return true;
            }
            if !f.held[p].is_empty() {
                let held = std::mem::take(&mut f.held[p]);
                let end_of_stream = held.end_of_stream;
                if (!held.data.is_empty() || end_of_stream)
                    && !self.deliver(id, p, held.data, end_of_stream)
                {
                    return false;
                }
                if held.trailers && !self.deliver_trailers(id, p) {
                    return false;
                }
            }
            p += 1;
        }
    }

    /// A chunk reaches position `p` and goes as far as the filters let it;
    /// false when the stream stopped.
    fn deliver(
        &mut self,
        id: StreamId,
        mut p: usize,
        mut data: Vec<u8>,
        end_of_stream: bool,
    ) -> bool {
        loop {
            let Some(run) = self.runs.get_mut(&id) else {
                return false;
            };
            let request = run.phase == Phase::Request;
            let f = &mut run.flow;
            if p >= f.len() {
                f.out.extend_from_slice(&data);
                f.complete |= end_of_stream;
                return true;
            }
            if p >= f.gate() {
                let held = &mut f.held[p];
                held.data.extend_from_slice(&data);
                held.end_of_stream |= end_of_stream;
                return true;
            }
            let mut buffer = std::mem::take(&mut f.buffered[p]);
            buffer.extend_from_slice(&data);
            let size = buffer.len();
            self.set_body(id, request, buffer);
            let step = self.run_callback(id, p, Stage::Body, size, end_of_stream);
            // The callback may have rewritten the buffer.
            let buffer = self.take_body(id, request);
            match step {
                Step::Stop => return false,
                Step::Pause => {
                    let f = self.flow_mut(id);
                    f.buffered[p] = buffer;
                    if end_of_stream {
                        f.paused = Some((p, Stage::Body));
                    }
                    return true;
                }
                Step::Go => {
                    data = buffer;
                    p += 1;
                }
            }
        }
    }

    /// Trailers reach position `p`; a filter that lets them pass first
    /// passes on what it buffered. False when the stream stopped.
    fn deliver_trailers(&mut self, id: StreamId, mut p: usize) -> bool {
        loop {
            let Some(run) = self.runs.get_mut(&id) else {
                return false;
            };
            let f = &mut run.flow;
            if p >= f.len() {
                f.complete = true;
                return true;
            }
            if p >= f.gate() {
                f.held[p].trailers = true;
                return true;
            }
            match self.run_callback(id, p, Stage::Trailers, 0, false) {
                Step::Stop => return false,
                Step::Pause => {
                    self.flow_mut(id).paused = Some((p, Stage::Trailers));
                    return true;
                }
                Step::Go => {
                    let buffered = std::mem::take(&mut self.flow_mut(id).buffered[p]);
                    if !buffered.is_empty() && !self.deliver(id, p + 1, buffered, false) {
                        return false;
                    }
                    p += 1;
                }
            }
        }
    }

    /// A filter that paused the stream continues it.
    fn resume(&mut self, id: StreamId) {
        let Some((p, stage)) = self.flow_mut(id).paused.take() else {
            return;
        };
        match stage {
            Stage::Headers => self.headers_passed(id, p),
            Stage::Body => {
                let buffered = std::mem::take(&mut self.flow_mut(id).buffered[p]);
                if !self.deliver(id, p + 1, buffered, true) {
                    return;
                }
            }
            Stage::Trailers => {
                let buffered = std::mem::take(&mut self.flow_mut(id).buffered[p]);
                if !buffered.is_empty() && !self.deliver(id, p + 1, buffered, false) {
                    return;
                }
                if !self.deliver_trailers(id, p + 1) {
                    return;
                }
            }
        }
        self.drive(id);
    }

    fn set_body(&mut self, id: StreamId, request: bool, body: Vec<u8>) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&id) {
            *if request {
                &mut s.request_body
            } else {
                &mut s.response_body
            } = body;
        }
    }

    fn take_body(&mut self, id: StreamId, request: bool) -> Vec<u8> {
        self.streams
            .borrow_mut()
            .get_mut(&id)
            .map(|s| {
                std::mem::take(if request {
                    &mut s.request_body
                } else {
                    &mut s.response_body
                })
            })
            .unwrap_or_default()
    }

    /// Runs the callback of the filter at position `p` of the stream's
    /// current direction and says what it means for the stream.
    fn run_callback(
        &mut self,
        id: StreamId,
        p: usize,
        stage: Stage,
        body_size: usize,
        end_of_stream: bool,
    ) -> Step {
        let run = &self.runs[&id];
        let (filter, request) = (run.flow.order[p], run.phase == Phase::Request);
        let action = self.callback(id, filter, request, stage, body_size, end_of_stream);
        self.handle_action(id, filter, action)
    }

    /// Handles a callback's outcome.
    fn handle_action(
        &mut self,
        id: StreamId,
        filter: usize,
        action: Result<Option<i32>, String>,
    ) -> Step {
        let (local, reset) = {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("stream maps");
            // A continue inside the callback that paused means nothing yet.
            s.continue_request = false;
            s.continue_response = false;
            (s.local_response.take(), std::mem::take(&mut s.reset))
        };
        match action {
            Err(_trap) => match self.filters[filter].spec.failure_policy {
                FailurePolicy::FailClosed => {
                    self.local_reply(id, filter, Response::new(503), "wasm_fail_stream".into());
                    Step::Stop
                }
                FailurePolicy::FailOpen => Step::Go,
            },
            Ok(action) => {
                if reset {
                    self.runs.get_mut(&id).expect("run").reset = true;
                    self.finish(id);
                    return Step::Stop;
                }
                if let Some((response, details)) = local {
                    // Takes effect after the callback returns, then runs this filter's response callbacks.
                    self.local_reply(id, filter, response, details);
                    return Step::Stop;
                }
                if action == Some(1) {
                    Step::Pause
                } else {
                    Step::Go
                }
            }
        }
    }

    /// Calls filter `i`'s callback for `stage`; `Ok(None)` when skipped.
    fn callback(
        &mut self,
        id: StreamId,
        i: usize,
        request: bool,
        stage: Stage,
        body_size: usize,
        end_of_stream: bool,
    ) -> Result<Option<i32>, String> {
        let run = &self.runs[&id];
        let f = &mut self.filters[i];
        if f.spec.service.is_some() {
            return Ok(None); // Services never see a stream.
        }
        if f.vm.borrow_mut().failed.is_some() {
            // A dead VM answers nothing: fail-open skips it, fail-closed stops
            // the request (its 503 then passes the filters before it only).
            return match (f.spec.failure_policy, request) {
                (FailurePolicy::FailClosed, true) => {
                    Err(f.vm.borrow_mut().failed.clone().unwrap_or_default())
                }
                _ => Ok(None),
            };
        }
        let Some(ctx) = run.contexts[i] else {
            return Ok(None);
        };
        let (nh, nt) = {
            let streams = self.streams.borrow();
            let s = &streams[&id];
            let (h, t) = if request {
                (&s.request_headers, &s.request_trailers)
            } else {
                (&s.response_headers, &s.response_trailers)
            };
            (
                h.as_ref().map_or(0, Headers::len) as i32,
                t.as_ref().map_or(0, Headers::len) as i32,
            )
        };
        let ex = f.vm.borrow_mut().exports.clone();
        let (c, size, end) = (ctx as i32, body_size as i32, i32::from(end_of_stream));
        let name = match (request, stage) {
            (true, Stage::Headers) => "on_request_headers",
            (true, Stage::Body) => "on_request_body",
            (true, Stage::Trailers) => "on_request_trailers",
            (false, Stage::Headers) => "on_response_headers",
            (false, Stage::Body) => "on_response_body",
            (false, Stage::Trailers) => "on_response_trailers",
        };
        self.world.borrow_mut().trace_callback(i, ctx, name);
        f.vm.borrow_mut().call(ctx, self.fuel, |s| {
            let r = match (request, stage) {
                (true, Stage::Headers) => ex
                    .on_request_headers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nh, end))),
                (true, Stage::Body) => ex
                    .on_request_body
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, size, end))),
                (true, Stage::Trailers) => ex
                    .on_request_trailers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nt))),
                (false, Stage::Headers) => ex
                    .on_response_headers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nh, end))),
                (false, Stage::Body) => ex
                    .on_response_body
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, size, end))),
                (false, Stage::Trailers) => ex
                    .on_response_trailers
                    .as_ref()
                    .map(|f| f.call(&mut *s, (c, nt))),
            };
            r.transpose()
        })
    }

    fn send_upstream(&mut self, id: StreamId) {
        let body = std::mem::take(&mut self.flow_mut(id).out);
        let (headers, trailers) = {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            // What passed every filter; `request.size` reads it from now on.
            s.request_body = body.clone();
            (
                s.request_headers.clone().unwrap_or_default(),
                s.request_trailers.clone(),
            )
        };
        let (cluster_name, cluster) = self
            .routes
            .iter()
            .find(|(h, v, _)| headers.get(h) == Some(v.as_bytes()))
            .and_then(|(_, _, c)| Some((c.clone(), self.world.borrow().clusters.get(c)?.clone())))
            .unwrap_or_else(|| ("upstream".into(), self.upstream.clone()));
        let mut upstream_headers = headers;
        let router_headers = Headers(
            upstream_headers
                .0
                .iter()
                .filter(|(k, _)| router::CONSUMED.contains(&k.as_str()))
                .cloned()
                .collect(),
        );
        let policy = router::Policy::take_from(&mut upstream_headers);
        let now = self.world.borrow().now_ns;
        let run = self.runs.get_mut(&id).expect("run");
        run.upstream = Some(UpstreamRequest {
            cluster: cluster_name.clone(),
            headers: upstream_headers,
            body,
            trailers,
            attempts: 0,
            router_headers,
        });
        run.router = Some(RouterRun {
            global_at_ns: (policy.global_ms > 0).then(|| now + policy.global_ms * 1_000_000),
            policy,
            cluster_name,
            cluster,
            retries: 0,
            attempt: Attempt::Backoff { until_ns: now },
        });
        self.upstream_due(id);
    }

    /// The router's next event for a stream: an attempt starts, answers,
    /// times out, or the whole budget runs out.
    fn upstream_due(&mut self, id: StreamId) {
        let now = self.world.borrow().now_ns;
        let run = self.runs.get_mut(&id).expect("run");
        let Some(rr) = run.router.as_mut() else {
            return;
        };
        let final_response = if rr.global_at_ns.is_some_and(|g| g <= now) {
            Some(router::timeout_response())
        } else {
            match &rr.attempt {
                Attempt::Backoff { until_ns } if *until_ns <= now => {
                    let answer = self
                        .world
                        .borrow_mut()
                        .next_answer(&rr.cluster_name, &rr.cluster);
                    // A refused connection never delivers the request.
                    if let (Some(u), false) = (run.upstream.as_mut(), answer.refused) {
                        u.attempts += 1;
                    }
                    rr.attempt = Attempt::Waiting {
                        answer_at_ns: now + answer.answer_delay_ms() * 1_000_000,
                        per_try_at_ns: (rr.policy.per_try_ms > 0)
                            .then(|| now + rr.policy.per_try_ms * 1_000_000),
                        answer: answer.response(),
                        refused: answer.refused,
                    };
                    None
                }
                Attempt::Waiting {
                    answer_at_ns,
                    per_try_at_ns,
                    answer,
                    refused,
                } => {
                    let outcome = match per_try_at_ns {
                        Some(p) if *p <= now && *p < *answer_at_ns => {
                            Some(router::Outcome::PerTryTimeout)
                        }
                        _ if *answer_at_ns <= now && *refused => Some(router::Outcome::Refused),
                        _ if *answer_at_ns <= now => Some(
                            answer
                                .as_ref()
                                .map_or(router::Outcome::Reset, router::Outcome::Answered),
                        ),
                        _ => None,
                    };
                    match outcome {
                        None => None,
                        Some(o) if rr.retries < rr.policy.max_retries && rr.policy.retries(o) => {
                            rr.retries += 1;
                            rr.attempt = Attempt::Backoff {
                                until_ns: now + router::RETRY_BACKOFF_MS * 1_000_000,
                            };
                            None
                        }
                        Some(router::Outcome::PerTryTimeout) => Some(router::timeout_response()),
                        Some(o @ (router::Outcome::Reset | router::Outcome::Refused)) => {
                            Some(router::failure_response(o, rr.retries > 0))
                        }
                        // Only an upstream's own answer says how long it took.
                        Some(router::Outcome::Answered(r)) => {
                            Some(r.clone().header("x-envoy-upstream-service-time", "0"))
                        }
                    }
                }
                Attempt::Backoff { .. } => None,
            }
        };
        if let Some(response) = final_response {
            run.router = None;
            if run.upstream.as_ref().is_some_and(|u| u.attempts == 0) {
                run.upstream = None;
            }
            run.pending_response = Some(Some(response));
            self.upstream_answered(id);
            return;
        }
        let next = match &rr.attempt {
            Attempt::Backoff { until_ns } => *until_ns,
            Attempt::Waiting {
                answer_at_ns,
                per_try_at_ns,
                ..
            } => per_try_at_ns.map_or(*answer_at_ns, |p| p.min(*answer_at_ns)),
        };
        let at_ns = rr.global_at_ns.map_or(next, |g| g.min(next));
        run.phase = Phase::Upstream { at_ns };
        if at_ns <= now {
            self.upstream_due(id);
        }
    }

    fn upstream_answered(&mut self, id: StreamId) {
        let run = self.runs.get_mut(&id).expect("run");
        let response = run
            .pending_response
            .take()
            .flatten()
            .unwrap_or_else(|| Response::new(503));
        let chunks = Flow::arrivals(
            &response.body,
            &response.chunk_sizes,
            response.trailers.is_none(),
        );
        let Response {
            headers, trailers, ..
        } = response;
        let has_trailers = trailers.is_some();
        {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            s.response_headers = Some(headers);
            s.response_body = Vec::new();
            s.response_trailers = trailers;
            s.request_done = true;
        }
        let run = self.runs.get_mut(&id).expect("run");
        run.phase = Phase::Response;
        run.flow = Flow::new(
            (0..self.filters.len()).rev().collect(),
            chunks,
            has_trailers,
        );
        self.drive(id);
    }

    fn local_reply(&mut self, id: StreamId, filter: usize, response: Response, details: String) {
        let mut headers = response.headers.clone();
        if !response.body.is_empty() {
            // Envoy's local reply: content-length, then content-type.
            headers.replace("content-length", response.body.len().to_string().as_bytes());
            if !headers.contains("content-type") {
                headers.add("content-type", b"text/plain");
            }
        }
        {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            s.response_headers = Some(headers);
            s.response_body = Vec::new();
            s.response_trailers = None;
            s.request_done = true;
        }
        let run = self.runs.get_mut(&id).expect("run");
        run.local_reply = Some((filter, details));
        run.phase = Phase::Response;
        // From the filter that replied back to the first, the body in one chunk.
        let body = (!response.body.is_empty()).then_some(response.body);
        run.flow = Flow::new(
            (0..=filter).rev().collect(),
            body.into_iter().collect(),
            false,
        );
        self.drive(id);
    }

    fn finish(&mut self, id: StreamId) {
        let now = self.world.borrow().now_ns;
        let (response, reset) = {
            let mut streams = self.streams.borrow_mut();
            let s = streams.get_mut(&id).expect("maps");
            let run = self.runs.get_mut(&id).expect("run");
            // What passed every filter; `response.size` reads it in `on_log`.
            let body = if run.phase == Phase::Response {
                std::mem::take(&mut run.flow.out)
            } else {
                Vec::new()
            };
            s.response_body = body.clone();
            let r = s.response_headers.as_ref().map(|h| Response {
                status: h
                    .get(":status")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0),
                headers: h.clone(),
                body,
                trailers: s.response_trailers.clone(),
                chunk_sizes: Vec::new(),
            });
            (r, run.reset)
        };
        {
            let run = self.runs.get_mut(&id).expect("run");
            run.response = if reset { None } else { response };
            run.phase = Phase::Done;
            run.flow.paused = None;
            run.finished_ns = Some(now);
        }
        let contexts = self.runs[&id].contexts.clone();
        // Envoy cancels the HTTP calls a stream's contexts still wait for,
        // without a callback.
        {
            let mut w = self.world.borrow_mut();
            for call in w.open_calls_mut() {
                if contexts.get(call.vm) == Some(&Some(call.root_context)) {
                    call.answered = true;
                }
            }
            w.settle_calls();
        }
        for (i, ctx) in contexts.iter().enumerate() {
            let Some(ctx) = *ctx else { continue };
            let f = &mut self.filters[i];
            let ex = f.vm.borrow_mut().exports.clone();
            let c = ctx as i32;
            // Envoy: on_log (access log) before on_done and on_delete.
            self.world.borrow_mut().trace_callback(i, ctx, "on_log");
            let _ = f.vm.borrow_mut().call(ctx, self.fuel, |s| {
                if let Some(cb) = &ex.on_log {
                    cb.call(&mut *s, c)?;
                }
                if let Some(cb) = &ex.on_done {
                    cb.call(&mut *s, c)?;
                }
                if let Some(cb) = &ex.on_delete {
                    cb.call(&mut *s, c)?;
                }
                Ok(())
            });
            f.vm.borrow_mut().forget_context(ctx);
        }
        // Header maps are gone once the stream is.
        self.streams.borrow_mut().remove(&id);
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// Envoy's HTTP/1 codec hands filters `:authority`, `:path`, `:method`,
/// `:scheme` first, in that order, whatever order the client used.
fn envoy_order(h: &Headers) -> Headers {
    const PSEUDO: [&str; 4] = [":authority", ":path", ":method", ":scheme"];
    let mut out = Headers(Vec::with_capacity(h.len() + 2));
    for p in PSEUDO {
        if let Some(v) = h.get(p) {
            out.0.push((p.to_owned(), v.to_vec()));
        }
    }
    out.0.extend(
        h.0.iter()
            .filter(|(k, _)| !PSEUDO.contains(&k.as_str()))
            .cloned(),
    );
    out
}

/// What Envoy's async client hands the filter: the call goes through a
/// router, so a timeout, reset or refusal arrives as the router's made-up
/// reply (504/503 with headers), never as zero headers.
fn call_answer(c: &HttpCall) -> Response {
    let failure = |o| router::failure_response(o, false);
    match c.ending() {
        CallEnding::Refused => failure(router::Outcome::Refused),
        CallEnding::TimedOut => router::timeout_response(),
        CallEnding::Reset => failure(router::Outcome::Reset),
        CallEnding::Answered(cluster) => match cluster.response() {
            Some(r) => r.header("x-envoy-upstream-service-time", "0"),
            None => failure(router::Outcome::Reset),
        },
    }
}

/// What a due call gets.
enum Due {
    Http(Response),
    /// Callbacks that end a gRPC call or stream.
    Grpc(Vec<GrpcEvent>),
    /// A stream's first callbacks from a service that replies at open.
    Opening(Vec<GrpcEvent>),
}

/// When a call's answer is due: its delay (cut by its timeout) after the
/// caller finished sending; a refusal at once; a gRPC stream still being
/// sent on, never yet — unless its service replies at open, after its
/// delay, and sends its status once the caller is done.
fn call_due_ns(w: &World, c: &HttpCall) -> Option<u64> {
    let refused = c.answer.as_ref().is_none_or(|a| a.refused);
    let delay = c.answer.as_ref().map_or(0, Cluster::answer_delay_ms);
    let wait = if c.timeout_ms > 0 {
        delay.min(c.timeout_ms)
    } else {
        delay
    };
    let opened = c.dispatched_at_ms + wait;
    let at_ms = if refused {
        c.dispatched_at_ms
    } else if grpc::replies_at_open(c) {
        opened
    } else if c.replied_at_open {
        c.client_done_at_ms?.max(opened)
    } else {
        c.client_done_at_ms? + wait
    };
    Some(w.start_ns + at_ms * 1_000_000)
}

fn uuid(r: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = String::with_capacity(32);
    for b in r {
        h.push(HEX[usize::from(b >> 4)] as char);
        h.push(HEX[usize::from(b & 15)] as char);
    }
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}
