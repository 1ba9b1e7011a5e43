//! A real HTTP echo backend on loopback: answers every request with a JSON
//! echo of what it received and its version name, and records each request
//! so tests can assert on what the upstream saw.
//!
//! It runs hyper on a tokio runtime of its own thread: any number of
//! keep-alive connections and slow (`/delay/<seconds>`) requests at once,
//! as a proxy under test opens them.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// One request as the backend received it.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lower-cased names; repeated headers joined with `,`.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A backend's answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Sent this long after the request arrived, without holding up any
    /// other request (a slow service, not a stuck one).
    pub after: Option<Duration>,
    /// Sent once this gate opens (after `after`, if both are set).
    pub gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// Instead of answering, close the connection (a crashing service).
    pub reset: bool,
}

/// Holds back the answers given [`Reply::when_open`] until the test opens
/// it: a slow service whose slowness ends when the test says, not after a
/// time a loaded machine may overrun.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            after: None,
            gate: None,
            reset: false,
        }
    }

    /// No answer at all: the connection is closed once the request arrived.
    pub fn reset() -> Self {
        Self {
            reset: true,
            ..Self::new(500, "")
        }
    }

    /// Answers once `gate` is open.
    pub fn when_open(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.0.subscribe());
        self
    }

    /// Answers `delay` after arrival. (A responder that sleeps instead would
    /// stall the backend's one runtime thread, so two callers would wait in
    /// turn: the second for twice the delay.)
    pub fn after(mut self, delay: Duration) -> Self {
        self.after = Some(delay);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Decides a backend's answer; replaceable while it runs.
pub type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

pub struct Backend {
    pub version: String,
    pub port: u16,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct State {
    version: String,
    /// Answer at once, record nothing (load benchmarks); count only.
    fast: bool,
    served: std::sync::atomic::AtomicU64,
    received: Mutex<Vec<Received>>,
    responder: Mutex<Option<Responder>>,
}

impl Backend {
    /// Starts an echo backend named `version` on a free loopback port.
    pub fn start(version: &str) -> Self {
        Self::start_with(version, None)
    }

    /// Starts a backend that answers with `responder` (an identity provider,
    /// an auth service…) instead of the echo.
    pub fn serving(name: &str, responder: Responder) -> Self {
        Self::start_with(name, Some(responder))
    }

    /// Changes how the backend answers from now on (e.g. to fail mid-run).
    pub fn set_responder(&self, responder: Responder) {
        *self.state.responder.lock().expect("lock") = Some(responder);
    }

    /// A backend for load benchmarks: answers `200 ok` at once and records
    /// nothing but a count ([`Backend::served`]).
    pub fn fast(version: &str) -> Self {
        Self::start_inner(version, None, true, 0)
    }

    /// As [`Backend::fast`], on a given loopback port (a service restarted in place).
    pub fn fast_on(version: &str, port: u16) -> Self {
        Self::start_inner(version, None, true, port)
    }

    /// Requests a [`Backend::fast`] backend has answered.
    pub fn served(&self) -> u64 {
        self.state.served.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// As [`Backend::serving`], on a given loopback port: a service
    /// restarted where its clients (Envoy's cluster) expect it.
    pub fn serving_on(name: &str, port: u16, responder: Responder) -> Self {
        Self::start_inner(name, Some(responder), false, port)
    }

    fn start_with(version: &str, responder: Option<Responder>) -> Self {
        Self::start_inner(version, responder, false, 0)
    }

    fn start_inner(version: &str, responder: Option<Responder>, fast: bool, port: u16) -> Self {
        let state = Arc::new(State {
            version: version.into(),
            fast,
            served: std::sync::atomic::AtomicU64::new(0),
            received: Mutex::new(Vec::new()),
            responder: Mutex::new(responder),
        });
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind echo backend");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let (stop, stopped) = oneshot::channel();
        let thread_state = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(serve(listener, thread_state, stopped));
        });
        Self {
            version: version.into(),
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().expect("lock").len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts connections until told to stop; each is served on its own task.
async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A service error: hyper closes the connection without an answer.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset by the test backend")
    }
}

impl std::error::Error for Reset {}

async fn answer(
    req: hyper::Request<Incoming>,
    state: Arc<State>,
) -> Result<hyper::Response<Full<Bytes>>, Reset> {
    if state.fast {
        state
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"ok\n")));
        if let Ok(v) = hyper::header::HeaderValue::from_str(&state.version) {
            response.headers_mut().insert("x-echo-version", v);
        }
        return Ok(response);
    }
    let (parts, body) = req.into_parts();
    let mut headers = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v: &mut String| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let body = body
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let seen = Received {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers,
        body,
    };
    let wait = delay_of(&seen.path);
    let custom = state.responder.lock().expect("lock").clone();
    // Recorded on arrival: a proxy that gives up on a slow answer does not wait.
    state.received.lock().expect("lock").push(seen.clone());
    if let Some(wait) = wait {
        tokio::time::sleep(wait).await;
    }
    let reply = match custom {
        Some(respond) => respond(&seen),
        None => {
            let echo = serde_json::json!({"version": state.version, "request": &seen});
            Reply::new(200, echo.to_string())
                .header("content-type", "application/json")
                .header("x-echo-version", &state.version)
        }
    };
    if let Some(delay) = reply.after {
        tokio::time::sleep(delay).await;
    }
    if let Some(mut gate) = reply.gate.clone() {
        let _ = gate.wait_for(|open| *open).await;
    }
    if reply.reset {
        return Err(Reset);
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &reply.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            response.headers_mut().append(k, v);
        }
    }
    Ok(response)
}

/// The wait a path asks for with a `/delay/<seconds>` segment pair (at most 10 s).
fn delay_of(path: &str) -> Option<Duration> {
    let path = path.split('?').next().unwrap_or(path);
    let mut segments = path.split('/');
    segments.find(|s| *s == "delay")?;
    let secs: f64 = segments.next()?.parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(10.0)))
}
