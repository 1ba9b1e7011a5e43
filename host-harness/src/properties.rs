//! Properties (`proxy_get_property`) with Envoy's paths and encodings:
//! strings as bytes, integers as 8-byte little-endian, booleans as one byte.

use crate::abi::{BAD_ARGUMENT, NOT_FOUND};
use crate::vm::Host;

fn int(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Path segments are NUL-separated in the ABI.
fn segments(path: &[u8]) -> Vec<String> {
    path.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

pub fn get(h: &Host, path: &[u8]) -> Option<Vec<u8>> {
    let segs = segments(path);
    let joined = segs.join(".");
    let streams = h.streams.borrow();
    let stream = h.stream_of_context().and_then(|id| streams.get(&id));
    if let Some(v) = stream.and_then(|s| s.properties.get(&joined)) {
        return Some(v.clone());
    }
    if let Some(v) = h.world.borrow().properties.get(&joined) {
        return Some(v.clone());
    }
    let header =
        |name: &str| stream.and_then(|s| s.request_headers.as_ref()?.get(name).map(<[u8]>::to_vec));
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["plugin_name"] => Some(h.plugin_name.clone().into_bytes()),
        ["plugin_root_id"] => Some(h.root_id.clone().into_bytes()),
        ["plugin_vm_id"] => Some(h.vm_id.clone().into_bytes()),
        ["request", "path"] => header(":path"),
        ["request", "url_path"] => header(":path").map(|p| crate::properties::url_path(&p)),
        ["request", "host"] => header(":authority"),
        ["request", "method"] => header(":method"),
        ["request", "scheme"] => header(":scheme"),
        ["request", "id"] => header("x-request-id"),
        ["request", "referer"] => header("referer"),
        ["request", "useragent"] => header("user-agent"),
        ["request", "protocol"] => stream.map(|_| b"HTTP/1.1".to_vec()),
        ["request", "headers", name] => header(name),
        ["request", "time"] => stream.map(|s| int(s.started_at_ns)),
        ["request", "size"] => stream.map(|s| int(s.request_body.len() as u64)),
        ["response", "code"] => stream
            .and_then(|s| {
                s.response_headers
                    .as_ref()?
                    .get(":status")
                    .map(<[u8]>::to_vec)
            })
            .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
            .map(int),
        ["response", "headers", name] => {
            stream.and_then(|s| s.response_headers.as_ref()?.get(name).map(<[u8]>::to_vec))
        }
        ["response", "size"] => stream.map(|s| int(s.response_body.len() as u64)),
        ["source", "address"] => stream.map(|_| b"127.0.0.1:54321".to_vec()),
        ["source", "port"] => stream.map(|_| int(54321)),
        ["destination", "address"] => stream.map(|_| b"127.0.0.1:10000".to_vec()),
        ["destination", "port"] => stream.map(|_| int(10000)),
        ["connection", "mtls"] => stream.map(|_| vec![0]),
        ["connection", "id"] => stream.map(|_| int(1)),
        _ => None,
    }
}

/// Envoy's `set_property` stores filter state on the stream (or on the VM's
/// root); it can then be read back by any filter of the stream.
pub fn set(h: &mut Host, path: &[u8], value: Vec<u8>) -> Result<(), i32> {
    let key = segments(path).join(".");
    if key.is_empty() {
        return Err(BAD_ARGUMENT);
    }
    match h.stream_of_context() {
        Some(id) => {
            let mut streams = h.streams.borrow_mut();
            streams
                .get_mut(&id)
                .ok_or(NOT_FOUND)?
                .properties
                .insert(key, value);
        }
        None => {
            h.world.borrow_mut().properties.insert(key, value);
        }
    }
    Ok(())
}

pub fn url_path(path: &[u8]) -> Vec<u8> {
    path.split(|&b| b == b'?')
        .next()
        .unwrap_or_default()
        .to_vec()
}
