//! Background work of a serving process: advancing key rotations on schedule, and
//! purging expired sessions, denylist entries, assertion ids, login-failure records and
//! old change-feed rows in bounded batches. (Changes made by other processes arrive
//! through the change feed, `crate::cluster::applier`.) Each loop reads the clock once per tick and hands it to the services, which
//! never read it themselves.

use crate::runtime::{now, Runtime};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often rotation checks for due transitions. Checking is an in-memory scan; the
/// store is touched only when something is due.
const ROTATION_TICK: Duration = Duration::from_secs(1);

fn every<F, Fut>(rt: &Arc<Runtime>, period: Duration, mut f: F)
where
    F: FnMut(Arc<Runtime>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak: Weak<Runtime> = Arc::downgrade(rt);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(rt) = weak.upgrade() else { break };
            f(rt).await;
        }
    });
}

/// How long the scheduled-rotation lease is held without renewal; the holder renews it
/// every tick, so another replica takes over this long after the holder stops.
const ROTATION_LEASE_SECS: i64 = 30;

/// Creates versions that scheduled rotation (`rotation.period`) makes due, activates pending versions after the publish
/// delay, retires old ones, and expires approval requests past their time.
pub fn spawn_rotation(rt: &Arc<Runtime>) {
    every(rt, ROTATION_TICK, |rt| async move {
        let at = now();
        let periods = |ring: &str| crate::app::keys::rotation_period(&rt, ring);
        if let Err(e) = rt
            .keys
            .run_schedule(periods, &rt.instance_id, ROTATION_LEASE_SECS, at)
            .await
        {
            tracing::warn!(error = %e, "scheduled rotation failed; retrying next tick");
        }
        if let Err(e) = rt
            .keys
            .advance(crate::app::keys::rotation_times(&rt), at)
            .await
        {
            tracing::warn!(error = %e, "key rotation step failed; retrying next tick");
        }
        if let Err(e) = crate::app::approvals::expire_due(&rt, at).await {
            tracing::warn!(error = %e, "expiring approval requests failed; retrying next tick");
        }
        // The first tick runs at start: requests a killed server left executing.
        if let Err(e) = crate::app::approvals::fail_interrupted(&rt, at).await {
            tracing::warn!(error = %e, "resolving interrupted approval requests failed; retrying next tick");
        }
    });
}

/// Signs a checkpoint of the audit chain every `audit.checkpoint_interval` when entries
/// were added since the last one.
pub fn spawn_audit_checkpoints(rt: &Arc<Runtime>) {
    let period = rt.config.audit.checkpoint_interval.0;
    every(rt, period, |rt| async move {
        rt.audit.checkpoint_if_due(now(), true).await;
    });
}

/// Writes the aggregated entries of refused and failed requests once their minute is
/// over (see `services/audit_buckets.rs`).
pub fn spawn_audit_flush(rt: &Arc<Runtime>) {
    every(rt, Duration::from_secs(10), |rt| async move {
        if let Err(e) = rt.audit.flush_failures(now(), false).await {
            tracing::warn!(error = %e, "writing aggregated audit entries failed; retrying next tick");
        }
    });
}

/// Purges expired rows every `sessions.purge_interval`.
pub fn spawn_purge(rt: &Arc<Runtime>) {
    let period = rt.config.sessions.purge_interval.0;
    every(rt, period, |rt| async move {
        let (batch, at) = (rt.config.sessions.purge_batch, now());
        match rt.tokens.purge(at, batch).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged expired sessions and revocations"),
            Err(e) => tracing::warn!(error = %e, "purge failed; retrying next interval"),
        }
        match rt.key_files.purge(at, batch).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged expired key-file assertion ids"),
            Err(e) => {
                tracing::warn!(error = %e, "purging assertion ids failed; retrying next interval")
            }
        }
        match crate::cluster::applier::purge(&rt, at, batch).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "purged old change-feed rows"),
            Err(e) => {
                tracing::warn!(error = %e, "purging the change feed failed; retrying next interval")
            }
        }
        loop {
            match rt.users.purge_login_failures(at, batch).await {
                Ok(n) if n < u64::from(batch) => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => {
                    tracing::warn!(error = %e, "purging login failures failed; retrying next interval");
                    break;
                }
            }
        }
    });
}
