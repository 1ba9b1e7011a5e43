//! proxy-wasm glue for the version router: fetch the headers the decision
//! reads, ask the core, write the version header and count the outcome.

use crate::chain::{Policy, Stream};
use crate::host::{self, Counter, Headers};
use crate::stats;
use crate::vm::Action;
use std::rc::Rc;
use switchyard_core::router::Router;

const NAME: &str = "router";

/// The configured router and its counters, shared by every stream of a root.
struct Shared {
    router: Router,
    /// One counter per `Router::outcomes()` entry.
    decisions: Vec<Counter>,
    override_rejected: Counter,
    header_errors: Counter,
}

#[derive(Default)]
pub(crate) struct RouterRoot {
    shared: Option<Rc<Shared>>,
}

/// The router filter's root: this policy alone.
pub fn filter() -> crate::chain::ChainRoot {
    crate::chain::ChainRoot::single(|_| Box::new(RouterRoot::new()))
}

impl RouterRoot {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for RouterRoot {
    fn path_normalization(&self) -> Option<switchyard_core::path::PathNormalization> {
        self.shared.as_ref()?.router.path_normalization
    }

    fn configure(&mut self, config: Option<&[u8]>) -> bool {
        let Some(router) = crate::configure(NAME, "default_version is", config, Router::from_json)
        else {
            return false;
        };
        let decisions = router
            .outcomes()
            .iter()
            .map(|o| {
                Counter::define(&stats::name(
                    stats::router::DECISIONS,
                    &[&o.rule, &o.version],
                ))
            })
            .collect();
        self.shared = Some(Rc::new(Shared {
            router,
            decisions,
            override_rejected: Counter::define(stats::router::OVERRIDE_REJECTED),
            header_errors: Counter::define(stats::router::HEADER_ERRORS),
        }));
        true
    }

    fn create_stream(&self, _context_id: u32) -> Box<dyn Stream> {
        Box::new(RouterStream {
            shared: self.shared.clone(),
            outcome: None,
        })
    }
}

struct RouterStream {
    /// `None` only if the host created streams on an unconfigured root; then pass through.
    shared: Option<Rc<Shared>>,
    outcome: Option<usize>,
}

impl Stream for RouterStream {
    fn on_http_request_headers(&mut self, _arrival: crate::chain::Arrival) -> Action {
        let Some(shared) = self.shared.as_deref() else {
            return Action::Continue;
        };
        let router = &shared.router;
        let draw = crate::next_split_draw();
        let (rejected, decision) = crate::decide_on_request(
            router.header_names(),
            router.reads_claims(),
            shared.header_errors,
            |req| (router.override_rejected(req), router.decide(req, draw)),
        );
        if rejected {
            shared.override_rejected.increment();
        }
        // Replacing the header also drops any client-sent value.
        if crate::request::set_last(router.version_header(), decision.version.as_bytes()).is_err() {
            shared.header_errors.increment();
            let _ = crate::request::remove(router.version_header());
        }
        // No `clear_route_cache` call: for ABI 0.2.1 modules Envoy re-picks the
        // route itself after a request-header change (the Envoy tests route on it).
        if let Some(c) = shared.decisions.get(decision.outcome) {
            c.increment();
        }
        self.outcome = Some(decision.outcome);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(shared), Some(outcome)) = (self.shared.as_deref(), self.outcome) else {
            return Action::Continue;
        };
        if let (Some(h), Some(o)) = (
            shared.router.served_version_header(),
            shared.router.outcomes().get(outcome),
        ) {
            let _ = host::set_header(Headers::Response, h, o.version.as_bytes());
        }
        Action::Continue
    }
}
