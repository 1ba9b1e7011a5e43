//! Support for Switchyard's end-to-end tests and demo: project paths, a real
//! Envoy process, echo backends and bootstrap editing. Every process started
//! here is stopped on drop; every port is picked by the OS, so tests run in
//! parallel.

pub mod backend;
pub mod bench;
pub mod bootstrap;
pub mod envoy;
pub mod istio;
pub mod paths;
pub mod raw;
pub mod tokens;
pub mod vectors;

pub use backend::{Backend, Gate, Received, Reply, Responder};
pub use bootstrap::Bootstrap;
pub use envoy::Envoy;

/// An HTTP client that reports every status as a response, not an error.
pub fn client() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .build()
}

/// Sends a request and returns (status, response), never failing on 4xx/5xx.
pub fn send(req: ureq::Request) -> (u16, ureq::Response) {
    match req.call() {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// GET `url` with `headers`; returns (status, response), never failing on 4xx/5xx.
pub fn get(url: &str, headers: &[(&str, &str)]) -> (u16, ureq::Response) {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    send(req)
}

/// A loopback port that refuses connections for as long as this lives:
/// bound, never listening. (The port of a listener that was dropped is free
/// for the next bind on the machine, so a parallel test's server could be
/// answering on it.)
pub struct RefusingPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl RefusingPort {
    pub fn new() -> Self {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let loopback: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        socket.bind(&loopback.into()).expect("bind a loopback port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound address")
            .port();
        Self {
            _socket: socket,
            port,
        }
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        Self::new()
    }
}
