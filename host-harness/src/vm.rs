//! One Proxy-Wasm VM: a compiled module instantiated in its own wasmtime
//! store, its root context, and typed handles to the callbacks it exports.

use crate::model::{Headers, Response};
use crate::world::World;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasmtime::{bail, format_err, Result};
use wasmtime::{
    Caller, Engine, Instance, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    TypedFunc,
};

/// Which ABI the module speaks, from its `proxy_abi_version_*` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiVersion {
    V0_2_0,
    V0_2_1,
}

/// The header maps and bodies of one HTTP stream, shared by the chain.
#[derive(Debug, Default)]
pub(crate) struct StreamMaps {
    pub request_headers: Option<Headers>,
    pub request_body: Vec<u8>,
    pub request_trailers: Option<Headers>,
    pub response_headers: Option<Headers>,
    pub response_body: Vec<u8>,
    pub response_trailers: Option<Headers>,
    /// A local response a filter asked for in the current callback.
    pub local_response: Option<(Response, String)>,
    pub continue_request: bool,
    pub continue_response: bool,
    pub reset: bool,
    /// Set once the response phase starts: Envoy then answers BadArgument for
    /// the request's header and trailer maps.
    pub request_done: bool,
    /// Properties a filter set on this stream (Envoy filter state).
    pub properties: std::collections::BTreeMap<String, Vec<u8>>,
    pub started_at_ns: u64,
    /// Where the client came from, for `source.*` and `connection.*` properties.
    pub connection: crate::model::Connection,
    /// Envoy numbers connections; each harness request is one.
    pub connection_id: u64,
    /// The client speaks HTTP/2 (`request.protocol`).
    pub http2: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Root,
    Stream(u64),
}

/// What the HTTP-call callback may read, while it runs.
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// One plugin (root context) of a VM; several plugins may share a VM.
#[derive(Debug, Clone, Default)]
pub(crate) struct PluginInfo {
    pub name: String,
    pub root_id: String,
    pub configuration: Vec<u8>,
    pub tick_period_ms: u64,
    pub tick_sets: u64,
}

/// The wasmtime store data of one VM.
#[derive(Default)]
pub(crate) struct Host {
    pub world: Rc<RefCell<World>>,
    pub streams: Rc<RefCell<HashMap<u64, StreamMaps>>>,
    pub vm_index: usize,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub plugin_configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    pub current_context: u32,
    pub effective_context: Option<u32>,
    pub root_context: u32,
    pub contexts: HashMap<u32, Ctx>,
    pub tick_period_ms: u64,
    /// Calls to set the tick period: each re-arms the timer, as in Envoy.
    pub tick_sets: u64,
    pub call_response: Option<CallResponse>,
    /// The gRPC callback running, and what it may read (`proxy_get_status`,
    /// the receive buffer, metadata).
    pub grpc_event: Option<crate::grpc::GrpcEvent>,
    /// The last critical log line (the SDK's panic hook writes the panic message there).
    pub last_critical: Option<String>,
    pub exit_code: Option<i32>,
    /// Every plugin of this VM by root context; the fields above hold the
    /// one whose context is running.
    pub plugins: HashMap<u32, PluginInfo>,
    /// The root context each context belongs to.
    pub ctx_root: HashMap<u32, u32>,
}

impl Host {
    pub fn context(&self) -> u32 {
        self.effective_context.unwrap_or(self.current_context)
    }

    pub fn stream_of_context(&self) -> Option<u64> {
        match self.contexts.get(&self.context()) {
            Some(Ctx::Stream(id)) => Some(*id),
            _ => None,
        }
    }
}

/// `proxy_on_http_call_response(context, token, headers, body size, trailers)`.
pub(crate) type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// Typed callbacks; `None` where the module does not export one.
#[derive(Clone)]
pub(crate) struct Exports {
    pub on_context_create: Option<TypedFunc<(i32, i32), ()>>,
    pub on_vm_start: Option<TypedFunc<(i32, i32), i32>>,
    pub on_configure: Option<TypedFunc<(i32, i32), i32>>,
    pub on_tick: Option<TypedFunc<i32, ()>>,
    pub on_queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub on_request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub on_response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub on_http_call_response: Option<CallResponseFn>,
    /// `proxy_on_grpc_receive_initial_metadata(context, token, entries)`.
    pub on_grpc_receive_initial_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    /// `proxy_on_grpc_receive(context, token, message size)`.
    pub on_grpc_receive: Option<TypedFunc<(i32, i32, i32), ()>>,
    /// `proxy_on_grpc_receive_trailing_metadata(context, token, entries)`.
    pub on_grpc_receive_trailing_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    /// `proxy_on_grpc_close(context, token, status)`.
    pub on_grpc_close: Option<TypedFunc<(i32, i32, i32), ()>>,
    pub on_log: Option<TypedFunc<i32, ()>>,
    pub on_done: Option<TypedFunc<i32, i32>>,
    pub on_delete: Option<TypedFunc<i32, ()>>,
}

pub(crate) struct Vm {
    pub store: Store<Host>,
    /// Shared so that taking a handle per callback is a refcount, not 15 `TypedFunc` clones.
    pub exports: Rc<Exports>,
    pub abi: AbiVersion,
    pub next_context: u32,
    /// Set once a callback trapped: the VM is dead, as in Envoy.
    pub failed: Option<String>,
}

/// Settings for one VM.
pub(crate) struct VmSpec<'a> {
    pub module: &'a Module,
    pub linker: &'a Linker<Host>,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub memory_limit: usize,
    pub fuel: Option<u64>,
}

/// A linker with every import a filter may use: the proxy-wasm ABI (`env`)
/// and the WASI subset Envoy offers, registered here as a wasmtime
/// embedder adds each interface to its linker.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    crate::abi::register(&mut linker)?;
    crate::wasi::register(&mut linker)?;
    Ok(linker)
}

pub(crate) fn engine(fuel: bool) -> Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.consume_fuel(fuel);
    // `perf record` then names the module's functions (`/tmp/perf-PID.map`):
    // how a filter's own cost is found, since Envoy's V8 code has no symbols.
    if std::env::var_os("SWITCHYARD_HARNESS_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config)
}

/// Checks a module before instantiating it: its ABI version, and that the
/// harness provides every function it imports (reported by name, not as a
/// trap later).
pub(crate) fn check_module(
    module: &Module,
    linker: &Linker<Host>,
    engine: &Engine,
) -> Result<AbiVersion> {
    let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
    let abi = if exports.contains(&"proxy_abi_version_0_2_1") {
        AbiVersion::V0_2_1
    } else if exports.contains(&"proxy_abi_version_0_2_0") {
        AbiVersion::V0_2_0
    } else if exports.contains(&"proxy_abi_version_0_1_0") {
        bail!("the module speaks Proxy-Wasm ABI 0.1.0 only; the harness supports 0.2.0 and 0.2.1 (rebuild with a current SDK)");
    } else {
        bail!("the module exports no proxy_abi_version_* marker: not a Proxy-Wasm module");
    };
    let mut store = Store::new(engine, Host::default());
    let mut missing = Vec::new();
    for import in module.imports() {
        if linker.get_by_import(&mut store, &import).is_none() {
            missing.push(format!("{}.{}", import.module(), import.name()));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the module imports functions the harness does not provide: {}",
            missing.join(", ")
        );
    }
    Ok(abi)
}

fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &Instance,
    store: &mut Store<Host>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => f.typed::<P, R>(&*store).map(Some).map_err(|e| {
            format_err!("export {name} has the wrong signature for Proxy-Wasm 0.2: {e}")
        }),
    }
}

impl Vm {
    pub fn instantiate(
        engine: &Engine,
        spec: VmSpec<'_>,
        abi: AbiVersion,
        world: Rc<RefCell<World>>,
        streams: Rc<RefCell<HashMap<u64, StreamMaps>>>,
        vm_index: usize,
    ) -> Result<Self> {
        let host = Host {
            world,
            streams,
            vm_index,
            plugin_name: spec.plugin_name,
            root_id: spec.root_id,
            vm_id: spec.vm_id,
            plugin_configuration: spec.configuration,
            vm_configuration: spec.vm_configuration,
            env: spec.env,
            limits: StoreLimitsBuilder::new()
                .memory_size(spec.memory_limit)
                .build(),
            memory: None,
            alloc: None,
            current_context: 0,
            effective_context: None,
            root_context: 0,
            contexts: HashMap::new(),
            tick_period_ms: 0,
            tick_sets: 0,
            call_response: None,
            grpc_event: None,
            last_critical: None,
            exit_code: None,
            plugins: HashMap::new(),
            ctx_root: HashMap::new(),
        };
        let mut store = Store::new(engine, host);
        store.limiter(|h| &mut h.limits);
        if let Some(fuel) = spec.fuel {
            store.set_fuel(fuel)?;
        }
        let instance = spec.linker.instantiate(&mut store, spec.module)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| format_err!("the module exports no memory"))?;
        let alloc = match typed::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")? {
            Some(f) => f,
            None => typed::<i32, i32>(&instance, &mut store, "malloc")?.ok_or_else(|| {
                format_err!("the module exports neither proxy_on_memory_allocate nor malloc")
            })?,
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);
        let s = &mut store;
        let exports = Exports {
            on_context_create: typed(&instance, s, "proxy_on_context_create")?,
            on_vm_start: typed(&instance, s, "proxy_on_vm_start")?,
            on_configure: typed(&instance, s, "proxy_on_configure")?,
            on_tick: typed(&instance, s, "proxy_on_tick")?,
            on_queue_ready: typed(&instance, s, "proxy_on_queue_ready")?,
            on_request_headers: typed(&instance, s, "proxy_on_request_headers")?,
            on_request_body: typed(&instance, s, "proxy_on_request_body")?,
            on_request_trailers: typed(&instance, s, "proxy_on_request_trailers")?,
            on_response_headers: typed(&instance, s, "proxy_on_response_headers")?,
            on_response_body: typed(&instance, s, "proxy_on_response_body")?,
            on_response_trailers: typed(&instance, s, "proxy_on_response_trailers")?,
            on_http_call_response: typed(&instance, s, "proxy_on_http_call_response")?,
            on_grpc_receive_initial_metadata: typed(
                &instance,
                s,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            on_grpc_receive: typed(&instance, s, "proxy_on_grpc_receive")?,
            on_grpc_receive_trailing_metadata: typed(
                &instance,
                s,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
            on_grpc_close: typed(&instance, s, "proxy_on_grpc_close")?,
            on_log: typed(&instance, s, "proxy_on_log")?,
            on_done: typed(&instance, s, "proxy_on_done")?,
            on_delete: typed(&instance, s, "proxy_on_delete")?,
        };
        // Reactor modules initialise with _initialize; command-style ones with _start.
        if let Some(init) = typed::<(), ()>(&instance, s, "_initialize")? {
            init.call(&mut *s, ())?;
        } else if let Some(start) = typed::<(), ()>(&instance, s, "_start")? {
            start.call(&mut *s, ())?;
        }
        Ok(Self {
            store,
            exports: Rc::new(exports),
            abi,
            next_context: 1,
            failed: None,
        })
    }

    /// Allocates a context id and records what it belongs to; `root` is
    /// its plugin's root context (`None` for a new root).
    pub fn new_context(&mut self, ctx: Ctx, root: Option<u32>) -> u32 {
        let id = self.next_context;
        self.next_context += 1;
        let h = self.store.data_mut();
        h.contexts.insert(id, ctx);
        h.ctx_root.insert(id, root.unwrap_or(id));
        id
    }

    /// Adds a plugin (root context) to this VM.
    pub fn add_plugin(&mut self, root: u32, info: PluginInfo) {
        self.store.data_mut().plugins.insert(root, info);
    }

    pub fn forget_context(&mut self, ctx: u32) {
        let h = self.store.data_mut();
        h.contexts.remove(&ctx);
        h.ctx_root.remove(&ctx);
    }

    /// The tick period a plugin asked for, and how many times it set one.
    pub fn tick_period_of(&self, root: u32) -> (u64, u64) {
        let h = self.store.data();
        if h.root_context == root {
            (h.tick_period_ms, h.tick_sets)
        } else {
            h.plugins
                .get(&root)
                .map_or((0, 0), |p| (p.tick_period_ms, p.tick_sets))
        }
    }

    /// Makes the plugin owning `context` the current one (name, root id,
    /// configuration and tick period are per plugin, not per VM).
    fn select_plugin(&mut self, context: u32) {
        let h = self.store.data_mut();
        let Some(&root) = h.ctx_root.get(&context) else {
            return;
        };
        if root == h.root_context {
            return;
        }
        let current = h.root_context;
        let (period, sets) = (h.tick_period_ms, h.tick_sets);
        if let Some(p) = h.plugins.get_mut(&current) {
            p.tick_period_ms = period;
            p.tick_sets = sets;
        }
        if let Some(p) = h.plugins.get(&root).cloned() {
            h.plugin_name = p.name;
            h.root_id = p.root_id;
            h.plugin_configuration = p.configuration;
            h.tick_period_ms = p.tick_period_ms;
            h.tick_sets = p.tick_sets;
            h.root_context = root;
        }
    }

    /// Runs one callback as the given context; a trap kills the VM and is
    /// reported with the panic message the module logged, if any.
    pub fn call<T>(
        &mut self,
        context: u32,
        fuel: Option<u64>,
        f: impl FnOnce(&mut Store<Host>) -> Result<T>,
    ) -> Result<T, String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        self.select_plugin(context);
        {
            let h = self.store.data_mut();
            h.current_context = context;
            h.effective_context = None;
        }
        if let Some(fuel) = fuel {
            let _ = self.store.set_fuel(fuel);
        }
        let result = f(&mut self.store);
        self.store.data_mut().effective_context = None;
        result.map_err(|err| {
            let h = self.store.data();
            let reason = match (&h.last_critical, h.exit_code) {
                (_, Some(code)) => format!("the module exited (proc_exit {code})"),
                (Some(msg), _) => format!("trap: {} (the module logged: {msg})", root_cause(&err)),
                (None, _) => format!("trap: {}", root_cause(&err)),
            };
            self.failed = Some(reason.clone());
            reason
        })
    }
}

fn root_cause(err: &wasmtime::Error) -> String {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    format!("{err:#}")
}

/// Memory helpers for host functions.
pub(crate) mod mem {
    use super::*;

    pub const INVALID_MEMORY_ACCESS: i32 = 6;

    pub fn read(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
        let memory = caller.data().memory.ok_or(INVALID_MEMORY_ACCESS)?;
        let (start, len) = (ptr as u32 as usize, len as u32 as usize);
        memory
            .data(&*caller)
            .get(start..start.checked_add(len).ok_or(INVALID_MEMORY_ACCESS)?)
            .map(<[u8]>::to_vec)
            .ok_or(INVALID_MEMORY_ACCESS)
    }

    pub fn read_str(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Result<String, i32> {
        String::from_utf8(read(caller, ptr, len)?).map_err(|_| 2)
    }

    pub fn write(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
        let memory = caller.data().memory.ok_or(INVALID_MEMORY_ACCESS)?;
        let start = ptr as u32 as usize;
        memory
            .data_mut(&mut *caller)
            .get_mut(start..start + bytes.len())
            .ok_or(INVALID_MEMORY_ACCESS)?
            .copy_from_slice(bytes);
        Ok(())
    }

    pub fn write_u32(caller: &mut Caller<'_, Host>, ptr: i32, v: u32) -> Result<(), i32> {
        write(caller, ptr, &v.to_le_bytes())
    }

    /// Copies `data` into memory the module allocates, then writes its
    /// address and size to the two out-pointers. An `Err(Ok(status))` is a
    /// status for the module; `Err(Err(e))` is a trap in its allocator.
    pub fn give(
        caller: &mut Caller<'_, Host>,
        data: &[u8],
        ptr_out: i32,
        size_out: i32,
    ) -> Result<Result<(), i32>> {
        let addr = if data.is_empty() {
            0
        } else {
            let alloc = caller
                .data()
                .alloc
                .clone()
                .ok_or_else(|| format_err!("no allocator"))?;
            let addr = alloc.call(&mut *caller, data.len() as i32)?;
            if addr == 0 {
                return Ok(Err(INVALID_MEMORY_ACCESS));
            }
            if let Err(s) = write(caller, addr, data) {
                return Ok(Err(s));
            }
            addr
        };
        if let Err(s) = write_u32(caller, ptr_out, addr as u32)
            .and_then(|()| write_u32(caller, size_out, data.len() as u32))
        {
            return Ok(Err(s));
        }
        Ok(Ok(()))
    }
}
