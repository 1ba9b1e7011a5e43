//! HTTP calls to clusters, and the status of their answers.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
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
    Ok(())
}

/// Envoy's async client marks a filter's call internal and tells the
/// cluster its budget.
pub(super) fn envoy_call_headers(headers: &mut Headers, timeout_ms: u32) {
    headers.replace("x-envoy-internal", b"true");
    if timeout_ms > 0 {
        headers.replace(
            "x-envoy-expected-rq-timeout-ms",
            timeout_ms.to_string().as_bytes(),
        );
    }
}
