//! The per-VM memory of verified credentials: tokens by a fast digest
//! (compared byte for byte on a hit) and basic-auth checks, each bounded
//! and oldest-first.

use super::*;
use crate::bytes::same;
use std::collections::{HashMap, VecDeque};

/// Bounded per-VM memory of verified credentials.
pub struct Caches {
    /// By a fast 128-bit hash of (provider, token); a hit counts only if the
    /// stored token is byte-for-byte the one presented, so a collision is a
    /// miss (verified again), never another token's identity. (A SHA-256 key
    /// cost a 600-byte token about 20k instructions per request in Envoy.)
    pub(super) tokens: Lru<u128, CachedToken>,
    pub(super) basic: Lru<[u8; 32], bool>,
    /// The (provider, key) of the token last accepted from this cache or
    /// put in it: a client on a keep-alive connection sends one token
    /// request after request, and trying it first skips the key's hash
    /// (xxh3 with 128-bit multiplies, library calls on 32-bit Wasm).
    last_token: Option<(usize, u128)>,
}

#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) token: Box<[u8]>,
    pub(super) identity: Identity,
    /// Unix seconds after which the entry is no longer used.
    pub(super) valid_until: u64,
}

/// Hashes keys that are already digests (xxh3-128, SHA-256) by folding
/// their bytes: SipHash over them cost more than the rest of a cache hit.
/// Only verified credentials are inserted, so an attacker cannot fill a
/// bucket with chosen keys.
#[derive(Default)]
pub(super) struct Digest(u64);

impl std::hash::Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = self.0.rotate_left(29) ^ (n as u64) ^ ((n >> 64) as u64).rotate_left(32);
    }
    fn write_usize(&mut self, _: usize) {
        // The length prefix of a fixed-size array says nothing.
    }
}

/// A small insertion-ordered cache: the oldest entry goes first.
pub(super) struct Lru<K, V> {
    pub(super) map: HashMap<K, V, std::hash::BuildHasherDefault<Digest>>,
    pub(super) order: VecDeque<K>,
    pub(super) capacity: usize,
}

impl<K: std::hash::Hash + Eq + Copy, V> Lru<K, V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::default(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(super) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub(super) fn insert(&mut self, k: K, v: V) {
        if self.capacity == 0 {
            return;
        }
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub(super) fn remove(&mut self, k: &K) {
        if self.map.remove(k).is_some() {
            self.order.retain(|x| x != k);
        }
    }
}

impl Caches {
    pub fn new(capacity: usize) -> Self {
        Self {
            tokens: Lru::new(capacity),
            basic: Lru::new(capacity),
            last_token: None,
        }
    }

    /// Provider `provider`'s cached entry for the token `raw` (every byte
    /// equal), with its key; the key alone when there is none.
    pub(super) fn token(&mut self, raw: &[u8], provider: usize) -> (u128, Option<&CachedToken>) {
        let tokens = &self.tokens.map;
        if let Some((p, key)) = self.last_token {
            if p == provider {
                if let Some(hit) = tokens.get(&key).filter(|h| same(&h.token, raw)) {
                    return (key, Some(hit));
                }
            }
        }
        let key = token_key(raw, provider);
        let hit = tokens.get(&key).filter(|h| same(&h.token, raw));
        if hit.is_some() {
            self.last_token = Some((provider, key));
        }
        (key, hit)
    }

    pub(super) fn insert_token(&mut self, key: u128, provider: usize, entry: CachedToken) {
        self.tokens.insert(key, entry);
        self.last_token = Some((provider, key));
    }

    pub fn len(&self) -> usize {
        self.tokens.map.len() + self.basic.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A token's cache key: a hash of its length, its first 32 and its last 96
/// bytes (the whole token when shorter). A token ends in its signature, so
/// the tail tells tokens apart, and a hit still needs every byte equal
/// (`bytes::same`): tokens sharing a key only miss. To file a token under
/// another's key an attacker needs that token's signature, and gains only a
/// miss. (xxh3 over a whole 600-byte token was the largest part of a hit.)
pub(super) fn token_key(raw: &[u8], provider: usize) -> u128 {
    const HEAD: usize = 32;
    const TAIL: usize = 96;
    let seed = provider as u64 ^ ((raw.len() as u64) << 32);
    if raw.len() <= HEAD + TAIL {
        return xxhash_rust::xxh3::xxh3_128_with_seed(raw, seed);
    }
    let mut sample = [0u8; HEAD + TAIL];
    sample[..HEAD].copy_from_slice(&raw[..HEAD]);
    sample[HEAD..].copy_from_slice(&raw[raw.len() - TAIL..]);
    xxhash_rust::xxh3::xxh3_128_with_seed(&sample, seed)
}
