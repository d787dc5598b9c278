//! One IdP's JWKS, cached in memory.
//!
//! Why it exists: verifying an IdP token must not mean an HTTP request, yet an IdP's new
//! key must be picked up without a restart, and a flood of tokens with made-up `kid`s
//! must not turn keygate into a load generator against the IdP.
//!
//! - The fetched keys are used for `oauth.jwks_cache_ttl`. After that, a token whose key
//!   is still in the cache verifies at once while one refetch runs in the background;
//!   a token whose key is not there waits for the refetch.
//! - A `kid` the cache does not hold triggers a refetch, at most one per
//!   `oauth.jwks_refetch_interval` per server. Every fetch attempt (first fetch, expiry,
//!   unknown `kid`) counts against that interval.
//! - Single flight: concurrent requests that need a fetch share one. The fetch runs on
//!   its own task, so a client that disconnects cannot cancel it halfway.
//! - A failed fetch keeps the keys already held, and is logged with the server's name.
//!   Why: an IdP outage or a network blip should not lock out every user of that IdP
//!   whose tokens keygate could still verify; a key the IdP withdrew stops verifying at
//!   the next successful fetch. The cost: while the IdP's JWKS cannot be fetched, a
//!   withdrawn key keeps verifying. Deleting or re-registering the server ends that.
//! - [`JwksCache::state`] reports what is held (fetch time, `kid`s) and how the last
//!   attempt went, for the console (docs/console.md); an administrator's "fetch now"
//!   ([`JwksCache::refresh_now`]) obeys the same single flight and interval.

use super::fetch::Fetcher;
use super::keys::{self, VerifyKey};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Cache timings, from `[oauth]`.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub ttl: Duration,
    pub refetch_interval: Duration,
}

#[derive(Debug)]
struct KeySet {
    keys: Vec<VerifyKey>,
    fetched_at: Instant,
    /// The same moment as a unix time, for [`JwksCache::state`].
    fetched_unix: i64,
}

/// One fetch attempt, as [`JwksCache::state`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRecord {
    /// Unix time the attempt ended.
    pub at: i64,
    /// The number of usable keys fetched, or why the fetch failed.
    pub outcome: Result<usize, String>,
}

/// What one server's JWKS cache holds now (per process: each replica fetches on its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheState {
    pub uri: String,
    /// When the keys held were fetched; `None` before the first successful fetch.
    pub fetched_at: Option<i64>,
    /// The `kid` of each key held (`None` for a key without one).
    pub kids: Vec<Option<String>>,
    /// The last fetch attempt, successful or not (a failed one keeps the keys held).
    pub last_attempt: Option<FetchRecord>,
}

/// The JWKS of one registered server.
#[derive(Debug)]
pub struct JwksCache {
    /// The server's name, for logs.
    server: String,
    uri: String,
    current: RwLock<Option<Arc<KeySet>>>,
    /// When the last fetch attempt started; held while a fetch runs (single flight).
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// Bumped at every fetch attempt: a request that waited for the lock sees whether
    /// someone else tried while it waited.
    attempts: AtomicU64,
    /// The last fetch attempt's time and result, for [`JwksCache::state`].
    last_record: RwLock<Option<FetchRecord>>,
}

impl JwksCache {
    pub fn new(server: &str, uri: &str) -> JwksCache {
        JwksCache {
            server: server.to_string(),
            uri: uri.to_string(),
            current: RwLock::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
            last_record: RwLock::new(None),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// What the cache holds now and how its last fetch went.
    pub fn state(&self) -> CacheState {
        let set = self.snapshot();
        let last_attempt = match self.last_record.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        CacheState {
            uri: self.uri.clone(),
            fetched_at: set.as_ref().map(|s| s.fetched_unix),
            kids: set
                .as_ref()
                .map(|s| s.keys.iter().map(|k| k.kid.clone()).collect())
                .unwrap_or_default(),
            last_attempt,
        }
    }

    fn record(&self, outcome: Result<usize, String>) {
        let r = Some(FetchRecord {
            at: crate::clock::now(),
            outcome,
        });
        match self.last_record.write() {
            Ok(mut g) => *g = r,
            Err(poisoned) => *poisoned.into_inner() = r,
        }
    }

    /// Fetches the JWKS now (an administrator's request), within the same single flight
    /// and `oauth.jwks_refetch_interval` limit as a fetch for an unknown `kid`.
    pub async fn refresh_now(self: &Arc<Self>, fetcher: &Fetcher, t: Timings) {
        let seen = self.attempts.load(Ordering::Acquire);
        if let Err(e) = self.spawn_refresh(seen, fetcher, t).await {
            tracing::error!(server = %self.server, error = %e, "JWKS refresh task failed");
        }
    }

    fn candidates(set: Option<&KeySet>, kid: Option<&str>, alg: &str) -> Vec<VerifyKey> {
        let Some(set) = set else { return Vec::new() };
        set.keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)) && k.accepts(alg))
            .cloned()
            .collect()
    }

    /// The keys that may verify a token with this `kid` (any key when it has none) and
    /// `alg`, fetching the JWKS when the cache has none of them. Empty when no key fits
    /// even after that.
    pub async fn keys_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: &str,
        fetcher: &Fetcher,
        t: Timings,
    ) -> Vec<VerifyKey> {
        let seen = self.attempts.load(Ordering::Acquire);
        let set = self.snapshot();
        let found = Self::candidates(set.as_deref(), kid, alg);
        let fresh = set.as_ref().is_some_and(|s| s.fetched_at.elapsed() < t.ttl);
        if !found.is_empty() {
            if !fresh {
                // Stale but holding the key: answer now, refresh behind.
                drop(self.spawn_refresh(seen, fetcher, t));
            }
            return found;
        }
        // Unknown kid, or nothing fetched yet: wait for the (shared) fetch.
        if let Err(e) = self.spawn_refresh(seen, fetcher, t).await {
            tracing::error!(server = %self.server, error = %e, "JWKS refresh task failed");
        }
        Self::candidates(self.snapshot().as_deref(), kid, alg)
    }

    fn spawn_refresh(
        self: &Arc<Self>,
        seen: u64,
        fetcher: &Fetcher,
        t: Timings,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let fetcher = fetcher.clone();
        tokio::spawn(async move { this.refresh(seen, &fetcher, t).await })
    }

    /// Fetches unless someone attempted since `seen` (they answered for us) or the last
    /// attempt is under `refetch_interval` old (rate limit).
    async fn refresh(&self, seen: u64, fetcher: &Fetcher, t: Timings) {
        let mut last = self.last_attempt.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < t.refetch_interval) {
            tracing::debug!(server = %self.server, "JWKS refetch skipped: rate-limited by oauth.jwks_refetch_interval");
            metrics::counter!("keygate_idp_jwks_fetches_total", "outcome" => "rate_limited")
                .increment(1);
            return;
        }
        *last = Some(Instant::now());
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let outcome = match fetcher.get(&self.uri).await {
            Ok(body) => keys::parse_jwks(&body).map_err(|e| format!("not a JWKS: {e}")),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((keys, skipped)) => {
                for s in &skipped {
                    tracing::warn!(server = %self.server, jwks_uri = %self.uri, skipped = %s, "JWKS key not usable");
                }
                if keys.is_empty() {
                    tracing::warn!(server = %self.server, jwks_uri = %self.uri,
                        "JWKS holds no usable signing key (P-256, P-384, Ed25519, RSA >= 2048 bits)");
                }
                tracing::info!(server = %self.server, keys = keys.len(), "fetched JWKS");
                metrics::counter!("keygate_idp_jwks_fetches_total", "outcome" => "ok").increment(1);
                self.record(Ok(keys.len()));
                let set = Some(Arc::new(KeySet {
                    keys,
                    fetched_at: Instant::now(),
                    fetched_unix: crate::clock::now(),
                }));
                match self.current.write() {
                    Ok(mut g) => *g = set,
                    Err(poisoned) => *poisoned.into_inner() = set,
                }
            }
            Err(e) => {
                let held = self.snapshot().map_or(0, |s| s.keys.len());
                tracing::warn!(server = %self.server, jwks_uri = %self.uri, error = %e, keys_kept = held,
                    "JWKS fetch failed; keeping the keys already held");
                metrics::counter!("keygate_idp_jwks_fetches_total", "outcome" => "failed")
                    .increment(1);
                self.record(Err(e));
            }
        }
    }
}
