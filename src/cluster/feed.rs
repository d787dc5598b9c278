//! This replica's position in the change feed, the time of its last successful apply,
//! and the wake-up hook.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared by the applier (which writes it), `/readyz` and the staleness guard.
#[derive(Debug)]
pub struct Feed {
    /// Sequence number of the last change applied.
    position: AtomicI64,
    /// Milliseconds after `epoch` of the last successful apply.
    applied_ms: AtomicU64,
    epoch: Instant,
    /// Set once the applier runs. A process without one (a CLI command, an in-process
    /// test) reads the store directly and is never stale.
    running: AtomicBool,
    max_staleness: Duration,
    wake: tokio::sync::Notify,
}

impl Feed {
    /// A feed positioned at `position`: the head read before the caches were loaded.
    pub fn new(position: i64, max_staleness: Duration) -> Feed {
        Feed {
            position: AtomicI64::new(position),
            applied_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            running: AtomicBool::new(false),
            max_staleness,
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    /// Moves the position forward (never back: the applier and a catch-up may both
    /// have applied the same changes).
    pub(crate) fn advance(&self, position: i64) {
        self.position.fetch_max(position, Ordering::AcqRel);
    }

    /// Sets the position, also backwards (the store was restored to an older state).
    pub(crate) fn reset(&self, position: i64) {
        self.position.store(position, Ordering::Release);
    }

    fn millis_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a successful apply (or a poll that found nothing new).
    pub(crate) fn applied(&self) {
        self.applied_ms
            .store(self.millis_since_epoch(), Ordering::Release);
        metrics::gauge!("keygate_change_feed_position").set(self.position() as f64);
    }

    pub(crate) fn start(&self) {
        self.applied();
        self.running.store(true, Ordering::Release);
    }

    /// How long ago the last successful apply was; `None` without an applier.
    pub fn age(&self) -> Option<Duration> {
        if !self.running.load(Ordering::Acquire) {
            return None;
        }
        let last = self.applied_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(
            self.millis_since_epoch().saturating_sub(last),
        ))
    }

    /// The age of the last successful apply when it is older than `cluster.max_staleness`.
    pub fn stale_for(&self) -> Option<Duration> {
        self.age().filter(|a| *a > self.max_staleness)
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// The wake-up hook: makes the applier poll now instead of at its next tick. A
    /// notification source (PostgreSQL `LISTEN/NOTIFY`) calls it; the poll stays the
    /// source of truth, so a lost wake-up only delays.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_applier_a_process_is_never_stale() {
        let f = Feed::new(3, Duration::from_millis(0));
        assert_eq!(f.age(), None);
        assert_eq!(f.stale_for(), None);
        assert_eq!(f.position(), 3);
    }

    #[test]
    fn a_running_feed_is_stale_once_its_last_apply_is_older_than_the_limit() {
        let fresh = Feed::new(0, Duration::from_secs(3600));
        fresh.start();
        assert_eq!(fresh.stale_for(), None);
        let f = Feed::new(0, Duration::from_millis(10));
        f.start();
        std::thread::sleep(Duration::from_millis(30));
        assert!(f.stale_for().is_some());
    }
}
