//! `router.wasm`: decides a version per request and writes it into a
//! request header that Envoy's route table (or an Istio VirtualService) matches.
//! All decisions live in `switchyard-core`; this crate only registers the root.

switchyard_proxy::export_filter!(switchyard_proxy::router::filter; request_headers, response_headers);
