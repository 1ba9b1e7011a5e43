//! Every counter the filters define, one list per policy. The adapters name
//! their counters only from these patterns, and a test holds the README's
//! counter tables to them: a documented counter exists, a defined one is
//! documented.
//!
//! A `<…>` segment is filled, in order, from the configuration (a route,
//! rule, provider or fault name; a reason), made safe for every stats sink.

use crate::host::stat_fragment;

/// The path check every filter runs first.
pub mod path {
    pub const NORMALIZED: &str = "switchyard.path.normalized";
    pub const REJECTED: &str = "switchyard.path.rejected";
    pub const REJECTED_BY_REASON: &str = "switchyard.path.rejected.<reason>";
    pub const ALL: &[&str] = &[NORMALIZED, REJECTED, REJECTED_BY_REASON];
}

pub mod router {
    pub const DECISIONS: &str = "switchyard.router.<route>.<version>.requests";
    pub const OVERRIDE_REJECTED: &str = "switchyard.router.override_rejected";
    pub const HEADER_ERRORS: &str = "switchyard.router.header_errors";
    pub const ALL: &[&str] = &[DECISIONS, OVERRIDE_REJECTED, HEADER_ERRORS];
}

pub mod auth {
    pub const ALLOWED: &str = "switchyard.auth.allowed";
    pub const DENIED: &str = "switchyard.auth.denied";
    pub const DRY_RUN_DENIED: &str = "switchyard.auth.dry_run_denied";
    pub const DENIED_BY_REASON: &str = "switchyard.auth.denied.<reason>";
    pub const PROVIDER_ALLOWED: &str = "switchyard.auth.<provider>.allowed";
    pub const PROVIDER_DENIED: &str = "switchyard.auth.<provider>.denied";
    pub const JWKS_FETCH_OK: &str = "switchyard.auth.<provider>.jwks_fetch_ok";
    pub const JWKS_FETCH_FAILED: &str = "switchyard.auth.<provider>.jwks_fetch_failed";
    pub const JWKS_EXPIRED: &str = "switchyard.auth.<provider>.jwks_expired";
    pub const JWKS_READY: &str = "switchyard.auth.<provider>.jwks_ready";
    pub const FAILED_OPEN: &str = "switchyard.auth.<provider>.failed_open";
    pub const SIGNATURE_CHECKS_BY_HOST: &str = "switchyard.auth.signature_checks_by_host";
    pub const HEADER_ERRORS: &str = "switchyard.auth.header_errors";
    pub const ALL: &[&str] = &[
        ALLOWED,
        DENIED,
        DRY_RUN_DENIED,
        DENIED_BY_REASON,
        PROVIDER_ALLOWED,
        PROVIDER_DENIED,
        JWKS_FETCH_OK,
        JWKS_FETCH_FAILED,
        JWKS_EXPIRED,
        JWKS_READY,
        FAILED_OPEN,
        SIGNATURE_CHECKS_BY_HOST,
        HEADER_ERRORS,
    ];
}

pub mod timeouts {
    /// A rule's counters: timeout set, deadline capped, deadline exceeded.
    pub const RULE: [&str; 3] = [
        "switchyard.timeouts.rule.<rule>.timeout_set",
        "switchyard.timeouts.rule.<rule>.deadline_capped",
        "switchyard.timeouts.rule.<rule>.deadline_exceeded",
    ];
    /// The same, for requests no rule matched.
    pub const NO_RULE: [&str; 3] = [
        "switchyard.timeouts.no_rule.timeout_set",
        "switchyard.timeouts.no_rule.deadline_capped",
        "switchyard.timeouts.no_rule.deadline_exceeded",
    ];
    pub const FAULT_DELAYED: &str = "switchyard.timeouts.fault.<fault>.delayed";
    pub const FAULT_ABORTED: &str = "switchyard.timeouts.fault.<fault>.aborted";
    pub const DEADLINE_MALFORMED: &str = "switchyard.timeouts.deadline_malformed";
    pub const HEADER_ERRORS: &str = "switchyard.timeouts.header_errors";
    pub const ALL: &[&str] = &[
        RULE[0],
        RULE[1],
        RULE[2],
        NO_RULE[0],
        NO_RULE[1],
        NO_RULE[2],
        FAULT_DELAYED,
        FAULT_ABORTED,
        DEADLINE_MALFORMED,
        HEADER_ERRORS,
    ];
}

pub mod shadow {
    pub const SAMPLED: &str = "switchyard.shadow.<rule>.sampled";
    pub const MATCH: &str = "switchyard.shadow.<rule>.match";
    pub const MISMATCH_STATUS: &str = "switchyard.shadow.<rule>.mismatch.status";
    pub const MISMATCH_HEADERS: &str = "switchyard.shadow.<rule>.mismatch.headers";
    pub const MISMATCH_BODY: &str = "switchyard.shadow.<rule>.mismatch.body";
    pub const SHADOW_ERROR: &str = "switchyard.shadow.<rule>.shadow_error";
    pub const SHADOW_TIMEOUT: &str = "switchyard.shadow.<rule>.shadow_timeout";
    pub const UNSAFE_METHOD: &str = "switchyard.shadow.<rule>.unsafe_method";
    pub const DROPPED: &str = "switchyard.shadow.<rule>.dropped";
    pub const BODY_SKIPPED: &str = "switchyard.shadow.<rule>.body_skipped";
    pub const RECEIVED: &str = "switchyard.shadow.received";
    pub const ANSWERED_UNSAFE: &str = "switchyard.shadow.answered_unsafe";
    pub const HEADER_ERRORS: &str = "switchyard.shadow.header_errors";
    pub const ALL: &[&str] = &[
        SAMPLED,
        MATCH,
        MISMATCH_STATUS,
        MISMATCH_HEADERS,
        MISMATCH_BODY,
        SHADOW_ERROR,
        SHADOW_TIMEOUT,
        UNSAFE_METHOD,
        DROPPED,
        BODY_SKIPPED,
        RECEIVED,
        ANSWERED_UNSAFE,
        HEADER_ERRORS,
    ];
}

/// Every policy's list.
pub const ALL: [&[&str]; 5] = [
    path::ALL,
    router::ALL,
    auth::ALL,
    timeouts::ALL,
    shadow::ALL,
];

/// `pattern` with its `<…>` segments filled from `values`, in order, each
/// made stat-safe; a segment with no value left stays as written.
pub fn name(pattern: &str, values: &[&str]) -> String {
    let mut values = values.iter();
    let segments: Vec<String> = pattern
        .split('.')
        .map(
            |segment| match values.len() > 0 && segment.starts_with('<') {
                true => values.next().map_or_else(String::new, |v| stat_fragment(v)),
                false => segment.to_owned(),
            },
        )
        .collect();
    segments.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_in_order_and_made_safe() {
        assert_eq!(
            name(router::DECISIONS, &["jason to v2", "v2"]),
            "switchyard.router.jason_to_v2.v2.requests"
        );
        assert_eq!(name(auth::ALLOWED, &[]), auth::ALLOWED);
        assert_eq!(
            name(path::REJECTED_BY_REASON, &["encoded_slash"]),
            "switchyard.path.rejected.encoded_slash"
        );
    }

    /// The README's counter tables: rows whose first cell starts with a
    /// counter, `.suffix` items short for the first name with its last
    /// segments replaced (or, when the suffix starts with the last segment,
    /// extended).
    fn documented() -> Vec<String> {
        let readme = include_str!("../../../README.md");
        let mut out = Vec::new();
        for row in readme.lines().filter(|l| l.starts_with("| `switchyard.")) {
            let cell = row
                .split(" | ")
                .next()
                .unwrap_or_default()
                .trim_start_matches("| ");
            let names: Vec<&str> = cell.split(", ").map(|n| n.trim_matches('`')).collect();
            if names[0].contains(".wasm") {
                continue; // a size row of the Measured table
            }
            let first: Vec<&str> = names[0].split('.').collect();
            out.push(names[0].to_owned());
            for short in &names[1..] {
                let suffix: Vec<&str> = short.trim_start_matches('.').split('.').collect();
                let full = if first.last() == suffix.first() {
                    [&first[..], &suffix[1..]].concat()
                } else {
                    [&first[..first.len() - suffix.len()], &suffix[..]].concat()
                };
                out.push(full.join("."));
            }
        }
        out
    }

    /// Placeholders compare equal whatever they are called.
    fn shape(name: &str) -> String {
        name.split('.')
            .map(|s| if s.starts_with('<') { "<>" } else { s })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn fits(pattern: &str, name: &str) -> bool {
        let (p, n): (Vec<&str>, Vec<&str>) =
            (pattern.split('.').collect(), name.split('.').collect());
        p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| p == n || p.starts_with('<'))
    }

    #[test]
    fn the_readme_documents_every_counter_and_no_other() {
        let documented = documented();
        assert!(documented.len() > 30, "read {documented:?}");
        let defined: Vec<&str> = ALL.iter().flat_map(|l| l.iter().copied()).collect();
        for pattern in &defined {
            assert!(
                documented.iter().any(|d| shape(d) == shape(pattern)),
                "{pattern} is defined but not in the README's counter tables"
            );
        }
        for doc in &documented {
            assert!(
                defined
                    .iter()
                    .any(|p| shape(p) == shape(doc) || fits(p, doc)),
                "the README documents {doc}, which no filter defines"
            );
        }
    }
}
