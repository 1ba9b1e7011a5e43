//! `timeouts.wasm`: gives each request the time budget its policy says —
//! router timeouts and retries, inbound deadlines, fault injection. All
//! decisions live in `switchyard-core`; this crate only registers the root.

switchyard_proxy::export_filter!(switchyard_proxy::timeouts::filter; request_headers, tick);
