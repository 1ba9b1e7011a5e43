//! A team's filter: requests to `/admin` need `x-team-token: letmein` (else
//! 403), and every request the filter lets through gets `x-team: platform`.

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TeamRoot) });
}}

struct TeamRoot;

impl Context for TeamRoot {}

impl RootContext for TeamRoot {
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TeamFilter))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TeamFilter;

impl Context for TeamFilter {}

impl HttpContext for TeamFilter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        // Byte getters: the String ones panic on a header that is not UTF-8,
        // and a panic kills every plugin in the VM.
        let path = self
            .get_http_request_header_bytes(":path")
            .unwrap_or_default();
        let token = self.get_http_request_header_bytes("x-team-token");
        if path.starts_with(b"/admin") && token.as_deref() != Some(b"letmein".as_slice()) {
            self.send_http_response(403, vec![("x-team", "platform")], Some(b"no team token\n"));
            return Action::Pause;
        }
        self.set_http_request_header("x-team", Some("platform"));
        Action::Continue
    }
}
