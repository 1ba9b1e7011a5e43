//! A Proxy-Wasm host on wasmtime that drives filters the way Envoy does.
//!
//! Load the real `.wasm` (ours, or any filter speaking ABI 0.2.0/0.2.1),
//! send requests through a chain of filters to simulated upstreams on a
//! virtual clock, and read what happened: what the upstream received, what
//! the client got, logs, metrics, HTTP calls and the host-call trace.
//! Nothing is global: every [`Harness`] owns its engine state, so tests run
//! in parallel.

pub mod abi;
pub mod envoy;
pub(crate) mod flow;
mod foreign;
pub mod grpc;
mod harness;
pub mod impact;
pub mod log_level;
pub mod model;
mod properties;
mod router;
pub mod scenario;
pub mod status;
mod vm;
mod wasi;
pub mod world;

pub use harness::{
    Exchange, FailurePolicy, FilterSpec, Harness, HarnessError, StreamId, UpstreamRequest,
};
pub use model::{Cluster, Connection, Headers, LogEntry, Request, Response, Tls};
pub use vm::AbiVersion;
pub use world::{CallKind, ClockStart, HttpCall, LogLevel, MetricKind};
