//! One remote key set per Envoy, not one per worker: the record every VM
//! of a plugin shares (proxy-wasm shared data), and when a VM may fetch.
//!
//! Each worker runs its own VM; each used to fetch the key set itself, so a
//! gateway with N workers asked the identity provider N+1 times per refresh.
//! Now one VM at a time holds a lease (taken by compare-and-swap, renewed
//! while its call is out, lapsing if that VM stops), fetches, and stores the
//! body with when it was fetched; every VM adopts a newer body on its tick.
//! Failures are shared too, so the back-off is the Envoy's, not each VM's.

use super::config::RemoteJwksConfig;
use super::jwks_retry_after_ms;

/// How long a lease holds without renewal: a VM renews it on every tick
/// (100 ms) while its call is out, so only a VM that stopped lets it lapse.
pub const LEASE_MS: u64 = 300;

const MAGIC: &[u8; 4] = b"SYK1";
const HEADER: usize = 4 + 8 + 8 + 4 + 8;

/// The shared state of one remote key set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedKeySet {
    /// When `body` was fetched (host clock, ms); 0 before the first success.
    pub fetched_ms: u64,
    /// A VM is fetching until then, unless it renews.
    pub lease_until_ms: u64,
    /// Failed fetches in a row.
    pub failures: u32,
    /// When the next fetch is due.
    pub next_fetch_ms: u64,
    /// The last good key set, as the provider served it.
    pub body: Vec<u8>,
}

impl SharedKeySet {
    /// The shared-data key: one record per key-set source, whichever
    /// provider names it.
    pub fn key(cfg: &RemoteJwksConfig) -> String {
        format!(
            "switchyard.jwks|{}|{}|{}",
            cfg.cluster, cfg.authority, cfg.path
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.fetched_ms.to_le_bytes());
        out.extend_from_slice(&self.lease_until_ms.to_le_bytes());
        out.extend_from_slice(&self.failures.to_le_bytes());
        out.extend_from_slice(&self.next_fetch_ms.to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for bytes another writer left (or none at all): start afresh.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let u64_at = |at: usize| Some(u64::from_le_bytes(rest.get(at..at + 8)?.try_into().ok()?));
        Some(Self {
            fetched_ms: u64_at(0)?,
            lease_until_ms: u64_at(8)?,
            failures: u32::from_le_bytes(rest.get(16..20)?.try_into().ok()?),
            next_fetch_ms: u64_at(20)?,
            body: rest.get(HEADER - 4..)?.to_vec(),
        })
    }

    /// Whether a VM may take the lease at `now`: a fetch is due and nobody
    /// holds it.
    pub fn fetch_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_fetch_ms && now_ms >= self.lease_until_ms
    }

    /// Taken (or renewed) at `now_ms`.
    pub fn leased(mut self, now_ms: u64) -> Self {
        self.lease_until_ms = now_ms.saturating_add(LEASE_MS);
        self
    }

    /// A fetch at `now_ms` brought `body`; the next is due a refresh later.
    pub fn fetched(self, now_ms: u64, body: Vec<u8>, refresh_s: u64) -> Self {
        Self {
            fetched_ms: now_ms.max(1),
            lease_until_ms: 0,
            failures: 0,
            next_fetch_ms: now_ms.saturating_add(refresh_s.saturating_mul(1000)),
            body,
        }
    }

    /// A fetch at `now_ms` failed: the last good body stays, the next try
    /// backs off as one VM's would.
    pub fn failed(self, now_ms: u64, refresh_s: u64) -> Self {
        let failures = self.failures.saturating_add(1);
        Self {
            lease_until_ms: 0,
            failures,
            next_fetch_ms: now_ms.saturating_add(jwks_retry_after_ms(failures, refresh_s)),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_its_encoding_and_foreign_bytes_do_not_decode() {
        let r = SharedKeySet {
            fetched_ms: 7,
            lease_until_ms: 9,
            failures: 2,
            next_fetch_ms: 11,
            body: b"{\"keys\":[]}".to_vec(),
        };
        assert_eq!(SharedKeySet::decode(&r.encode()), Some(r.clone()));
        let empty = SharedKeySet::default();
        assert_eq!(SharedKeySet::decode(&empty.encode()), Some(empty));
        assert_eq!(SharedKeySet::decode(b""), None);
        assert_eq!(SharedKeySet::decode(b"SYK1short"), None);
        assert_eq!(SharedKeySet::decode(&r.encode()[1..]), None);
    }

    #[test]
    fn one_vm_fetches_per_refresh_and_a_stopped_one_lets_the_lease_lapse() {
        let fresh = SharedKeySet::default();
        assert!(fresh.fetch_due(0), "nothing fetched yet");
        let leased = fresh.leased(1_000);
        assert!(!leased.fetch_due(1_000), "held by the fetching VM");
        assert!(!leased.fetch_due(1_000 + LEASE_MS - 1));
        assert!(
            leased.fetch_due(1_000 + LEASE_MS),
            "its holder stopped renewing"
        );
        let done = leased.fetched(1_050, b"keys".to_vec(), 300);
        assert!(!done.fetch_due(1_050 + 299_999), "not before the refresh");
        assert!(done.fetch_due(1_050 + 300_000));
        assert_eq!(done.body, b"keys");
    }

    #[test]
    fn failures_back_off_for_the_whole_envoy_and_keep_the_last_good_body() {
        let good = SharedKeySet::default().fetched(0, b"keys".to_vec(), 300);
        let once = good.clone().leased(300_000).failed(300_010, 300);
        assert_eq!((once.failures, once.next_fetch_ms), (1, 301_010));
        let twice = once.leased(301_010).failed(301_020, 300);
        assert_eq!((twice.failures, twice.next_fetch_ms), (2, 303_020));
        assert_eq!(twice.body, b"keys");
        assert_eq!(twice.fetched_ms, good.fetched_ms, "the body's age is kept");
        let back = twice.fetched(303_030, b"new".to_vec(), 300);
        assert_eq!((back.failures, back.body.as_slice()), (0, &b"new"[..]));
    }
}
