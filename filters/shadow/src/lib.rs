//! `shadow.wasm`: sampled, tagged, safe shadow traffic, and primary-versus-
//! shadow comparison in the proxy. All decisions live in `switchyard-core`;
//! this crate only registers the root.

switchyard_proxy::export_filter!(switchyard_proxy::shadow::filter; request_headers, response_headers, response_body, response_trailers, http_call_response, tick);
