//! Abuse limits (docs/operations.md "Limits"): GCRA rate limits per source address,
//! per credential and per signing ring, failure limiters per credential id, and the
//! client address as the limits see it.
//!
//! Everything here is in memory and costs a hash lookup: no hardware, no store. The
//! limiters come from `governor` (GCRA). Keys that have been idle long enough to be
//! back at a full bucket are evicted by [`Limits::sweep`], which `serve` runs every
//! minute, so a flood from many addresses cannot grow the maps without bound for long.
//!
//! HTTP answers (429 + `Retry-After` + problem+json) are made in `src/http/`.

pub mod config;
pub mod failures;
pub mod source;

pub use config::{LimitsConfig, Rate};
pub use failures::FailureLimiter;
pub use source::{client_addr, SourceKey, TrustedProxies};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::time::Duration;

/// A request refused by a limit: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    /// Which limit: `source`, `failures`, `credential`, `ring`.
    pub limit: &'static str,
}

impl Limited {
    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let s = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 {
            s + 1
        } else {
            s.max(1)
        }
    }
}

/// A keyed GCRA limiter.
pub(crate) struct Keyed<K: std::hash::Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: std::hash::Hash + Eq + Clone> Keyed<K> {
    pub(crate) fn new(rate: Rate) -> Self {
        Keyed {
            inner: RateLimiter::keyed(rate.quota()),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one cell for `key`; how long to wait when there is none.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        self.inner
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    pub(crate) fn sweep(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }
}

impl Rate {
    /// The GCRA quota: `burst` cells, one back every `60 / per_minute` seconds.
    pub fn quota(self) -> Quota {
        let per_minute = self.per_minute.max(1);
        let period = Duration::from_secs(60) / per_minute;
        let burst =
            std::num::NonZeroU32::new(self.burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// Every limiter of one server.
pub struct Limits {
    config: LimitsConfig,
    trusted: TrustedProxies,
    unauthenticated: Keyed<SourceKey>,
    failed: FailureLimiter<SourceKey>,
    credential: Keyed<String>,
    ring: Keyed<String>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("enabled", &self.config.enabled)
            .finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Result<Limits, String> {
        let trusted = TrustedProxies::parse(&config.trusted_proxies)?;
        Ok(Limits {
            trusted,
            unauthenticated: Keyed::new(config.unauthenticated),
            failed: FailureLimiter::new(config.failed),
            credential: Keyed::new(config.per_credential),
            ring: Keyed::new(config.per_ring),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted
    }

    fn count(limit: &'static str, retry_after: Duration) -> Limited {
        metrics::counter!("keygate_rate_limited_total", "limit" => limit).increment(1);
        Limited { retry_after, limit }
    }

    /// Is `source` serving a penalty for too many failed requests?
    pub fn check_penalty(&self, source: &SourceKey) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        match self.failed.locked(source) {
            Some(wait) => Err(Self::count("failures", wait)),
            None => Ok(()),
        }
    }

    /// Takes a cell for a request that carries no credential.
    pub fn check_unauthenticated(&self, source: &SourceKey) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        self.unauthenticated
            .check(source)
            .map_err(|w| Self::count("source", w))
    }

    /// Records a failed request from `source`; refused once its failures exceed the quota.
    pub fn record_failure(&self, source: &SourceKey) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        match self.failed.failed(source) {
            Some(wait) => Err(Self::count("failures", wait)),
            None => Ok(()),
        }
    }

    /// Takes a cell from the authenticated caller's own quota.
    /// The per-credential quota of the credential `key` names
    /// ([`Principal::quota_key`](crate::services::Principal::quota_key)); `None` (the
    /// CLI) has none.
    pub fn check_credential(&self, key: Option<&str>) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        match key {
            Some(k) => self
                .credential
                .check(&k.to_string())
                .map_err(|w| Self::count("credential", w)),
            None => Ok(()),
        }
    }

    /// Takes a cell from signing ring `ring`'s quota.
    pub fn check_ring(&self, ring: &str) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        self.ring
            .check(&ring.to_string())
            .map_err(|w| Self::count("ring", w))
    }

    /// Evicts keys whose buckets are full again; reports the sizes as gauges.
    pub fn sweep(&self) {
        self.unauthenticated.sweep();
        self.failed.sweep();
        self.credential.sweep();
        self.ring.sweep();
        metrics::gauge!("keygate_rate_limit_keys", "limit" => "source")
            .set(self.unauthenticated.len() as f64);
        metrics::gauge!("keygate_rate_limit_keys", "limit" => "failures")
            .set(self.failed.len() as f64);
        metrics::gauge!("keygate_rate_limit_keys", "limit" => "credential")
            .set(self.credential.len() as f64);
    }

    /// Runs [`sweep`](Self::sweep) every minute until the process ends.
    pub fn spawn_sweeper(self: &std::sync::Arc<Self>) {
        let limits = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(l) = limits.upgrade() else { break };
                l.sweep();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_allows_its_burst_then_refuses_with_a_wait() {
        let k = Keyed::<u8>::new(Rate {
            per_minute: 1,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(k.check(&1).is_ok());
        }
        let wait = k.check(&1).unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(60));
        // Another key has its own bucket.
        assert!(k.check(&2).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let l = |ms| Limited {
            retry_after: Duration::from_millis(ms),
            limit: "source",
        };
        assert_eq!(l(0).retry_after_secs(), 1);
        assert_eq!(l(1).retry_after_secs(), 1);
        assert_eq!(l(1000).retry_after_secs(), 1);
        assert_eq!(l(1001).retry_after_secs(), 2);
    }
}
