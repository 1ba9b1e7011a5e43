//! `auth.wasm`: authenticates and authorizes requests and sets a verified
//! identity header. All decisions live in `switchyard-core`; this crate only
//! registers the root.

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(switchyard_proxy::auth::filter()));
}}
