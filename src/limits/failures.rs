//! A failure limiter: failures are counted by a GCRA bucket per key, and a key whose
//! bucket runs dry is locked until a cell comes back. Checking a key does not count
//! anything, so successes are never limited by it.
//!
//! Used per source address (failed requests), per API-key id and refresh-token id
//! (wrong secrets for a known id) and per key-file accessID (refused assertions).

use super::{Keyed, Rate};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys held locked at once; beyond it the soonest-to-expire lock is dropped first.
const MAX_LOCKED: usize = 100_000;

pub struct FailureLimiter<K: Hash + Eq + Clone> {
    bucket: Keyed<K>,
    locked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        FailureLimiter {
            bucket: Keyed::new(rate),
            locked: Mutex::new(HashMap::new()),
        }
    }

    /// How much longer `key` is locked, if it is.
    pub fn locked(&self, key: &K) -> Option<Duration> {
        let mut map = self.locked.lock().ok()?;
        let until = *map.get(key)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            map.remove(key);
            None
        }
    }

    /// Counts a failure for `key`. Returns the lock's length when this failure was one
    /// too many: the key is locked from now on until its bucket has a cell again.
    pub fn failed(&self, key: &K) -> Option<Duration> {
        let wait = self.bucket.check(key).err()?;
        if let Ok(mut map) = self.locked.lock() {
            if map.len() >= MAX_LOCKED {
                let now = Instant::now();
                map.retain(|_, until| *until > now);
                if map.len() >= MAX_LOCKED {
                    if let Some(k) = map.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone()) {
                        map.remove(&k);
                    }
                }
            }
            map.insert(key.clone(), Instant::now() + wait);
        }
        Some(wait)
    }

    /// Forgets expired locks and idle buckets.
    pub fn sweep(&self) {
        self.bucket.sweep();
        if let Ok(mut map) = self.locked.lock() {
            let now = Instant::now();
            map.retain(|_, until| *until > now);
        }
    }

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.bucket.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_locks_after_its_burst_of_failures_and_others_do_not() {
        let f = FailureLimiter::new(Rate {
            per_minute: 1,
            burst: 2,
        });
        assert_eq!(f.locked(&"a"), None);
        assert_eq!(f.failed(&"a"), None);
        assert_eq!(f.failed(&"a"), None);
        assert_eq!(f.locked(&"a"), None, "two failures are within the burst");
        let wait = f.failed(&"a").expect("the third failure locks");
        assert!(wait > Duration::ZERO);
        assert!(f.locked(&"a").is_some());
        assert_eq!(f.locked(&"b"), None);
    }
}
