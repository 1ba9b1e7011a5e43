//! gRPC calls and streams.

use super::http_calls::envoy_call_headers;
use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
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
    Ok(())
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

pub(super) fn is_grpc_content_type(v: &[u8]) -> bool {
    v.strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// Envoy answers a gRPC caller's local reply as a trailers-only gRPC
/// response: HTTP 200, the gRPC status (given, or mapped from the HTTP
/// status) and the body as `grpc-message`. A non-gRPC caller never sees a
/// gRPC status.
pub(super) fn grpc_local_reply(http: Response, grpc_status: i32) -> Response {
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
