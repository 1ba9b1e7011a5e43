//! Stream control: continue, close, and the local reply.

use super::grpc::{grpc_local_reply, is_grpc_content_type};
use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
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
    Ok(())
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
