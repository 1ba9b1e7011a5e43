//! `switchyard.wasm`: any subset of the four policies in one VM and one pass,
//! auth → router → timeouts → shadow, from `{"auth": …, "router": …,
//! "timeouts": …, "shadow": …}` (a missing section is off). The same adapter
//! and core as the single filters; this crate only registers the root.

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(switchyard_proxy::chain::ChainRoot::sections()));
}}
