//! Properties (`proxy_get_property`) with Envoy's paths and encodings:
//! strings as bytes, integers as 8-byte little-endian, booleans as one byte.

use crate::abi::{BAD_ARGUMENT, NOT_FOUND};
use crate::model::{Connection, Tls};
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
        ["request", "protocol"] => stream.map(|s| {
            if s.http2 {
                b"HTTP/2".to_vec()
            } else {
                b"HTTP/1.1".to_vec()
            }
        }),
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
        ["source" | "destination", _] | ["connection", _] => {
            connection(stream.map(|s| (&s.connection, s.connection_id))?, &segs)
        }
        _ => None,
    }
}

/// `source.*`, `destination.*` and `connection.*`, as Envoy reports them
/// (TLS fields are absent on a plaintext connection, SNI is then empty).
fn connection(c: (&Connection, u64), segs: &[&str]) -> Option<Vec<u8>> {
    let (c, id) = c;
    let port = |address: &str| {
        let port = address.rsplit_once(':')?.1.parse::<u64>().ok()?;
        Some(int(port))
    };
    let tls = c.tls.as_ref();
    let text = |v: Option<&String>| v.map(|v| v.clone().into_bytes());
    match segs {
        ["source", "address"] => Some(c.source.clone().into_bytes()),
        ["source", "port"] => port(&c.source),
        ["destination", "address"] => Some(c.destination.clone().into_bytes()),
        ["destination", "port"] => port(&c.destination),
        ["connection", "id"] => Some(int(id)),
        ["connection", "mtls"] => Some(vec![u8::from(tls.is_some_and(Tls::mtls))]),
        ["connection", "requested_server_name"] => {
            Some(tls.map(|t| t.sni.clone()).unwrap_or_default().into_bytes())
        }
        ["connection", "tls_version"] => text(tls.map(|t| &t.version)),
        ["connection", "uri_san_peer_certificate"] => text(tls?.peer_uri_san.as_ref()),
        ["connection", "dns_san_peer_certificate"] => text(tls?.peer_dns_san.as_ref()),
        ["connection", "subject_peer_certificate"] => text(tls?.peer_subject.as_ref()),
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
