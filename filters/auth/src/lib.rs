//! `auth.wasm`: authenticates and authorizes requests and sets a verified
//! identity header. All decisions live in `switchyard-core`; this crate only
//! registers the root.

switchyard_proxy::export_filter!(switchyard_proxy::auth::filter; request_headers, http_call_response, tick);
