//! A real HTTP echo backend on loopback: answers every request with a JSON
//! echo of what it received and its version name, and records each request
//! so tests can assert on what the upstream saw.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
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
    server: Arc<tiny_http::Server>,
    received: Arc<Mutex<Vec<Received>>>,
    responder: Arc<Mutex<Option<Responder>>>,
    threads: Vec<JoinHandle<()>>,
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
        *self.responder.lock().expect("lock") = Some(responder);
    }

    fn start_with(version: &str, responder: Option<Responder>) -> Self {
        let responder = Arc::new(Mutex::new(responder));
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind echo backend"));
        let port = server.server_addr().to_ip().expect("tcp listener").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|_| {
                let (server, received, version, responder) = (
                    server.clone(),
                    received.clone(),
                    version.to_owned(),
                    responder.clone(),
                );
                std::thread::spawn(move || serve(&server, &received, &version, &responder))
            })
            .collect();
        Self {
            version: version.into(),
            port,
            server,
            received,
            responder,
            threads,
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(
    server: &tiny_http::Server,
    received: &Mutex<Vec<Received>>,
    version: &str,
    responder: &Mutex<Option<Responder>>,
) {
    while let Ok(mut request) = server.recv() {
        let mut headers = BTreeMap::new();
        for h in request.headers() {
            let name = h.field.as_str().as_str().to_ascii_lowercase();
            let value = h.value.as_str().to_owned();
            headers
                .entry(name)
                .and_modify(|v: &mut String| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let mut body = String::new();
        let _ = request.as_reader().read_to_string(&mut body);
        let seen = Received {
            method: request.method().as_str().to_owned(),
            path: request.url().to_owned(),
            headers,
            body,
        };
        let custom = responder.lock().expect("lock").clone();
        if let Some(respond) = custom {
            let reply = respond(&seen);
            received.lock().expect("lock").push(seen);
            let mut response =
                tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
            for (k, v) in &reply.headers {
                response = response.with_header(header(k, v));
            }
            let _ = request.respond(response);
            continue;
        }
        let echo = serde_json::json!({"version": version, "request": &seen});
        received.lock().expect("lock").push(seen);
        let response = tiny_http::Response::from_string(echo.to_string())
            .with_header(header("content-type", "application/json"))
            .with_header(header("x-echo-version", version));
        let _ = request.respond(response);
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}
