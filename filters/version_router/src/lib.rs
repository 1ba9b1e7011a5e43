//! `version_router.wasm`: decides a version per request and writes it into a
//! request header that Envoy's route table (or an Istio VirtualService) matches.
//! All decisions live in `switchyard-core`; this crate only registers the root.

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(switchyard_proxy::router::filter()));
}}
