//! Aggregated audit entries for refused and failed requests.
//!
//! An anonymous flood must not fill the audit log, and each entry costs a store write and
//! a share of an HSM checkpoint signature. So refused (401/403) and failed requests are
//! counted in memory per bucket, (source address, actor, reason, minute), where the
//! reason is the method, route template and status. Each bucket becomes one audit entry
//! with its `count` once its minute is over (the background flush) or at shutdown.
//! Successful and state-changing requests are never aggregated: their entries are written
//! in the transaction of the change.
//!
//! Memory is bounded: past [`MAX_BUCKETS`] open buckets, new sources share the source
//! `*` of their reason and minute. A flush that fails keeps the buckets for the next
//! attempt (counted in `keygate_audit_write_failures_total` and logged), so a count is
//! lost only if the process dies before the store is writable again.

use crate::store::audit::{AuditActor, NewAuditEntry};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Most open buckets; further sources are merged into source `*`.
pub const MAX_BUCKETS: usize = 10_000;
/// Source recorded for requests merged past [`MAX_BUCKETS`].
pub const OVERFLOW_SOURCE: &str = "*";

/// What identifies one bucket. Ordered by minute first, so closed minutes come first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BucketKey {
    /// Unix time of the minute's start.
    pub minute: i64,
    pub source: String,
    pub principal: String,
    pub auth_method: String,
    /// `http:<METHOD> <route template>`.
    pub action: String,
    /// The HTTP status.
    pub outcome: String,
}

/// One refused or failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    pub time: i64,
    pub source: String,
    pub actor: AuditActor,
    pub action: String,
    pub outcome: String,
}

/// Open buckets and their counts.
#[derive(Debug, Default)]
pub struct FailureBuckets {
    open: Mutex<BTreeMap<BucketKey, i64>>,
}

impl FailureBuckets {
    /// Counts one failure in its bucket.
    pub fn count(&self, f: Failure) {
        let mut key = BucketKey {
            minute: f.time - f.time.rem_euclid(60),
            source: f.source,
            principal: f.actor.principal,
            auth_method: f.actor.method,
            action: f.action,
            outcome: f.outcome,
        };
        let mut open = match self.open.lock() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        if open.len() >= MAX_BUCKETS && !open.contains_key(&key) {
            key.source = OVERFLOW_SOURCE.into();
        }
        *open.entry(key).or_insert(0) += 1;
    }

    /// Takes the buckets whose minute ended before `now` (all of them with `all`).
    pub fn take_closed(&self, now: i64, all: bool) -> Vec<(BucketKey, i64)> {
        let current = now - now.rem_euclid(60);
        let mut open = match self.open.lock() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        if all {
            return std::mem::take(&mut *open).into_iter().collect();
        }
        let still_open = open.split_off(&BucketKey {
            minute: current,
            source: String::new(),
            principal: String::new(),
            auth_method: String::new(),
            action: String::new(),
            outcome: String::new(),
        });
        std::mem::replace(&mut *open, still_open)
            .into_iter()
            .collect()
    }

    /// Puts buckets back after a failed flush (adding to any counted meanwhile).
    pub fn restore(&self, buckets: Vec<(BucketKey, i64)>) {
        let mut open = match self.open.lock() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        for (k, n) in buckets {
            *open.entry(k).or_insert(0) += n;
        }
    }

    /// The number of open buckets.
    pub fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Whether no bucket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The audit entry a bucket becomes (its source and count go beside it).
pub fn entry_of(k: &BucketKey) -> NewAuditEntry {
    NewAuditEntry {
        time: k.minute,
        actor: AuditActor {
            principal: k.principal.clone(),
            method: k.auth_method.clone(),
            client_cert_serial: None,
            request_id: None,
        },
        action: k.action.clone(),
        target: k
            .action
            .split_once(' ')
            .map(|(_, r)| r)
            .unwrap_or("")
            .to_string(),
        outcome: k.outcome.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn failure(time: i64, source: &str) -> Failure {
        Failure {
            time,
            source: source.into(),
            actor: AuditActor {
                principal: "anonymous".into(),
                method: "none".into(),
                client_cert_serial: None,
                request_id: Some("r".into()),
            },
            action: "http:GET /api/v1/keys".into(),
            outcome: "401".into(),
        }
    }

    #[test]
    fn one_bucket_per_source_reason_and_minute_and_only_closed_minutes_flush() {
        let b = FailureBuckets::default();
        for t in 120..150 {
            b.count(failure(t, "10.0.0.1"));
        }
        b.count(failure(179, "10.0.0.2"));
        b.count(failure(180, "10.0.0.1"));
        assert!(
            b.take_closed(179, false).is_empty(),
            "minute 120 is still open"
        );
        let closed = b.take_closed(180, false);
        assert_eq!(closed.len(), 2);
        assert_eq!(closed[0].0.source, "10.0.0.1");
        assert_eq!(closed[0].1, 30);
        assert_eq!(closed[1].1, 1);
        assert_eq!(b.len(), 1);
        let e = entry_of(&closed[0].0);
        assert_eq!((e.time, e.target.as_str()), (120, "/api/v1/keys"));
        let rest = b.take_closed(180, true);
        assert_eq!(rest.len(), 1);
        assert!(b.is_empty());
        b.restore(rest);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn sources_past_the_bound_share_one_bucket() {
        let b = FailureBuckets::default();
        for i in 0..MAX_BUCKETS + 50 {
            b.count(failure(60, &format!("s{i}")));
        }
        assert_eq!(b.len(), MAX_BUCKETS + 1);
        let all = b.take_closed(0, true);
        let overflow = all
            .iter()
            .find(|(k, _)| k.source == OVERFLOW_SOURCE)
            .unwrap();
        assert_eq!(overflow.1, 50);
    }
}
