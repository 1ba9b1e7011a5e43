//! The Proxy-Wasm ABI 0.2.0/0.2.1 host functions (module `env`), with the
//! statuses Envoy returns. Each records itself in the trace.

use crate::grpc::GrpcEvent;
use crate::log_level::LogLevel;
use crate::model::{Headers, Response};
use crate::vm::{mem, Ctx, Host};
use crate::world::{CallKind, HttpCall, MetricKind, TraceEntry};
use wasmtime::Result;
use wasmtime::{Caller, Linker};

pub use crate::status::*;

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
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, size: i32| -> i32 {
            let r = (|| {
                let msg = String::from_utf8_lossy(&mem::read(&mut c, ptr, size)?).into_owned();
                let level = LogLevel::from_abi(level).ok_or(BAD_ARGUMENT)?;
                log(c.data_mut(), level, msg);
                Ok(())
            })();
            done(&c, "proxy_log", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, out: i32| -> i32 {
            let r = mem::write_u32(&mut c, out, LogLevel::Trace as u32);
            done(&c, "proxy_get_log_level", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, out: i32| -> i32 {
            let now = c.data().world.borrow().now_ns;
            let r = mem::write(&mut c, out, &now.to_le_bytes());
            done(&c, "proxy_get_current_time_nanoseconds", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> i32 {
            c.data_mut().tick_period_ms = period as u32 as u64;
            c.data_mut().tick_sets += 1;
            done(&c, "proxy_set_tick_period_milliseconds", Ok(()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>,
         kind: i32,
         start: i32,
         max: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let data = {
                let h = c.data();
                match kind {
                    BUFFER_PLUGIN_CONFIGURATION => Ok(h.plugin_configuration.clone()),
                    BUFFER_VM_CONFIGURATION => Ok(h.vm_configuration.clone()),
                    BUFFER_CALL_RESPONSE_BODY => h
                        .call_response
                        .as_ref()
                        .map(|r| r.body.clone())
                        .ok_or(NOT_FOUND),
                    BUFFER_GRPC_RECEIVE => match &h.grpc_event {
                        Some(GrpcEvent::Message(m)) => Ok(m.clone()),
                        _ => Err(NOT_FOUND),
                    },
                    BUFFER_REQUEST_BODY | BUFFER_RESPONSE_BODY => h
                        .stream_of_context()
                        .and_then(|s| {
                            let streams = h.streams.borrow();
                            let st = streams.get(&s)?;
                            Some(if kind == BUFFER_REQUEST_BODY {
                                st.request_body.clone()
                            } else {
                                st.response_body.clone()
                            })
                        })
                        .ok_or(NOT_FOUND),
                    _ => Err(NOT_FOUND),
                }
            };
            let data = match data {
                Ok(d) => d,
                Err(s) => return Ok(done(&c, "proxy_get_buffer_bytes", Err(s))),
            };
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            if start > data.len() {
                return Ok(done(&c, "proxy_get_buffer_bytes", Err(BAD_ARGUMENT)));
            }
            let end = start.saturating_add(max).min(data.len());
            if start == end && !data.is_empty() {
                return Ok(done(&c, "proxy_get_buffer_bytes", Err(NOT_FOUND)));
            }
            let r = mem::give(&mut c, &data[start..end], ptr_out, size_out)?;
            Ok(done(&c, "proxy_get_buffer_bytes", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
            let r = (|| {
                let data = mem::read(&mut c, ptr, len)?;
                let h = c.data();
                let stream = h.stream_of_context().ok_or(NOT_FOUND)?;
                let mut streams = h.streams.borrow_mut();
                let st = streams.get_mut(&stream).ok_or(NOT_FOUND)?;
                let buf = match kind {
                    BUFFER_REQUEST_BODY => &mut st.request_body,
                    BUFFER_RESPONSE_BODY => &mut st.response_body,
                    _ => return Err(BAD_ARGUMENT),
                };
                let (start, size) = (start as u32 as usize, size as u32 as usize);
                // Envoy: replace [start, start+size); start == len appends; start 0 size 0 prepends.
                if start > buf.len() {
                    return Err(BAD_ARGUMENT);
                }
                let end = start.saturating_add(size).min(buf.len());
                buf.splice(start..end, data);
                Ok(())
            })();
            done(&c, "proxy_set_buffer_bytes", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let bytes = with_map(c.data(), map, |m| m.serialize());
            let r = match bytes {
                Ok(b) => mem::give(&mut c, &b, ptr_out, size_out)?,
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_get_header_map_pairs", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> i32 {
            let r = (|| {
                let bytes = mem::read(&mut c, ptr, len)?;
                let new = Headers::deserialize(&bytes).ok_or(SERIALIZATION_FAILURE)?;
                with_map(c.data(), map, |m| {
                    // Envoy's setHeaderMapPairs adds each pair to the existing map.
                    for (k, v) in new.0 {
                        m.add(&k.to_ascii_lowercase(), &v);
                    }
                })
            })();
            done(&c, "proxy_set_header_map_pairs", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         map: i32,
         kptr: i32,
         klen: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let key = match mem::read(&mut c, kptr, klen) {
                Ok(k) => String::from_utf8_lossy(&k).to_ascii_lowercase(),
                Err(s) => return Ok(done(&c, "proxy_get_header_map_value", Err(s))),
            };
            let value = with_map(c.data(), map, |m| m.get(&key).map(<[u8]>::to_vec));
            let r = match value {
                Ok(Some(v)) => mem::give(&mut c, &v, ptr_out, size_out)?,
                Ok(None) => Err(NOT_FOUND),
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_get_header_map_value", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> i32 {
            let r = (|| {
                let key =
                    String::from_utf8_lossy(&mem::read(&mut c, kptr, klen)?).to_ascii_lowercase();
                let value = mem::read(&mut c, vptr, vlen)?;
                with_map(c.data(), map, |m| m.replace(&key, &value))
            })();
            done(&c, "proxy_replace_header_map_value", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> i32 {
            let r = (|| {
                let key =
                    String::from_utf8_lossy(&mem::read(&mut c, kptr, klen)?).to_ascii_lowercase();
                let value = mem::read(&mut c, vptr, vlen)?;
                with_map(c.data(), map, |m| m.add(&key, &value))
            })();
            done(&c, "proxy_add_header_map_value", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32| -> i32 {
            let r = (|| {
                let key =
                    String::from_utf8_lossy(&mem::read(&mut c, kptr, klen)?).to_ascii_lowercase();
                with_map(c.data(), map, |m| m.remove(&key))
            })();
            done(&c, "proxy_remove_header_map_value", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pptr: i32, plen: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let path = match mem::read(&mut c, pptr, plen) {
                Ok(p) => p,
                Err(s) => return Ok(done(&c, "proxy_get_property", Err(s))),
            };
            let r = match crate::properties::get(c.data(), &path) {
                Some(v) => mem::give(&mut c, &v, ptr_out, size_out)?,
                None => Err(NOT_FOUND),
            };
            Ok(done(&c, "proxy_get_property", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, pptr: i32, plen: i32, vptr: i32, vlen: i32| -> i32 {
            let r = (|| {
                let path = mem::read(&mut c, pptr, plen)?;
                let value = mem::read(&mut c, vptr, vlen)?;
                crate::properties::set(c.data_mut(), &path, value)
            })();
            done(&c, "proxy_set_property", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>,
         kptr: i32,
         klen: i32,
         ptr_out: i32,
         size_out: i32,
         cas_out: i32|
         -> Result<i32> {
            let key = match mem::read_str(&mut c, kptr, klen) {
                Ok(k) => k,
                Err(s) => return Ok(done(&c, "proxy_get_shared_data", Err(s))),
            };
            let entry = {
                let h = c.data();
                let w = h.world.borrow();
                w.shared_data.get(&(h.vm_id.clone(), key)).cloned()
            };
            let r = match entry {
                None => Err(NOT_FOUND),
                Some((value, cas)) => match mem::give(&mut c, &value, ptr_out, size_out)? {
                    Ok(()) => mem::write_u32(&mut c, cas_out, cas),
                    e => e,
                },
            };
            Ok(done(&c, "proxy_get_shared_data", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kptr: i32, klen: i32, vptr: i32, vlen: i32, cas: i32| -> i32 {
            let r = (|| {
                let key = mem::read_str(&mut c, kptr, klen)?;
                let value = mem::read(&mut c, vptr, vlen)?;
                let h = c.data();
                let mut w = h.world.borrow_mut();
                let slot = w
                    .shared_data
                    .entry((h.vm_id.clone(), key))
                    .or_insert((Vec::new(), 0));
                // Envoy: cas 0 always writes; otherwise it must match the current one.
                if cas != 0 && cas as u32 != slot.1 {
                    return Err(CAS_MISMATCH);
                }
                slot.0 = value;
                slot.1 = slot.1.wrapping_add(1).max(1);
                Ok(())
            })();
            done(&c, "proxy_set_shared_data", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, nptr: i32, nlen: i32, id_out: i32| -> i32 {
            let r = (|| {
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let h = c.data();
                let owner = (h.vm_index, h.root_context);
                let id = {
                    let mut w = h.world.borrow_mut();
                    match w
                        .queues
                        .iter()
                        .position(|q| q.vm_id == h.vm_id && q.name == name)
                    {
                        Some(i) => {
                            w.queues[i].owner = owner;
                            i
                        }
                        None => {
                            w.queues.push(crate::world::Queue {
                                vm_id: h.vm_id.clone(),
                                name,
                                owner,
                                items: Default::default(),
                            });
                            w.queues.len() - 1
                        }
                    }
                };
                mem::write_u32(&mut c, id_out, id as u32 + 1)
            })();
            done(&c, "proxy_register_shared_queue", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vptr: i32, vlen: i32, nptr: i32, nlen: i32, id_out: i32| -> i32 {
            let r = (|| {
                let vm_id = mem::read_str(&mut c, vptr, vlen)?;
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let id = {
                    let w = c.data().world.borrow();
                    w.queues
                        .iter()
                        .position(|q| q.vm_id == vm_id && q.name == name)
                        .ok_or(NOT_FOUND)?
                };
                mem::write_u32(&mut c, id_out, id as u32 + 1)
            })();
            done(&c, "proxy_resolve_shared_queue", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: C<'_>, id: i32, ptr: i32, len: i32| -> i32 {
            let r = (|| {
                let data = mem::read(&mut c, ptr, len)?;
                let mut w = c.data().world.borrow_mut();
                let q = w
                    .queues
                    .get_mut((id as u32 as usize).wrapping_sub(1))
                    .ok_or(NOT_FOUND)?;
                q.items.push_back(data);
                // Envoy posts the notification to the owner's dispatcher: it arrives later, not inside this call.
                w.queue_notifications.push_back(id as u32);
                Ok(())
            })();
            done(&c, "proxy_enqueue_shared_queue", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let item = {
                let mut w = c.data().world.borrow_mut();
                match w.queues.get_mut((id as u32 as usize).wrapping_sub(1)) {
                    None => Err(NOT_FOUND),
                    Some(q) => q.items.pop_front().ok_or(EMPTY),
                }
            };
            let r = match item {
                Ok(data) => mem::give(&mut c, &data, ptr_out, size_out)?,
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_dequeue_shared_queue", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |c: C<'_>, stream_type: i32| -> i32 {
            let r = stream_flag(c.data(), |s| match stream_type {
                0 => {
                    s.continue_request = true;
                    Ok(())
                }
                1 => {
                    s.continue_response = true;
                    Ok(())
                }
                _ => Err(BAD_ARGUMENT),
            });
            done(&c, "proxy_continue_stream", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |c: C<'_>, stream_type: i32| -> i32 {
            let r = stream_flag(c.data(), |s| match stream_type {
                0 | 1 => {
                    s.reset = true;
                    Ok(())
                }
                _ => Err(BAD_ARGUMENT),
            });
            done(&c, "proxy_close_stream", r)
        },
    )?;
    // ABI 0.1.0 names some modules built for 0.2.0 still import.
    linker.func_wrap("env", "proxy_continue_request", |c: C<'_>| -> i32 {
        let r = stream_flag(c.data(), |s| {
            s.continue_request = true;
            Ok(())
        });
        done(&c, "proxy_continue_request", r)
    })?;
    linker.func_wrap("env", "proxy_continue_response", |c: C<'_>| -> i32 {
        let r = stream_flag(c.data(), |s| {
            s.continue_response = true;
            Ok(())
        });
        done(&c, "proxy_continue_response", r)
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: i32,
         dptr: i32,
         dlen: i32,
         bptr: i32,
         blen: i32,
         hptr: i32,
         hlen: i32,
         grpc_status: i32|
         -> i32 {
            let r = (|| {
                let details = String::from_utf8_lossy(&mem::read(&mut c, dptr, dlen)?).into_owned();
                let body = mem::read(&mut c, bptr, blen)?;
                let headers = Headers::deserialize(&mem::read(&mut c, hptr, hlen)?)
                    .ok_or(SERIALIZATION_FAILURE)?;
                let mut response = Response::new(status as u16);
                for (k, v) in headers.0 {
                    response.headers.add(&k.to_ascii_lowercase(), &v);
                }
                response.body = body;
                stream_flag(c.data(), |s| {
                    let grpc = s
                        .request_headers
                        .as_ref()
                        .and_then(|h| h.get("content-type"))
                        .is_some_and(is_grpc_content_type);
                    if grpc {
                        response = grpc_local_reply(response, grpc_status);
                    }
                    s.local_response = Some((response, details));
                    Ok(())
                })
            })();
            done(&c, "proxy_send_local_response", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         uptr: i32,
         ulen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         tptr: i32,
         tlen: i32,
         timeout: i32,
         token_out: i32|
         -> i32 {
            let r = (|| {
                let cluster = mem::read_str(&mut c, uptr, ulen)?;
                let mut headers = Headers::deserialize(&mem::read(&mut c, hptr, hlen)?)
                    .ok_or(SERIALIZATION_FAILURE)?;
                let body = mem::read(&mut c, bptr, blen)?;
                let _trailers = mem::read(&mut c, tptr, tlen)?;
                // Envoy requires :method, :path and :authority, and a known cluster.
                for required in [":method", ":path", ":authority"] {
                    if headers.get(required).is_none_or(<[u8]>::is_empty) {
                        return Err(BAD_ARGUMENT);
                    }
                }
                // What Envoy's async client adds on the way to the cluster.
                envoy_call_headers(&mut headers, timeout as u32);
                let h = c.data();
                let token = {
                    let mut w = h.world.borrow_mut();
                    if !w.clusters.contains_key(&cluster) {
                        return Err(BAD_ARGUMENT);
                    }
                    let token = w.next_token;
                    w.next_token += 1;
                    let now = w.now_ms();
                    let answer = w
                        .clusters
                        .get(&cluster)
                        .cloned()
                        .map(|c| w.next_answer(&cluster, &c));
                    w.http_calls.push(HttpCall {
                        token,
                        vm: h.vm_index,
                        root_context: h.context(),
                        cluster,
                        headers,
                        body,
                        timeout_ms: timeout as u32 as u64,
                        dispatched_at_ms: now,
                        answered: false,
                        kind: CallKind::Http,
                        client_done_at_ms: Some(now),
                        replied_at_open: false,
                        answer,
                    });
                    token
                };
                mem::write_u32(&mut c, token_out, token)
            })();
            done(&c, "proxy_http_call", r)
        },
    )?;
    // A unary gRPC call: the service is a cluster name (Envoy also takes a
    // serialized GrpcService, which the harness does not parse).
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: C<'_>,
         cptr: i32,
         clen: i32,
         sptr: i32,
         slen: i32,
         mptr: i32,
         mlen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         timeout: i32,
         token_out: i32|
         -> i32 {
            let r = (|| {
                let where_to = [cptr, clen, sptr, slen, mptr, mlen, hptr, hlen];
                let mut start = GrpcStart::read(&mut c, CallKind::GrpcCall, where_to)?;
                start.message = mem::read(&mut c, bptr, blen)?;
                start.timeout_ms = timeout as u32 as u64;
                let token = start_grpc(c.data(), start)?;
                mem::write_u32(&mut c, token_out, token)
            })();
            done(&c, "proxy_grpc_call", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: C<'_>,
         cptr: i32,
         clen: i32,
         sptr: i32,
         slen: i32,
         mptr: i32,
         mlen: i32,
         hptr: i32,
         hlen: i32,
         token_out: i32|
         -> i32 {
            let r = (|| {
                let where_to = [cptr, clen, sptr, slen, mptr, mlen, hptr, hlen];
                let start = GrpcStart::read(&mut c, CallKind::GrpcStream, where_to)?;
                let token = start_grpc(c.data(), start)?;
                mem::write_u32(&mut c, token_out, token)
            })();
            done(&c, "proxy_grpc_stream", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: C<'_>, token: i32, ptr: i32, len: i32, end_stream: i32| -> i32 {
            let r = (|| {
                let message = mem::read(&mut c, ptr, len)?;
                let mut w = c.data().world.borrow_mut();
                let now = w.now_ms();
                let call = w
                    .open_calls_mut()
                    .find(|call| call.kind == CallKind::GrpcStream && call.token == token as u32)
                    .ok_or(NOT_FOUND)?;
                if call.client_done_at_ms.is_some() {
                    return Err(BAD_ARGUMENT);
                }
                call.body.extend_from_slice(&message);
                if end_stream != 0 {
                    call.client_done_at_ms = Some(now);
                }
                Ok(())
            })();
            done(&c, "proxy_grpc_send", r)
        },
    )?;
    // Envoy 1.40: cancel ends a call or stream without a callback (NotFound
    // for an unknown token); close ends a call, half-closes a stream
    // (BadArgument for an unknown token).
    linker.func_wrap("env", "proxy_grpc_cancel", |c: C<'_>, token: i32| -> i32 {
        let r = {
            let mut w = c.data().world.borrow_mut();
            let open = w
                .open_calls_mut()
                .find(|call| call.kind != CallKind::Http && call.token == token as u32)
                .map(|call| call.answered = true);
            w.settle_calls();
            open.ok_or(NOT_FOUND)
        };
        done(&c, "proxy_grpc_cancel", r)
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |c: C<'_>, token: i32| -> i32 {
        let r = {
            let mut w = c.data().world.borrow_mut();
            let now = w.now_ms();
            let open = w
                .open_calls_mut()
                .find(|call| call.kind != CallKind::Http && call.token == token as u32)
                .map(|call| match call.kind {
                    CallKind::GrpcStream => {
                        call.client_done_at_ms.get_or_insert(now);
                    }
                    _ => call.answered = true,
                });
            w.settle_calls();
            open.ok_or(BAD_ARGUMENT)
        };
        done(&c, "proxy_grpc_close", r)
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, code_out: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let (code, message) = match &c.data().grpc_event {
                Some(GrpcEvent::Close { status, detail }) => (*status, detail.clone()),
                _ => (0, String::new()),
            };
            let r = match mem::write_u32(&mut c, code_out, code) {
                Ok(()) => mem::give(&mut c, message.as_bytes(), ptr_out, size_out)?,
                e => e,
            };
            Ok(done(&c, "proxy_get_status", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, context: i32| -> i32 {
            let h = c.data_mut();
            let r = if h.contexts.contains_key(&(context as u32)) {
                h.effective_context = Some(context as u32);
                Ok(())
            } else {
                Err(BAD_ARGUMENT)
            };
            done(&c, "proxy_set_effective_context", r)
        },
    )?;
    linker.func_wrap("env", "proxy_done", |c: C<'_>| -> i32 {
        done(&c, "proxy_done", Ok(()))
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>,
         nptr: i32,
         nlen: i32,
         aptr: i32,
         alen: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let call = (|| {
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let args = mem::read(&mut c, aptr, alen)?;
                let f = crate::foreign::lookup(&name).ok_or(NOT_FOUND)?;
                f(c.data_mut(), &args)
            })();
            let r = match call {
                Ok(out) => mem::give(&mut c, &out, ptr_out, size_out)?,
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_call_foreign_function", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, nptr: i32, nlen: i32, id_out: i32| -> i32 {
            let r = (|| {
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let kind = match kind {
                    0 => MetricKind::Counter,
                    1 => MetricKind::Gauge,
                    2 => MetricKind::Histogram,
                    _ => return Err(BAD_ARGUMENT),
                };
                let id = c.data().world.borrow_mut().define_metric(kind, &name);
                mem::write_u32(&mut c, id_out, id)
            })();
            done(&c, "proxy_define_metric", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| -> i32 {
            let r = (|| {
                let mut w = c.data().world.borrow_mut();
                let m = w.metric_mut(id as u32).ok_or(NOT_FOUND)?;
                match m.kind {
                    // Envoy: counters only go up.
                    MetricKind::Counter if offset > 0 => m.value += offset,
                    MetricKind::Counter => return Err(BAD_ARGUMENT),
                    MetricKind::Gauge => m.value += offset,
                    MetricKind::Histogram => return Err(BAD_ARGUMENT),
                }
                Ok(())
            })();
            done(&c, "proxy_increment_metric", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> i32 {
            let r = (|| {
                let mut w = c.data().world.borrow_mut();
                let m = w.metric_mut(id as u32).ok_or(NOT_FOUND)?;
                match m.kind {
                    MetricKind::Counter => m.value += value,
                    MetricKind::Gauge => m.value = value,
                    MetricKind::Histogram => m.samples.push(value as u64),
                }
                Ok(())
            })();
            done(&c, "proxy_record_metric", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, out: i32| -> i32 {
            let r = (|| {
                let value = {
                    let mut w = c.data().world.borrow_mut();
                    let m = w.metric_mut(id as u32).ok_or(NOT_FOUND)?;
                    if m.kind == MetricKind::Histogram {
                        return Err(BAD_ARGUMENT);
                    }
                    m.value as u64
                };
                mem::write(&mut c, out, &value.to_le_bytes())
            })();
            done(&c, "proxy_get_metric", r)
        },
    )?;
    Ok(())
}

/// Envoy's async client marks a filter's call internal and tells the
/// cluster its budget.
fn envoy_call_headers(headers: &mut Headers, timeout_ms: u32) {
    headers.replace("x-envoy-internal", b"true");
    if timeout_ms > 0 {
        headers.replace(
            "x-envoy-expected-rq-timeout-ms",
            timeout_ms.to_string().as_bytes(),
        );
    }
}

/// A gRPC call or stream as a filter opens it.
struct GrpcStart {
    kind: CallKind,
    cluster: String,
    path: String,
    /// Serialized header map.
    metadata: Vec<u8>,
    message: Vec<u8>,
    timeout_ms: u64,
}

impl GrpcStart {
    /// Reads cluster, service, method and metadata (pointer, size each).
    fn read(c: &mut C<'_>, kind: CallKind, at: [i32; 8]) -> Result<Self, i32> {
        let cluster = mem::read_str(c, at[0], at[1])?;
        let service = mem::read_str(c, at[2], at[3])?;
        let method = mem::read_str(c, at[4], at[5])?;
        Ok(Self {
            kind,
            cluster,
            path: format!("/{service}/{method}"),
            metadata: mem::read(c, at[6], at[7])?,
            message: Vec::new(),
            timeout_ms: 0,
        })
    }
}

/// Records a gRPC call or stream to a known cluster; its token.
fn start_grpc(h: &Host, start: GrpcStart) -> Result<u32, i32> {
    let metadata = Headers::deserialize(&start.metadata).ok_or(SERIALIZATION_FAILURE)?;
    // As the cluster receives it from Envoy's gRPC client.
    let mut headers = Headers(vec![
        (":method".into(), b"POST".to_vec()),
        (":path".into(), start.path.into_bytes()),
        (":authority".into(), start.cluster.clone().into_bytes()),
        ("te".into(), b"trailers".to_vec()),
    ]);
    if start.timeout_ms > 0 {
        headers.add("grpc-timeout", format!("{}m", start.timeout_ms).as_bytes());
    }
    headers.add("content-type", b"application/grpc");
    headers.0.extend(metadata.0);
    envoy_call_headers(&mut headers, start.timeout_ms as u32);
    let mut w = h.world.borrow_mut();
    // Envoy 1.40 answers an unknown cluster with ParseFailure.
    let Some(cluster) = w.clusters.get(&start.cluster).cloned() else {
        return Err(PARSE_FAILURE);
    };
    let unary = start.kind == CallKind::GrpcCall;
    let next = if unary {
        &mut w.next_grpc_call
    } else {
        &mut w.next_grpc_stream
    };
    let token = *next;
    *next += 2;
    let now = w.now_ms();
    let answer = Some(w.next_answer(&start.cluster, &cluster));
    w.http_calls.push(HttpCall {
        token,
        vm: h.vm_index,
        root_context: h.context(),
        cluster: start.cluster,
        headers,
        body: start.message,
        timeout_ms: start.timeout_ms,
        dispatched_at_ms: now,
        answered: false,
        kind: start.kind,
        client_done_at_ms: unary.then_some(now),
        replied_at_open: false,
        answer,
    });
    Ok(token)
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    v.strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// Envoy answers a gRPC caller's local reply as a trailers-only gRPC
/// response: HTTP 200, the gRPC status (given, or mapped from the HTTP
/// status) and the body as `grpc-message`. A non-gRPC caller never sees a
/// gRPC status.
fn grpc_local_reply(http: Response, grpc_status: i32) -> Response {
    let code = if (0..=16).contains(&grpc_status) {
        grpc_status as u32
    } else {
        match http.status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502 | 503 | 504 => 14,
            _ => 2,
        }
    };
    let mut r = Response::new(200);
    for (k, v) in &http.headers.0 {
        if k != ":status" && k != "content-type" && k != "content-length" {
            r.headers.add(k, v);
        }
    }
    r.headers.replace("content-type", b"application/grpc");
    r.headers
        .replace("grpc-status", code.to_string().as_bytes());
    if !http.body.is_empty() {
        let message: String = http
            .body
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) && b != b'%' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        r.headers.replace("grpc-message", message.as_bytes());
    }
    r
}

fn stream_flag(
    h: &Host,
    f: impl FnOnce(&mut crate::vm::StreamMaps) -> Result<(), i32>,
) -> Result<(), i32> {
    let stream = match h.contexts.get(&h.context()) {
        Some(Ctx::Stream(id)) => *id,
        _ => return Err(NOT_FOUND),
    };
    let mut streams = h.streams.borrow_mut();
    f(streams.get_mut(&stream).ok_or(NOT_FOUND)?)
}

/// Records a log line; a critical one is kept as the likely panic message.
pub(crate) fn log(h: &mut Host, level: LogLevel, message: String) {
    if level == LogLevel::Critical {
        h.last_critical = Some(message.clone());
    }
    let plugin = h.plugin_name.clone();
    h.world.borrow_mut().logs.push(crate::model::LogEntry {
        level,
        message,
        plugin,
    });
}
