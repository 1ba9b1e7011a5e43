//! When a VM (or a JavaScript engine) fetches a remote key set on its own
//! schedule: a refresh period after a success, backing off after failures.
//! The filter and the JavaScript package keep one of these per provider.

use super::jwks_retry_after_ms;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshSchedule {
    next_fetch_ms: u64,
    failures: u32,
}

impl RefreshSchedule {
    /// Time for the next fetch (at once, before the first).
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_fetch_ms
    }

    /// The last fetch failed and its retry time has not come: a request
    /// should not wait for another fetch.
    pub fn backing_off(&self, now_ms: u64) -> bool {
        self.failures > 0 && !self.due(now_ms)
    }

    pub fn fetched(&mut self, now_ms: u64, refresh_s: u64) {
        self.failures = 0;
        self.next_fetch_ms = now_ms.saturating_add(refresh_s.saturating_mul(1000));
    }

    pub fn failed(&mut self, now_ms: u64, refresh_s: u64) {
        self.failures = self.failures.saturating_add(1);
        self.next_fetch_ms = now_ms.saturating_add(jwks_retry_after_ms(self.failures, refresh_s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_waits_a_refresh_failures_back_off_and_never_wait_longer() {
        let mut s = RefreshSchedule::default();
        assert!(s.due(0) && !s.backing_off(0));
        s.fetched(1_000, 300);
        assert!(!s.due(300_999) && s.due(301_000));
        assert!(!s.backing_off(2_000), "a healthy set is not backing off");
        s.failed(301_000, 300);
        assert!(s.backing_off(301_999) && s.due(302_000));
        s.failed(302_000, 300);
        assert!(
            !s.due(303_999) && s.due(304_000),
            "2 s after the second failure"
        );
        for _ in 0..20 {
            s.failed(400_000, 30);
        }
        assert!(s.due(430_000), "backoff capped at the refresh period");
        s.fetched(430_000, 30);
        assert!(!s.backing_off(430_001));
    }
}
