//! Runs a scenario through real Envoy: a generated bootstrap with the same
//! chain, real upstream servers that answer as the scenario's clusters and
//! record what they received, and a raw HTTP/1.1 client that sends exactly
//! the scenario's headers. The result is the same [`Observation`]s the
//! harness produces, so `diff` can compare the two.

use crate::model::Cluster;
use crate::scenario::{Observation, Scenario};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Envoy that `--envoy` runs use: `$ENVOY`, else `.venv/bin/envoy` here
/// or above, else `envoy` on the `PATH` (see [`envoy_launcher::envoy_binary`]).
pub use envoy_launcher::envoy_binary;

/// A request as an upstream server received it.
#[derive(Debug, Clone)]
struct Seen {
    cluster: String,
    headers: Vec<(String, String)>,
    body: String,
    trailers: Vec<(String, String)>,
}

/// One real upstream per cluster: answers as configured (each request takes
/// the next of the cluster's `first` answers, then its own), records
/// requests. hyper on a tokio runtime of its own, so a slow answer never
/// holds up a retry that arrives meanwhile.
struct Upstream {
    answer: Arc<Mutex<(Cluster, usize)>>,
    /// A refused cluster's port, held bound (never listening) for the run so
    /// that no other test's server can take it.
    _refusing: Option<socket2::Socket>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(
        name: &str,
        cluster: Cluster,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) -> Result<(Self, u16), String> {
        if cluster.refused {
            let (socket, port) = refusing_port()?;
            return Ok((
                Self {
                    answer: Arc::new(Mutex::new((cluster, 0))),
                    _refusing: Some(socket),
                    stop: None,
                    thread: None,
                },
                port,
            ));
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let answer = Arc::new(Mutex::new((cluster, 0)));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (a, n) = (answer.clone(), name.to_owned());
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(serve_upstream(listener, n, a, seen, stopped));
        });
        Ok((
            Self {
                answer,
                _refusing: None,
                stop: Some(stop),
                thread: Some(thread),
            },
            port,
        ))
    }

    /// Answers from now on as `cluster` (its `first` answers start over).
    fn set_answer(&self, cluster: Cluster) {
        *self.answer.lock().expect("lock") = (cluster, 0);
    }
}

async fn serve_upstream(
    listener: std::net::TcpListener,
    name: String,
    answer: Arc<Mutex<(Cluster, usize)>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let (name, answer, seen) = (name.clone(), answer.clone(), seen.clone());
        let grpc = answer.lock().expect("lock").0.grpc;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                upstream_answer(req, name.clone(), answer.clone(), seen.clone())
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if grpc {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
    }
}

/// A reset: the service fails, so hyper drops the connection unanswered.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset")
    }
}

impl std::error::Error for Reset {}

/// How long a sender waits between body chunks, so Envoy reads each apart
/// (one body callback per read).
const CHUNK_GAP: Duration = Duration::from_millis(100);

type Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, std::convert::Infallible>;

/// A body sent in chunks, `CHUNK_GAP` apart, then any trailers.
fn chunked_body(chunks: Vec<String>, trailers: Option<hyper::HeaderMap>) -> Body {
    use http_body_util::BodyExt;
    let data =
        futures_util::stream::unfold((chunks.into_iter(), true), |(mut it, first)| async move {
            let chunk = it.next()?;
            if !first {
                tokio::time::sleep(CHUNK_GAP).await;
            }
            let frame = hyper::body::Frame::data(hyper::body::Bytes::from(chunk.into_bytes()));
            Some((Ok(frame), (it, false)))
        });
    let trailers =
        futures_util::stream::iter(trailers.map(|t| Ok(hyper::body::Frame::trailers(t))));
    http_body_util::StreamBody::new(futures_util::StreamExt::chain(data, trailers)).boxed()
}

async fn upstream_answer(
    req: hyper::Request<hyper::body::Incoming>,
    name: String,
    answer: Arc<Mutex<(Cluster, usize)>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<Body>, Reset> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let mut headers = vec![
        (":method".to_owned(), parts.method.as_str().to_owned()),
        (
            ":path".to_owned(),
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        ),
    ];
    // HTTP/2 carries the authority in the URI, HTTP/1 in `Host`.
    if let Some(a) = parts.uri.authority() {
        headers.push((":authority".to_owned(), a.as_str().to_owned()));
    }
    for (k, v) in &parts.headers {
        let k = k.as_str().to_ascii_lowercase();
        headers.push((
            if k == "host" { ":authority".into() } else { k },
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    let c = {
        let mut a = answer.lock().expect("lock");
        let (cluster, hits) = &mut *a;
        *hits += 1;
        cluster
            .first
            .get(*hits - 1)
            .cloned()
            .unwrap_or_else(|| cluster.clone())
    };
    // The whole request, recorded once the caller has finished sending.
    let record = async move {
        let (body, trailers) = match body.collect().await {
            Ok(collected) => {
                let trailers = collected.trailers().map(text_pairs).unwrap_or_default();
                let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
                (body, trailers)
            }
            Err(_) => (String::new(), Vec::new()),
        };
        seen.lock().expect("lock").push(Seen {
            cluster: name,
            headers,
            body,
            trailers,
        });
    };
    let caller_done = if c.grpc && c.reply_at_open && !c.reset {
        let (done, caller_done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            record.await;
            let _ = done.send(());
        });
        Some(caller_done)
    } else {
        record.await;
        None
    };
    if c.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(c.delay_ms)).await;
    }
    if c.reset {
        return Err(Reset);
    }
    if c.grpc {
        return Ok(grpc_answer(&c, caller_done));
    }
    let declared = c.trailer_names();
    let body = if c.chunks.is_empty() && c.trailers.is_empty() {
        http_body_util::Full::new(hyper::body::Bytes::from(c.body.into_bytes())).boxed()
    } else {
        let chunks = if c.chunks.is_empty() {
            Some(c.body).filter(|b| !b.is_empty()).into_iter().collect()
        } else {
            c.chunks
        };
        let mut trailers = hyper::HeaderMap::new();
        append_headers(&mut trailers, &c.trailers);
        chunked_body(chunks, (!trailers.is_empty()).then_some(trailers))
    };
    let mut response = hyper::Response::new(body);
    *response.status_mut() =
        hyper::StatusCode::from_u16(c.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    append_headers(response.headers_mut(), &c.headers);
    // hyper sends only the trailers a `trailer` header declares (and only
    // to a request that accepts them with `te: trailers`).
    if let Some(names) = declared {
        if !response.headers().contains_key(hyper::header::TRAILER) {
            append_headers(response.headers_mut(), &[("trailer".into(), names)]);
        }
    }
    Ok(response)
}

/// A header map as lower-case name and text value pairs.
fn text_pairs(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Adds a cluster's configured headers (those hyper cannot carry are skipped).
fn append_headers(to: &mut hyper::HeaderMap, headers: &[(String, String)]) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            to.append(k, v);
        }
    }
}

/// A gRPC reply, after the caller's last message: the cluster's `headers`
/// as initial metadata, its messages framed (flag, length, bytes) — `body`
/// for a unary call, `chunks` for a stream; `body` only when the status is
/// OK — then trailers with the status (once `caller_done` fires, if given:
/// a service that replies while the caller still sends).
fn grpc_answer(
    c: &Cluster,
    caller_done: Option<tokio::sync::oneshot::Receiver<()>>,
) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    let mut frames = Vec::new();
    let messages: Vec<&String> = if c.chunks.is_empty() {
        std::iter::once(&c.body)
            .filter(|_| c.grpc_status == 0)
            .collect()
    } else {
        c.chunks.iter().collect()
    };
    for m in messages {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
        framed.extend_from_slice(m.as_bytes());
        frames.push(hyper::body::Frame::data(hyper::body::Bytes::from(framed)));
    }
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", c.grpc_status.into());
    if let Ok(m) = hyper::header::HeaderValue::from_str(&c.grpc_message) {
        if !c.grpc_message.is_empty() {
            trailers.insert("grpc-message", m);
        }
    }
    let status = futures_util::stream::once(async move {
        if let Some(done) = caller_done {
            let _ = done.await;
        }
        Ok(hyper::body::Frame::trailers(trailers))
    });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter(frames.into_iter().map(Ok)),
        status,
    );
    let mut response = hyper::Response::new(http_body_util::StreamBody::new(stream).boxed());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    append_headers(response.headers_mut(), &c.headers);
    response
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port that refuses connections: bound, never listening. (A
/// port from a listener that was dropped is free for the next bind anywhere
/// on the machine, so a parallel test's server could be answering on it.)
fn refusing_port() -> Result<(socket2::Socket, u16), String> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).map_err(|e| e.to_string())?;
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or("no local address")?;
    Ok((socket, port))
}

fn cluster_json(name: &str, port: u16, grpc: bool) -> Value {
    let mut cluster = json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}
    });
    // HTTP/1 trailers pass only where enabled, as on the listener.
    let protocol = if grpc {
        json!({"http2_protocol_options": {}})
    } else {
        json!({"http_protocol_options": {"enable_trailers": true}})
    };
    cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": protocol
        }
    });
    cluster
}

/// The bootstrap Envoy runs the scenario with.
fn bootstrap(s: &Scenario, listener: u16, admin: u16, ports: &BTreeMap<String, u16>) -> Value {
    let mut routes: Vec<Value> = s
        .routes
        .iter()
        .map(|r| json!({"match": {"prefix": "/", "headers": [{"name": r.header, "string_match": {"exact": r.value}}]}, "route": {"cluster": r.cluster}}))
        .collect();
    routes.push(json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}));
    let mut filters: Vec<Value> = s
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let path = s.wasm_path(f);
            let name = f.name.clone().unwrap_or_else(|| path.file_stem().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default());
            let config = String::from_utf8_lossy(&Scenario::config_bytes(f)).into_owned();
            let policy = match f.failure_policy {
                crate::FailurePolicy::FailClosed => "FAIL_CLOSED",
                crate::FailurePolicy::FailOpen => "FAIL_OPEN",
            };
            json!({
                "name": format!("harness.filter{i}"),
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": name,
                        "root_id": f.root_id.clone().unwrap_or_else(|| name.clone()),
                        "failure_policy": policy,
                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
                        "vm_config": {"vm_id": f.vm_id.clone().unwrap_or_else(|| name.clone()), "runtime": "envoy.wasm.runtime.v8",
                                      "code": {"local": {"filename": path.canonicalize().unwrap_or(path).to_string_lossy()}}}
                    }
                }
            })
        })
        .collect();
    filters.push(json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
    let services: Vec<Value> = s
        .services
        .iter()
        .zip(s.service_names())
        .map(|(svc, name)| {
            let f = svc.as_plugin();
            let path = s.wasm_path(&f);
            let config = String::from_utf8_lossy(&Scenario::config_bytes(&f)).into_owned();
            json!({
                "name": "envoy.bootstrap.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
                    "singleton": svc.singleton,
                    "config": {
                        "name": name,
                        "root_id": f.root_id.clone().unwrap_or_else(|| name.clone()),
                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
                        "vm_config": {"vm_id": f.vm_id.clone().unwrap_or_else(|| name.clone()), "runtime": "envoy.wasm.runtime.v8",
                                      "code": {"local": {"filename": path.canonicalize().unwrap_or(path).to_string_lossy()}}}
                    }
                }
            })
        })
        .collect();
    json!({
        "bootstrap_extensions": services,
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "harness", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "harness",
                    "http_protocol_options": {"enable_trailers": true},
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                    "http_filters": filters}}]}]}],
            "clusters": ports.iter().map(|(n, p)| cluster_json(n, *p, s.clusters.get(n).is_some_and(|c| c.grpc))).collect::<Vec<_>>()
        }
    })
}

/// A response as a client received it.
#[derive(Debug, Default)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

/// A request as the client sends it: a `chunked` body goes chunk-encoded,
/// `CHUNK_GAP` apart, then its trailers.
#[derive(Debug, Default)]
struct RawRequest<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [(String, String)],
    chunks: &'a [&'a [u8]],
    chunked: bool,
    trailers: &'a [(String, String)],
}

/// Reads `name: value` lines up to an empty line.
fn read_fields(reader: &mut impl BufRead) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(out);
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(out);
        }
        if let Some((k, v)) = l.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
}

/// A minimal HTTP/1.1 exchange on a fresh connection: the request exactly
/// as given.
fn http(port: u16, req: &RawRequest<'_>) -> Result<RawResponse, String> {
    let RawRequest {
        method,
        path,
        headers,
        chunks,
        chunked,
        trailers,
    } = *req;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let length: usize = chunks.iter().map(|c| c.len()).sum();
    if chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else if length > 0 {
        head.push_str(&format!("content-length: {length}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    for (i, chunk) in chunks.iter().enumerate() {
        if !chunked {
            stream.write_all(chunk).map_err(|e| e.to_string())?;
            continue;
        }
        if i > 0 {
            std::thread::sleep(CHUNK_GAP);
        }
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        stream.write_all(&framed).map_err(|e| e.to_string())?;
    }
    if chunked {
        let mut last = b"0\r\n".to_vec();
        for (k, v) in trailers {
            last.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        last.extend_from_slice(b"\r\n");
        stream.write_all(&last).map_err(|e| e.to_string())?;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut out = RawResponse {
        status,
        headers: read_fields(&mut reader)?,
        ..RawResponse::default()
    };
    let chunked = out
        .headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                out.trailers = read_fields(&mut reader)?;
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            out.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let _ = reader.read_to_end(&mut out.body);
    }
    Ok(out)
}

/// The same exchange over HTTP/2 with prior knowledge, as a gRPC client
/// makes it: the last DATA frame carries END_STREAM (or the trailers do).
fn http2(port: u16, req: &RawRequest<'_>) -> Result<RawResponse, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(http2_exchange(port, req))
}

async fn http2_exchange(port: u16, req: &RawRequest<'_>) -> Result<RawResponse, String> {
    let e = |e: h2::Error| e.to_string();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut client, connection) = h2::client::handshake(tcp).await.map_err(e)?;
    tokio::spawn(connection);
    let authority = req
        .headers
        .iter()
        .find(|(k, _)| k == "host")
        .map_or("example.com", |(_, v)| v.as_str());
    let mut request = hyper::Request::builder()
        .method(req.method)
        .uri(format!("http://{authority}{}", req.path))
        .body(())
        .map_err(|e| e.to_string())?;
    append_headers(
        request.headers_mut(),
        &req.headers
            .iter()
            .filter(|(k, _)| k != "host")
            .cloned()
            .collect::<Vec<_>>(),
    );
    let no_body = req.chunks.is_empty() && req.trailers.is_empty();
    let (response, mut sending) = client.send_request(request, no_body).map_err(e)?;
    for (i, chunk) in req.chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(CHUNK_GAP).await;
        }
        let last = i + 1 == req.chunks.len() && req.trailers.is_empty();
        sending
            .send_data(hyper::body::Bytes::copy_from_slice(chunk), last)
            .map_err(e)?;
    }
    if !req.trailers.is_empty() {
        let mut trailers = hyper::HeaderMap::new();
        append_headers(&mut trailers, req.trailers);
        sending.send_trailers(trailers).map_err(e)?;
    }
    let response = response.await.map_err(e)?;
    let (parts, mut body) = response.into_parts();
    let mut out = RawResponse {
        status: parts.status.as_u16(),
        headers: text_pairs(&parts.headers),
        ..RawResponse::default()
    };
    while let Some(data) = body.data().await {
        let data = data.map_err(e)?;
        let _ = body.flow_control().release_capacity(data.len());
        out.body.extend_from_slice(&data);
    }
    out.trailers = body
        .trailers()
        .await
        .map_err(e)?
        .as_ref()
        .map(text_pairs)
        .unwrap_or_default();
    Ok(out)
}

fn wasm_metrics(envoy: &envoy_launcher::Envoy) -> BTreeMap<String, i64> {
    let Some((_, stats)) = envoy.admin_get("/stats?format=json&filter=wasmcustom") else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_str(&stats).unwrap_or_default();
    v["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.strip_prefix("wasmcustom.")?.to_owned(),
                s["value"].as_i64()?,
            ))
        })
        .collect()
}

/// `line` with each number (digits, with a decimal fraction if any) as `#`:
/// Envoy's clock has nanoseconds where the virtual one has whole seconds.
fn mask_numbers(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        out.push('#');
        while let Some(&n) = chars.peek() {
            let fraction = n == '.' && out.ends_with('#');
            if !(n.is_ascii_digit() || fraction) {
                break;
            }
            chars.next();
            if fraction && !chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('.');
                break;
            }
        }
    }
    out
}

/// Wasm log messages in Envoy's log, with the plugin that wrote each:
/// `... wasm log <plugin> <root> <vm>: message`.
fn wasm_logs(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_wasm_message = false;
    for line in text.lines() {
        if let Some(i) = line.find(" wasm log ") {
            let rest = &line[i + 10..];
            in_wasm_message = false;
            if let Some(j) = rest.find(": ") {
                let plugin = rest[..j].split(' ').next().unwrap_or_default();
                out.push((plugin.to_owned(), rest[j + 2..].to_owned()));
                in_wasm_message = true;
            }
        } else if line.starts_with('[') {
            in_wasm_message = false;
        } else if in_wasm_message {
            // A multi-line message continues without Envoy's prefix.
            if let Some((_, last)) = out.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        }
    }
    out
}

/// Waits until Envoy's log has been quiet for a moment (at most 3 s), so the
/// lines a filter writes in `on_log`, after the response, are all in.
fn wait_for_quiet_log(envoy: &envoy_launcher::Envoy) {
    const QUIET: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last_len = envoy.log_len();
    let mut last_change = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let len = envoy.log_len();
        if len != last_len {
            (last_len, last_change) = (len, Instant::now());
        } else if last_change.elapsed() >= QUIET {
            return;
        }
    }
}

/// Runs every request of `s` through real Envoy ([`envoy_binary`]), in order.
pub fn run(s: &Scenario) -> Result<Vec<Observation>, String> {
    if let Some(r) = s.requests.iter().find(|r| r.connection.is_some()) {
        return Err(format!(
            "request {:?} sets `connection`, which only the harness can simulate (Envoy's is the real socket)",
            r.name
        ));
    }
    // One server per cluster is either there or not.
    let overrides = s.requests.iter().filter_map(|r| r.upstream.as_ref());
    let refused_answer = s
        .clusters
        .values()
        .chain([&s.upstream])
        .flat_map(|c| &c.first)
        .chain(overrides)
        .any(|c| c.refused || c.first.iter().any(|f| f.refused));
    if refused_answer {
        return Err("`refused` can be set for a whole cluster only (not in `first` or a request's `upstream`) to run in Envoy".into());
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut servers = BTreeMap::new();
    let mut ports = BTreeMap::new();
    let mut all = s.clusters.clone();
    all.insert("upstream".into(), s.upstream.clone());
    for (name, c) in &all {
        let (u, port) = Upstream::start(name, c.clone(), seen.clone())?;
        servers.insert(name.clone(), u);
        ports.insert(name.clone(), port);
    }
    // Envoy picks its own ports (see envoy_launcher); every host call logged.
    let envoy = envoy_launcher::Launch::new()
        .component_log_level("wasm:trace")
        .start(&bootstrap(s, 0, 0, &ports).to_string())?;
    let listener = envoy.port;
    let mut out = Vec::new();
    let started = Instant::now();
    // Services' lines are those logged between one request's start and the
    // next's (from Envoy's readiness for the first): Envoy starts each plugin
    // twice (a configuration canary, then the real VM), the harness once,
    // so what a service logs while starting is not compared.
    let services = s.service_names();
    let mut service_mark = envoy.log_len();
    for entry in &s.requests {
        if let Some(at) = entry.at_ms {
            let elapsed = started.elapsed().as_millis() as u64;
            if at > elapsed {
                std::thread::sleep(Duration::from_millis(at - elapsed));
            }
        }
        // As in the harness: each request starts the route's answers afresh.
        servers["upstream"]
            .set_answer(entry.upstream.clone().unwrap_or_else(|| s.upstream.clone()));
        let req = Scenario::request(entry);
        let get = |k: &str| req.headers.get_str(k).unwrap_or_default();
        let headers: Vec<(String, String)> =
            std::iter::once(("host".to_owned(), get(":authority")))
                .chain(
                    req.headers
                        .0
                        .iter()
                        .filter(|(k, _)| !k.starts_with(':'))
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())),
                )
                .collect();
        let (log_mark, seen_mark) = (envoy.log_len(), seen.lock().expect("lock").len());
        let service_logs: Vec<String> = {
            let text = envoy.logs();
            let lines = wasm_logs(text.get(service_mark..log_mark).unwrap_or_default())
                .into_iter()
                .filter(|(plugin, _)| services.contains(plugin))
                .map(|(_, m)| m)
                .collect();
            service_mark = log_mark;
            lines
        };
        let chunks =
            crate::flow::Flow::chunks(req.body.as_deref().unwrap_or_default(), &req.chunk_sizes);
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let t0 = Instant::now();
        let trailers: Vec<(String, String)> = req
            .trailers
            .iter()
            .flat_map(|t| &t.0)
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let (method, path) = (get(":method"), get(":path"));
        let raw = RawRequest {
            method: &method,
            path: &path,
            headers: &headers,
            chunks: &chunks,
            // HTTP/1 carries trailers only in a chunked body.
            chunked: !req.chunk_sizes.is_empty() || req.trailers.is_some(),
            trailers: &trailers,
        };
        let result = if req.http2 {
            http2(listener, &raw)
        } else {
            http(listener, &raw)
        };
        let duration_ms = t0.elapsed().as_millis() as u64;
        wait_for_quiet_log(&envoy);
        let (status, response_headers, body, response_trailers) = match result {
            Ok(r) => (
                Some(r.status),
                r.headers,
                String::from_utf8_lossy(&r.body).into_owned(),
                r.trailers,
            ),
            Err(_) => (None, Vec::new(), String::new(), Vec::new()),
        };
        // The routed request carries Envoy's x-request-id; a filter's own HTTP calls do not.
        let (upstream, upstream_attempts) = {
            let seen = seen.lock().expect("lock");
            let routed = |r: &&Seen| r.headers.iter().find(|(k, _)| k == "x-request-id").cloned();
            let first = seen[seen_mark..]
                .iter()
                .find(|r| routed(r).is_some())
                .cloned();
            let id = first.as_ref().and_then(|f| routed(&f));
            let attempts = seen[seen_mark..]
                .iter()
                .filter(|r| id.is_some() && routed(r) == id)
                .count() as u32;
            (first, attempts)
        };
        // Everything else the clusters received: the filters' calls.
        let calls = seen.lock().expect("lock")[seen_mark..]
            .iter()
            .filter(|r| !r.headers.iter().any(|(k, _)| k == "x-request-id"))
            .map(|r| (r.cluster.clone(), r.headers.clone()))
            .collect();
        let logs: Vec<String> = wasm_logs(&envoy.logs_since(log_mark))
            .into_iter()
            .filter(|(plugin, _)| !services.contains(plugin))
            .map(|(_, m)| m)
            .collect();
        out.push(Observation {
            name: entry.name.clone(),
            status,
            upstream_reached: upstream.is_some(),
            upstream_cluster: upstream.as_ref().map(|u| u.cluster.clone()),
            calls,
            upstream_body: upstream
                .as_ref()
                .map(|u| u.body.clone())
                .unwrap_or_default(),
            upstream_trailers: upstream
                .as_ref()
                .map(|u| u.trailers.clone())
                .unwrap_or_default(),
            upstream_headers: upstream.map(|u| u.headers).unwrap_or_default(),
            upstream_attempts,
            response_headers,
            body,
            response_trailers,
            logs,
            service_logs,
            metrics: wasm_metrics(&envoy),
            duration_ms,
        });
    }
    Ok(out)
}

/// Headers that differ between any two runs or transports, not by filter behaviour.
pub const VOLATILE_HEADERS: &[&str] = &[
    ":scheme",
    "date",
    "server",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-request-id",
    "x-envoy-upstream-service-time",
    "content-type",
];

/// Every difference between a harness run and an Envoy run.
pub fn differences(harness: &[Observation], envoy: &[Observation]) -> Vec<String> {
    let mut out = Vec::new();
    // A sorted multiset: repeated headers count, transport order does not.
    let keep = |h: &[(String, String)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = h
            .iter()
            .filter(|(k, _)| !VOLATILE_HEADERS.contains(&k.as_str()))
            .cloned()
            .collect();
        v.sort();
        v
    };
    for (h, e) in harness.iter().zip(envoy) {
        let mut d = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{}: {what}: harness {a}, envoy {b}", h.name));
            }
        };
        d(
            "status",
            format!("{:?}", h.status),
            format!("{:?}", e.status),
        );
        d(
            "upstream_reached",
            h.upstream_reached.to_string(),
            e.upstream_reached.to_string(),
        );
        d(
            "upstream_attempts",
            h.upstream_attempts.to_string(),
            e.upstream_attempts.to_string(),
        );
        d(
            "upstream_cluster",
            format!("{:?}", h.upstream_cluster),
            format!("{:?}", e.upstream_cluster),
        );
        d(
            "upstream_headers",
            format!("{:?}", keep(&h.upstream_headers)),
            format!("{:?}", keep(&e.upstream_headers)),
        );
        d(
            "upstream_body",
            format!("{:?}", h.upstream_body),
            format!("{:?}", e.upstream_body),
        );
        d(
            "upstream_trailers",
            format!("{:?}", keep(&h.upstream_trailers)),
            format!("{:?}", keep(&e.upstream_trailers)),
        );
        // The filters' calls as their clusters received them, in any order.
        let calls = |c: &[(String, Vec<(String, String)>)]| {
            let mut v: Vec<(String, Vec<(String, String)>)> =
                c.iter().map(|(n, h)| (n.clone(), keep(h))).collect();
            v.sort();
            v
        };
        d(
            "calls",
            format!("{:?}", calls(&h.calls)),
            format!("{:?}", calls(&e.calls)),
        );
        // A client sees `:status` as the status line, compared above.
        let no_pseudo = |x: &[(String, String)]| -> Vec<(String, String)> {
            x.iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .cloned()
                .collect()
        };
        d(
            "response_headers",
            format!("{:?}", keep(&no_pseudo(&h.response_headers))),
            format!("{:?}", keep(&no_pseudo(&e.response_headers))),
        );
        d("body", format!("{:?}", h.body), format!("{:?}", e.body));
        d(
            "response_trailers",
            format!("{:?}", keep(&h.response_trailers)),
            format!("{:?}", keep(&e.response_trailers)),
        );
        // Log lines that print a volatile header say nothing about the filter.
        let steady = |logs: &[String]| -> Vec<String> {
            logs.iter()
                .filter(|l| {
                    !VOLATILE_HEADERS
                        .iter()
                        .any(|v| l.contains(&format!("{v}: ")))
                })
                .cloned()
                .collect()
        };
        d(
            "logs",
            format!("{:?}", steady(&h.logs)),
            format!("{:?}", steady(&e.logs)),
        );
        // A service's clock and random draws are the virtual ones in the
        // harness and the wall clock's in Envoy: its lines are compared with
        // every number masked, so their shape, order and count still count.
        let masked =
            |logs: &[String]| -> Vec<String> { logs.iter().map(|l| mask_numbers(l)).collect() };
        d(
            "service_logs",
            format!("{:?}", masked(&h.service_logs)),
            format!("{:?}", masked(&e.service_logs)),
        );
        d(
            "metrics",
            format!("{:?}", h.metrics),
            format!("{:?}", e.metrics),
        );
    }
    if harness.len() != envoy.len() {
        out.push(format!(
            "request count: harness {}, envoy {}",
            harness.len(),
            envoy.len()
        ));
    }
    out
}
