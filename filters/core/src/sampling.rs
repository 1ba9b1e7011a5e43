//! Deterministic percentage sampling, shared by faults and shadowing: the
//! same request id is always in or always out, and independent samplers
//! (one seed each) do not pick the same requests.

use crate::config::ConfigError;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Resolution of a sampled percentage: 1/10,000 of a percent.
const SCALE: u64 = 1_000_000;

/// A compiled percentage with its own seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    /// Draws below this (out of `SCALE`) are in.
    threshold: u64,
    seed: u64,
}

impl Sampler {
    /// `percent` in 0–100; `name` makes the sampler independent of others.
    pub fn new(percent: f64, name: &str, field: &str) -> Result<Self, ConfigError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(ConfigError::new(field, "must be between 0 and 100"));
        }
        Ok(Self {
            threshold: (percent * (SCALE / 100) as f64).round() as u64,
            seed: xxh3_64(name.as_bytes()),
        })
    }

    pub fn always(&self) -> bool {
        self.threshold >= SCALE
    }

    /// Whether the request keyed by `key` is in; without a key (or an empty
    /// one) `random`, a fresh uniform draw, decides.
    pub fn sampled(&self, key: Option<&[u8]>, random: u64) -> bool {
        if self.threshold == 0 {
            return false;
        }
        if self.always() {
            return true;
        }
        let draw = match key {
            Some(k) if !k.is_empty() => xxh3_64_with_seed(k, self.seed),
            _ => random,
        };
        // Multiply-high maps the draw onto 0..SCALE without modulo bias.
        (((u128::from(draw) * u128::from(SCALE)) >> 64) as u64) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_rate_and_independent_seeds() {
        let ten = Sampler::new(10.0, "a", "p").unwrap();
        let other = Sampler::new(10.0, "b", "p").unwrap();
        let ids: Vec<String> = (0..10_000).map(|i| format!("req-{i:05}")).collect();
        let picked: Vec<bool> = ids
            .iter()
            .map(|id| ten.sampled(Some(id.as_bytes()), 0))
            .collect();
        let rate = picked.iter().filter(|p| **p).count();
        assert!((900..=1100).contains(&rate), "{rate}");
        // Same id, same answer, whatever the random draw.
        for (id, p) in ids.iter().zip(&picked).take(100) {
            assert_eq!(ten.sampled(Some(id.as_bytes()), u64::MAX), *p);
        }
        let both = ids
            .iter()
            .filter(|id| {
                ten.sampled(Some(id.as_bytes()), 0) && other.sampled(Some(id.as_bytes()), 0)
            })
            .count();
        assert!(both < 200, "seeds are not independent: {both}");
        assert!(Sampler::new(100.0, "a", "p").unwrap().sampled(None, 0));
        assert!(!Sampler::new(0.0, "a", "p").unwrap().sampled(None, u64::MAX));
        assert!(!ten.sampled(None, u64::MAX) && ten.sampled(Some(b""), 0));
        assert_eq!(
            Sampler::new(100.5, "a", "x.percent").unwrap_err().field,
            "x.percent"
        );
        assert!(Sampler::new(f64::NAN, "a", "p").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A key is sampled or not by its value alone (every replica and worker
        /// picks the same requests), and 0 % / 100 % are absolute.
        #[test]
        fn sampling_is_decided_by_the_key_alone(
            percent in 0.0f64..=100.0, key in proptest::collection::vec(any::<u8>(), 1..64),
            r1 in any::<u64>(), r2 in any::<u64>(), name in "[a-z]{1,8}",
        ) {
            let a = Sampler::new(percent, &name, "p").unwrap();
            let b = Sampler::new(percent, &name, "p").unwrap();
            prop_assert_eq!(a.sampled(Some(&key), r1), b.sampled(Some(&key), r2));
            prop_assert!(!Sampler::new(0.0, &name, "p").unwrap().sampled(Some(&key), r1));
            prop_assert!(Sampler::new(100.0, &name, "p").unwrap().sampled(Some(&key), r1));
        }
    }
}
