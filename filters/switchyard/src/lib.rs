//! `switchyard.wasm`: any subset of the four policies in one VM and one pass,
//! auth → router → timeouts → shadow, from `{"auth": …, "router": …,
//! "timeouts": …, "shadow": …}` (a missing section is off). The same adapter
//! and core as the single filters; this crate only registers the root.

switchyard_proxy::export_filter!(switchyard_proxy::sections::root; request_headers, response_headers, response_body, response_trailers, http_call_response, tick);
