//! `timeouts.wasm`: gives each request the time budget its policy says —
//! router timeouts and retries, inbound deadlines, fault injection. All
//! decisions live in `switchyard-core`; this crate only registers the root.

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(switchyard_proxy::timeouts::filter()));
}}
