//! `shadow.wasm`: sampled, tagged, safe shadow traffic, and primary-versus-
//! shadow comparison in the proxy. All decisions live in `switchyard-core`;
//! this crate only registers the root.

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(switchyard_proxy::shadow::filter()));
}}
