//! Buffers: bodies, call and gRPC answers, configurations.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
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
    Ok(())
}
