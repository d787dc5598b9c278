//! Remembers the hardware MAC of API-key secrets that recently authenticated.
//!
//! Computing HMAC(secret) in the token is the costliest step of API-key authentication
//! (about 20 µs of CPU per call on SoftHSM, and a round trip on a network HSM), and the
//! result never changes while the `api-key-mac` key stays the same. This cache keeps the
//! MAC for `ttl`, keyed by a keyed hash of the secret under a random key that exists only
//! in this process's memory, so it never holds the secrets themselves.
//!
//! What it does not change: every request still looks the MAC up in the current key
//! index and compares it in constant time, so deletion, regeneration and expiry apply at
//! once. Only secrets that authenticated are remembered, so garbage cannot fill it.

use aws_lc_rs::hmac;
use std::collections::HashMap;
use std::sync::RwLock;

/// Keyed digest of a secret → (its hardware MAC, when it was remembered).
type Entries = HashMap<[u8; 32], (Vec<u8>, i64)>;

pub struct VerifyCache {
    key: hmac::Key,
    ttl: i64,
    max: usize,
    entries: RwLock<Entries>,
}

impl VerifyCache {
    /// `ttl_secs == 0` disables the cache.
    pub fn new(ttl_secs: i64, max: usize) -> Result<VerifyCache, aws_lc_rs::error::Unspecified> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)?;
        Ok(VerifyCache {
            key,
            ttl: ttl_secs,
            max,
            entries: RwLock::new(HashMap::new()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.ttl > 0 && self.max > 0
    }

    /// The cache key for a presented secret.
    pub fn digest(&self, secret: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.key, secret.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        out
    }

    /// The remembered MAC, if fresh.
    pub fn get(&self, digest: &[u8; 32], now: i64) -> Option<Vec<u8>> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.read().ok()?;
        match entries.get(digest) {
            Some((mac, at)) if now.saturating_sub(*at) < self.ttl => Some(mac.clone()),
            _ => None,
        }
    }

    /// Forgets everything (the MAC key changed, so every remembered MAC is stale).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    pub fn put(&self, digest: [u8; 32], mac: Vec<u8>, now: i64) {
        if !self.enabled() {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= self.max {
                entries.clear();
            }
            entries.insert(digest, (mac, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl_and_a_disabled_cache_remembers_nothing() {
        let c = VerifyCache::new(60, 10).unwrap();
        let d = c.digest("kg_secret");
        c.put(d, vec![1, 2, 3], 1000);
        assert_eq!(c.get(&d, 1059), Some(vec![1, 2, 3]));
        assert_eq!(c.get(&d, 1060), None);
        assert_ne!(c.digest("kg_secret"), c.digest("kg_secreT"));
        let off = VerifyCache::new(0, 10).unwrap();
        off.put(d, vec![1], 1000);
        assert_eq!(off.get(&d, 1000), None);
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let c = VerifyCache::new(60, 2).unwrap();
        for s in ["a", "b", "c"] {
            c.put(c.digest(s), vec![0], 0);
        }
        assert_eq!(c.get(&c.digest("a"), 0), None);
        assert_eq!(c.get(&c.digest("c"), 0), Some(vec![0]));
    }
}
