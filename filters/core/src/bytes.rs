//! Byte-slice helpers for the request path, written for Wasm: there
//! `memcmp` compares byte by byte, and every header lookup and token-cache
//! hit compares bytes.

/// `a == b`, eight bytes at a time.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    // The last word overlaps the one before it when n is not a multiple of 8.
    let mut differ = word(a, n - 8) ^ word(b, n - 8);
    let mut i = 0;
    while i + 8 < n {
        differ |= word(a, i) ^ word(b, i);
        i += 8;
    }
    differ == 0
}

/// The eight bytes of `s` from `i` (0 past the end).
#[inline]
fn word(s: &[u8], i: usize) -> u64 {
    s.get(i..i + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map_or(0, u64::from_le_bytes)
}

/// A 32-bit digest of a header name in constant time: its length and its
/// first, middle and last eight bytes (every byte of a shorter name).
/// Header names share long prefixes and suffixes (`x-envoy-…-timeout-ms`),
/// so the middle is what tells many apart.
#[inline]
pub fn name_digest(name: &[u8]) -> u32 {
    let n = name.len();
    let mixed = if n >= 8 {
        let middle = n / 2 - 4;
        word(name, 0) ^ word(name, middle).rotate_left(21) ^ word(name, n - 8).rotate_left(42)
    } else {
        name.iter().fold(0u64, |h, b| (h << 8) | u64::from(*b))
    };
    let h = (mixed ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_agrees_with_eq_at_every_length_and_difference() {
        for len in 0..40usize {
            let a: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            assert!(same(&a, &a.clone()), "len {len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same(&a, &b), "len {len}, differs at {at}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same(&a, &longer), "len {len} vs {}", len + 1);
        }
    }

    #[test]
    fn names_policies_look_up_get_distinct_digests() {
        let names = [
            "x-envoy-upstream-rq-timeout-ms",
            "x-envoy-upstream-rq-per-try-timeout-ms",
            "x-envoy-expected-rq-timeout-ms",
            "x-envoy-max-retries",
            "x-envoy-retry-on",
            "x-envoy-retry-grpc-on",
            "x-envoy-retriable-status-codes",
            "x-envoy-retriable-header-names",
            "x-envoy-hedge-on-per-try-timeout",
            "x-envoy-upstream-rq-timeout-alt-response",
            "x-request-timeout-ms",
            "grpc-timeout",
            "x-request-id",
            "x-forwarded-proto",
            "x-forwarded-for",
            "x-version",
            "x-version-override",
            "x-served-version",
            "x-user-id",
            "end-user",
            "authorization",
            "cookie",
            "content-type",
            "user-agent",
            ":authority",
            ":path",
            ":method",
            ":scheme",
            "x-api-key",
            "x-shadow",
        ];
        let mut seen = std::collections::HashMap::new();
        for n in names {
            if let Some(other) = seen.insert(name_digest(n.as_bytes()), n) {
                panic!("{n} and {other} share a digest");
            }
        }
    }
}
