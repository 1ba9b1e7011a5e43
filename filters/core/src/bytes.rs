//! Byte-slice helpers for the request path, written for Wasm: there
//! `memcmp` compares byte by byte, and a token-cache hit compares a whole
//! token.

/// `a == b`: on Wasm sixteen bytes a step with SIMD (a token-cache hit
/// compares a whole 600-byte token), elsewhere eight; the loads are
/// unchecked, as a bounds check per word cost more than the comparison.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    #[cfg(target_arch = "wasm32")]
    if n >= 16 {
        // SAFETY: the slices have `n` >= 16 bytes.
        return unsafe { same_simd(a, b) };
    }
    let word = |s: &[u8], i: usize| -> u64 {
        debug_assert!(i + 8 <= s.len());
        // SAFETY: callers pass `i <= n - 8`.
        unsafe { s.as_ptr().add(i).cast::<u64>().read_unaligned() }
    };
    // The last word overlaps the one before it when n is not a multiple of
    // 8. Tokens of one issuer often share a length and a head; they end in
    // their signatures, so two different ones part here.
    let mut differ = word(a, n - 8) ^ word(b, n - 8);
    if differ != 0 {
        return false;
    }
    let mut i = 0;
    while i + 8 < n {
        differ |= word(a, i) ^ word(b, i);
        i += 8;
    }
    differ == 0
}

/// [`same`] for equal lengths of at least sixteen bytes.
///
/// # Safety
/// `a.len() == b.len() >= 16`.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
unsafe fn same_simd(a: &[u8], b: &[u8]) -> bool {
    use core::arch::wasm32::{v128, v128_any_true, v128_load, v128_or, v128_xor};
    let n = a.len();
    let differ = |at: usize| -> v128 {
        // SAFETY: every load reads sixteen bytes from at most `n - 16`.
        unsafe {
            v128_xor(
                v128_load(a.as_ptr().add(at).cast()),
                v128_load(b.as_ptr().add(at).cast()),
            )
        }
    };
    // The last block first (it overlaps the one before it); see `same`.
    let mut acc = differ(n - 16);
    if v128_any_true(acc) {
        return false;
    }
    let mut at = 0;
    while at + 16 < n {
        acc = v128_or(acc, differ(at));
        at += 16;
    }
    !v128_any_true(acc)
}

/// Whether `haystack` holds `needle`. On Wasm, sixteen bytes a step with
/// SIMD: a 600-byte bearer token is scanned for `,` on every request.
#[inline]
pub fn has_byte(haystack: &[u8], needle: u8) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        has_byte_simd(haystack, needle)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        haystack.contains(&needle)
    }
}

#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn has_byte_simd(haystack: &[u8], needle: u8) -> bool {
    use core::arch::wasm32::{u8x16_eq, u8x16_splat, v128_any_true, v128_load, v128_or};
    let wanted = u8x16_splat(needle);
    let (n, base) = (haystack.len(), haystack.as_ptr());
    // SAFETY: every load reads sixteen bytes starting at most `n - 16` past
    // `base`; Wasm loads need no alignment.
    let eq = |at: usize| u8x16_eq(unsafe { v128_load(base.add(at).cast()) }, wanted);
    let mut at = 0;
    // Sixty-four bytes a step, one branch for the four blocks.
    while at + 64 <= n {
        let any = v128_or(
            v128_or(eq(at), eq(at + 16)),
            v128_or(eq(at + 32), eq(at + 48)),
        );
        if v128_any_true(any) {
            return true;
        }
        at += 64;
    }
    while at + 16 <= n {
        if v128_any_true(eq(at)) {
            return true;
        }
        at += 16;
    }
    haystack[at..].contains(&needle)
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
}
