//! `switchyard.wasm`'s registry: which policy each configuration section
//! builds. The chain driver (`chain.rs`) runs whatever policies it is given
//! and names none of them; only this file names every policy.

use crate::chain::{ChainPlan, ChainRoot, NewPolicy};
use crate::host::{self, Level};
use switchyard_core::chain::Policy as Section;
use switchyard_core::chain::Sections;

/// The root of `switchyard.wasm`: every configured section, in chain order.
pub fn root() -> ChainRoot {
    ChainRoot::sections(plan_sections)
}

/// Splits `switchyard.wasm`'s configuration into its sections and the
/// chain's path setting; `None` (after one log line naming the key) when it
/// is invalid.
fn plan_sections(config: Option<&[u8]>) -> Option<ChainPlan> {
    let parsed = match config {
        Some(bytes) if !bytes.is_empty() => Sections::from_json(bytes),
        _ => Ok(Sections {
            sections: Vec::new(),
            path_normalization: None,
            stats_flush_ms: 0,
        }),
    };
    let sections = match parsed {
        Ok(s) => s,
        Err(err) => {
            host::log(
                Level::Error,
                &format!("switchyard: invalid configuration: {err}"),
            );
            return None;
        }
    };
    if sections.sections.is_empty() {
        host::log(
            Level::Warn,
            "switchyard: no auth, router, timeouts or shadow section: every request passes untouched",
        );
    }
    let new = |p| -> NewPolicy {
        match p {
            Section::Auth => |h| Box::new(crate::auth::AuthRoot::new(h)),
            Section::Router => |_| Box::new(crate::router::RouterRoot::new()),
            Section::Timeouts => |h| Box::new(crate::timeouts::TimeoutsRoot::new(h)),
            Section::Shadow => |h| Box::new(crate::shadow::ShadowRoot::new(h)),
        }
    };
    let plan = sections
        .sections
        .into_iter()
        .map(|(p, c)| (new(p), p.section(), Some(c)))
        .collect();
    Some(ChainPlan {
        plan,
        path_normalization: sections.path_normalization,
        stats_flush_ms: sections.stats_flush_ms,
    })
}
