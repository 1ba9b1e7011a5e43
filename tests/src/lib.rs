//! Support for Switchyard's end-to-end tests and demo: project paths, a real
//! Envoy process, echo backends and bootstrap editing. Every process started
//! here is stopped on drop; every port is picked by the OS, so tests run in
//! parallel.

pub mod backend;
pub mod bootstrap;
pub mod envoy;
pub mod istio;
pub mod paths;
pub mod tokens;

pub use backend::{Backend, Received, Reply, Responder};
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
