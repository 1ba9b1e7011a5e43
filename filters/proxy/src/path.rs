//! The path check every filter runs before its first policy: the request
//! goes on with `:path` in normal form, or is answered 400 when its path is
//! ambiguous (see `switchyard_core::path`). Policies then read `:path` from
//! the host as usual, so every rule, and the upstream, sees the same path.

use crate::host::{self, Counter, Level};
use crate::stats;
use crate::vm::Action;
use switchyard_core::path::{Ambiguity, PathNormalization};
use switchyard_core::RequestHeaders;

pub(crate) struct PathGuard {
    setting: PathNormalization,
    normalized: Counter,
    rejected: Counter,
    by_reason: Vec<Counter>,
}

impl PathGuard {
    pub(crate) fn new(setting: PathNormalization) -> Self {
        Self {
            setting,
            normalized: Counter::define(stats::path::NORMALIZED),
            rejected: Counter::define(stats::path::REJECTED),
            by_reason: Ambiguity::ALL
                .iter()
                .map(|a| {
                    Counter::define(&stats::name(stats::path::REJECTED_BY_REASON, &[a.as_str()]))
                })
                .collect(),
        }
    }

    /// `Continue` with `:path` normalised, or `Pause` after answering.
    pub(crate) fn check(&self) -> Action {
        let normalized = match crate::request::with_headers(|h| {
            h.header(":path").map(|raw| self.setting.normalize(raw))
        }) {
            Ok(checked) => checked,
            // The map refused: the path alone, as the upstream will get it.
            Err(_) => match host::header(host::Headers::Request, ":path") {
                Ok(Some(raw)) => Some(self.setting.normalize(&raw)),
                Ok(None) | Err(_) => None,
            },
        };
        // No path (CONNECT): nothing to match.
        let Some(normalized) = normalized else {
            return Action::Continue;
        };
        match normalized {
            Ok(None) => Action::Continue,
            Ok(Some(normal)) => {
                if crate::request::set(":path", &normal).is_err() {
                    // Deciding on a path the upstream would not receive is the bypass.
                    host::log(
                        Level::Error,
                        "switchyard: the host refused the normalised :path",
                    );
                    let _ =
                        host::send_local_response(500, "switchyard_path_not_rewritten", b"", &[]);
                    return Action::Pause;
                }
                self.normalized.increment();
                Action::Continue
            }
            Err(why) => {
                self.rejected.increment();
                if let Some(c) = self.by_reason.get(why.index()) {
                    c.increment();
                }
                let details = format!("switchyard_path_{}", why.as_str());
                let answered = host::send_local_response(
                    400,
                    &details,
                    why.body().as_bytes(),
                    &[("content-type", b"application/json")],
                );
                if answered.is_err() {
                    host::log(Level::Error, "switchyard: could not send the 400 answer");
                }
                Action::Pause
            }
        }
    }
}
