//! The Proxy-Wasm ABI 0.2.0/0.2.1 host functions (module `env`), with the
//! statuses Envoy returns. Each records itself in the trace.

mod buffers;
mod context;
mod grpc;
mod headers;
mod http_calls;
mod metrics;
mod properties;
mod queues;
mod runtime;
mod shared_data;
mod stream;

use crate::grpc::GrpcEvent;
use crate::log_level::LogLevel;
use crate::model::{Headers, Response};
use crate::vm::{mem, Ctx, Host};
use crate::world::{CallKind, HttpCall, MetricKind, TraceEntry};
use wasmtime::Result;
use wasmtime::{Caller, Linker};

pub use crate::status::*;
pub(crate) use runtime::log;

const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_REQUEST_TRAILERS: i32 = 1;
const MAP_RESPONSE_HEADERS: i32 = 2;
const MAP_RESPONSE_TRAILERS: i32 = 3;
const MAP_GRPC_INITIAL_METADATA: i32 = 4;
const MAP_GRPC_TRAILING_METADATA: i32 = 5;
const MAP_CALL_RESPONSE_HEADERS: i32 = 6;
const MAP_CALL_RESPONSE_TRAILERS: i32 = 7;

const BUFFER_REQUEST_BODY: i32 = 0;
const BUFFER_RESPONSE_BODY: i32 = 1;
const BUFFER_CALL_RESPONSE_BODY: i32 = 4;
const BUFFER_GRPC_RECEIVE: i32 = 5;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;

fn trace(caller: &Caller<'_, Host>, call: &'static str, status: i32) {
    let h = caller.data();
    let mut w = h.world.borrow_mut();
    if w.trace_enabled {
        let at_ms = w.now_ms();
        w.trace.push(TraceEntry {
            at_ms,
            vm: h.vm_index,
            context: h.context(),
            call,
            status: status as u32,
        });
    }
}

/// Finishes a host call: records it and turns a memory error into its status.
fn done(caller: &Caller<'_, Host>, call: &'static str, r: Result<(), i32>) -> i32 {
    let status = r.err().unwrap_or(OK);
    trace(caller, call, status);
    status
}

/// Runs `f` on the header map `map` of the calling context.
fn with_map<R>(h: &Host, map: i32, f: impl FnOnce(&mut Headers) -> R) -> Result<R, i32> {
    if map == MAP_CALL_RESPONSE_HEADERS || map == MAP_CALL_RESPONSE_TRAILERS {
        // Only readable while the HTTP-call callback runs; mutations are not seen by anyone.
        let mut copy = match (&h.call_response, map) {
            (Some(c), MAP_CALL_RESPONSE_HEADERS) => c.headers.clone(),
            (Some(c), _) => c.trailers.clone(),
            (None, _) => return Err(BAD_ARGUMENT),
        };
        return Ok(f(&mut copy));
    }
    if map == MAP_GRPC_INITIAL_METADATA || map == MAP_GRPC_TRAILING_METADATA {
        // Only while the matching gRPC callback runs.
        let mut copy = match (&h.grpc_event, map) {
            (Some(GrpcEvent::InitialMetadata(m)), MAP_GRPC_INITIAL_METADATA)
            | (Some(GrpcEvent::TrailingMetadata(m)), MAP_GRPC_TRAILING_METADATA) => m.clone(),
            _ => return Err(BAD_ARGUMENT),
        };
        return Ok(f(&mut copy));
    }
    let stream = h.stream_of_context().ok_or(BAD_ARGUMENT)?;
    let mut streams = h.streams.borrow_mut();
    let s = streams.get_mut(&stream).ok_or(BAD_ARGUMENT)?;
    let m = match map {
        MAP_REQUEST_HEADERS | MAP_REQUEST_TRAILERS if s.request_done => None,
        MAP_REQUEST_HEADERS => s.request_headers.as_mut(),
        MAP_REQUEST_TRAILERS => s.request_trailers.as_mut(),
        MAP_RESPONSE_HEADERS => s.response_headers.as_mut(),
        MAP_RESPONSE_TRAILERS => s.response_trailers.as_mut(),
        _ => None,
    };
    // Envoy: a map that is not (or no longer) available is a bad argument.
    m.map(f).ok_or(BAD_ARGUMENT)
}

type C<'a> = Caller<'a, Host>;

/// Registers every host function on `linker`.
pub(crate) fn register(linker: &mut Linker<Host>) -> Result<()> {
    runtime::register(linker)?;
    buffers::register(linker)?;
    headers::register(linker)?;
    properties::register(linker)?;
    shared_data::register(linker)?;
    queues::register(linker)?;
    stream::register(linker)?;
    http_calls::register(linker)?;
    grpc::register(linker)?;
    context::register(linker)?;
    metrics::register(linker)?;
    Ok(())
}
