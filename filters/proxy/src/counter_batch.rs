//! Counter increments summed in the module and sent to the host together,
//! for a chain configured with `stats_flush_ms` above 0.
//!
//! Why: every `proxy_increment_metric` leaves the VM, about 1.05k
//! instructions in Envoy's V8 (`make bench`, floor variants), and `switchyard.wasm` counts several things
//! a request (the path check, auth's outcome and provider, the router's
//! decision, the timeout set). Summed here, a request's counting is a few
//! additions, and the host gets one call per counter that moved per flush.
//! The price is that Envoy's `/stats` lags by up to a flush period, and
//! increments made since the last flush are lost if Envoy exits without
//! deleting the root.
//!
//! Counters are batched when defined while a batching chain configures
//! (see [`Defining`]); the root's tick calls [`flush`], and so does the
//! root's deletion.

use crate::host;
use std::cell::{Cell, RefCell};

struct Pending {
    /// The host's metric id.
    id: u32,
    count: u32,
}

thread_local! {
    /// Every batched counter of this VM (all its roots), by slot.
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    /// Set while a batching chain defines its counters.
    static DEFINING: Cell<bool> = const { Cell::new(false) };
}

/// Counters defined while this lives are batched; dropping it ends that,
/// whatever path the configuration leaves by.
pub(crate) struct Defining(());

impl Defining {
    pub(crate) fn batched(on: bool) -> Self {
        DEFINING.with(|d| d.set(on));
        Self(())
    }
}

impl Drop for Defining {
    fn drop(&mut self) {
        DEFINING.with(|d| d.set(false));
    }
}

/// The slot for host metric `id` when counters being defined are batched.
/// A metric defined again (a reconfigured root) keeps its slot.
pub(crate) fn slot_for(id: u32) -> Option<u32> {
    if !DEFINING.with(Cell::get) {
        return None;
    }
    PENDING.with(|p| {
        let mut p = p.try_borrow_mut().ok()?;
        let at = match p.iter().position(|s| s.id == id) {
            Some(at) => at,
            None => {
                p.push(Pending { id, count: 0 });
                p.len() - 1
            }
        };
        u32::try_from(at).ok()
    })
}

/// Counts one in `slot`, to be sent at the next flush.
pub(crate) fn add(slot: u32) {
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if let Some(s) = p.get_mut(slot as usize) {
                s.count = s.count.saturating_add(1);
            }
        }
    });
}

/// Sends every count gathered since the last flush to the host.
pub(crate) fn flush() {
    PENDING.with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else {
            return;
        };
        for s in p.iter_mut().filter(|s| s.count > 0) {
            // A refused increment is not retried: the host refuses only an
            // id it does not know, which a retry would not change.
            host::increment_metric(s.id, i64::from(s.count));
            s.count = 0;
        }
    });
}
