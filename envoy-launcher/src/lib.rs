//! Starts real Envoy for everything in Switchyard that needs one: the
//! harness's `--envoy` runs and fidelity tests, the end-to-end tests, the
//! demo and the benchmark. One lookup of the binary and one launcher, so that
//! every caller gets the same start-up rules:
//!
//! - Envoy binds port 0 for its listener and admin interface and writes the
//!   admin address to `--admin-address-path`; the listener's port is read
//!   back from `/listeners`. A port picked here and bound later could be
//!   taken by a parallel test meanwhile.
//! - The launch is over when `/ready` answers 200, or fails with Envoy's log
//!   when it exits or the start-up time runs out.
//! - Envoy's log (stderr) is kept in memory as it is written, so a caller can
//!   wait for a line or mark where a request's lines start.

mod binary;
mod process;

pub use binary::{envoy_binary, envoy_executable};
pub use process::{Envoy, Launch};
