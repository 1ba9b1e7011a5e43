//! A raw HTTP/1.1 client: the request line and headers go on the wire byte
//! for byte. (ureq, like every URL library, resolves `..`, `\` and escapes
//! before sending, which is exactly what path tests must not do; it also
//! folds repeated headers.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response as the client received it.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET target` to `127.0.0.1:port` with `headers` (repeats allowed)
/// on a fresh connection and reads the answer to the end.
pub fn get(port: u16, target: &[u8], headers: &[(&str, &str)]) -> RawResponse {
    send(port, "GET", target, headers)
}

/// As [`get`], with any method (and no body).
pub fn send(port: u16, method: &str, target: &[u8], headers: &[(&str, &str)]) -> RawResponse {
    try_send(port, method, target, headers).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`send`], with a failure to connect, send or read as an `Err`.
pub fn try_send(
    port: u16,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
) -> Result<RawResponse, String> {
    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n");
    for (k, v) in headers {
        request.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect to Envoy: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("read timeout: {e}"))?;
    stream
        .write_all(&request)
        .map_err(|e| format!("send request: {e}"))?;
    let raw = read_response(&mut stream).map_err(|e| format!("read response: {e}"))?;
    parse(&raw).ok_or_else(|| format!("unreadable response: {:?}", String::from_utf8_lossy(&raw)))
}

/// Reads one response: up to its `content-length` when it gives one (Envoy
/// may wait up to its delayed-close timeout before closing), else to the end.
fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length {
                while raw.len() < end + 4 + length {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&chunk[..n]);
                }
                return Ok(raw);
            }
            stream.read_to_end(&mut raw)?;
            return Ok(raw);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

fn parse(raw: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
