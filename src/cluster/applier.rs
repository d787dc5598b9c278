//! The one task that applies the change feed to this replica, in sequence order.
//!
//! Each round reads the head; when it moved, the changes after this replica's position
//! are read in batches. Revocations (`session`, `token`) are patched into the denylist at
//! once; every other topic reloads its cache from the store, once per batch, in
//! dependency order: key versions, custom roles (every record names a role), users'
//! roles, API keys, key files, OAuth servers. The position advances only after the whole batch applied, so
//! a failed reload is retried from the same place (reloads and denylist entries are
//! idempotent). A gap before the first row (the purge removed rows this replica never
//! read), a head behind the position (a restored store) or an unknown topic (a newer
//! keygate) reloads every cache and the denylist instead.

use crate::runtime::{now, Runtime};
use crate::store::changes::{Change, Topic};
use crate::store::StoreError;
use std::sync::Arc;

/// Changes read per query.
const BATCH: u32 = 500;

/// Caches reloaded by topic, in the order a batch reloads them.
const RELOAD_ORDER: [Topic; 6] = [
    Topic::Keys,
    Topic::Roles,
    Topic::Users,
    Topic::ApiKeys,
    Topic::KeyFiles,
    Topic::OauthServers,
];

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading the change feed: {0}")]
    Store(#[from] StoreError),
    #[error("reloading {topic}: {reason}")]
    Reload { topic: &'static str, reason: String },
}

/// Starts the applier: every `api_keys.refresh_interval`, or at once when
/// [`crate::cluster::feed::Feed::wake`] is called. It stops when the runtime is dropped.
pub fn spawn(rt: &Arc<Runtime>) {
    let weak = Arc::downgrade(rt);
    let feed = rt.feed.clone();
    let poll = rt.config.api_keys.refresh_interval.0;
    feed.start();
    spawn_listener(rt);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = feed.woken() => {}
            }
            let Some(rt) = weak.upgrade() else { break };
            // On the store's dedicated connection: a pool exhausted by requests cannot
            // hold the apply back (docs/deployment.md, "Connection budget").
            match crate::store::on_feed_connection(apply_pending(&rt, now())).await {
                Ok(n) => {
                    feed.applied();
                    if n > 0 {
                        tracing::debug!(
                            changes = n,
                            position = feed.position(),
                            "applied the change feed"
                        );
                    }
                }
                Err(e) => {
                    metrics::counter!("keygate_change_feed_errors_total").increment(1);
                    tracing::warn!(error = %e, position = feed.position(),
                        "cannot apply the change feed; retrying (the replica turns unready once cluster.max_staleness passes)");
                }
            }
        }
    });
}

/// On PostgreSQL, wakes the applier when another replica commits a change (`LISTEN`), so a
/// revocation propagates in milliseconds rather than within a poll interval. The poll
/// stays the source of truth: a lost notification, or a listener that is reconnecting,
/// costs latency, never correctness.
fn spawn_listener(rt: &Arc<Runtime>) {
    let store = rt.store.clone();
    let feed = rt.feed.clone();
    let weak = Arc::downgrade(rt);
    tokio::spawn(async move {
        let wake = move || feed.wake();
        loop {
            let Some(e) = store.listen_for_changes(&wake).await else {
                return; // a store without notifications
            };
            if weak.upgrade().is_none() {
                return;
            }
            tracing::warn!(error = %e, "change-feed notifications lost; polling meanwhile, reconnecting in 1 s");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// Applies every change after this replica's position; returns how many it read.
pub async fn apply_pending(rt: &Runtime, now: i64) -> Result<usize, ApplyError> {
    let head = rt.store.change_head().await?;
    let mut position = rt.feed.position();
    if head == position {
        return Ok(0);
    }
    if head < position {
        tracing::warn!(position, head, "the change feed is behind this replica (was the store restored?); reloading everything");
        reload_all(rt, now).await?;
        rt.feed.reset(head);
        return Ok(0);
    }
    let mut applied = 0;
    loop {
        let batch = rt.store.changes_after(position, BATCH).await?;
        let Some(last) = batch.last().map(|c| c.seq) else {
            if position < head {
                // The head moved past us but no row after our position is left: every
                // change we never read was purged. Without a full reload this replica
                // would call itself current while trusting what those changes revoked.
                tracing::warn!(position, head,
                    "changes this replica never read were purged (it fell behind by more than the feed's retention); reloading everything");
                reload_all(rt, now).await?;
                rt.feed.advance(head);
            }
            break;
        };
        if batch.first().map(|c| c.seq) != Some(position + 1) {
            tracing::warn!(position, head,
                "changes this replica never read were purged (it fell behind by more than the feed's retention); reloading everything");
            reload_all(rt, now).await?;
            rt.feed.advance(head.max(last));
            return Ok(applied);
        }
        apply_batch(rt, &batch, now).await?;
        position = last;
        rt.feed.advance(position);
        applied += batch.len();
        if batch.len() < BATCH as usize {
            break;
        }
    }
    Ok(applied)
}

async fn apply_batch(rt: &Runtime, batch: &[Change], now: i64) -> Result<(), ApplyError> {
    let mut reload = [false; RELOAD_ORDER.len()];
    let mut everything = false;
    for c in batch {
        match c.topic {
            Some(Topic::Session) => rt.tokens.sessions_ended(std::slice::from_ref(&c.key), now),
            Some(Topic::Token) => rt.tokens.token_revoked_elsewhere(&c.key, now),
            Some(t) => {
                if let Some(i) = RELOAD_ORDER.iter().position(|r| *r == t) {
                    reload[i] = true;
                }
            }
            None => everything = true,
        }
    }
    if everything {
        return reload_all(rt, now).await;
    }
    for (topic, wanted) in RELOAD_ORDER.iter().zip(reload) {
        if wanted {
            reload_topic(rt, *topic).await?;
        }
    }
    Ok(())
}

async fn reload_topic(rt: &Runtime, topic: Topic) -> Result<(), ApplyError> {
    let failed = |reason: String| ApplyError::Reload {
        topic: topic.name(),
        reason,
    };
    match topic {
        Topic::Keys => {
            rt.keys.refresh().await.map_err(|e| failed(e.to_string()))?;
            // A MAC key may have been regenerated elsewhere: drop remembered MACs.
            rt.api_keys.forget_verified();
            Ok(())
        }
        Topic::Roles => rt.roles.reload().await.map_err(|e| failed(e.to_string())),
        Topic::Users => rt.users.reload().await.map_err(|e| failed(e.to_string())),
        Topic::ApiKeys => rt
            .api_keys
            .reload()
            .await
            .map_err(|e| failed(e.to_string())),
        Topic::KeyFiles => rt
            .key_files
            .reload()
            .await
            .map_err(|e| failed(e.to_string())),
        Topic::OauthServers => rt.oauth.reload().await.map_err(|e| failed(e.to_string())),
        Topic::Session | Topic::Token => Ok(()),
    }
}

/// Applies every pending change now, before a decision that must see the store's
/// current state (an approved operation about to run on this replica, while the change
/// that created its ring may still be on its way here).
pub async fn catch_up(rt: &Runtime, now: i64) -> Result<(), crate::services::ServiceError> {
    apply_pending(rt, now)
        .await
        .map(|_| ())
        .map_err(|e| crate::services::ServiceError::StoreUnavailable(e.to_string()))
}

/// Reloads every cache and adds every revocation in force to the denylist.
pub async fn reload_all(rt: &Runtime, now: i64) -> Result<(), ApplyError> {
    for topic in RELOAD_ORDER {
        reload_topic(rt, topic).await?;
    }
    rt.tokens
        .reload_denylist(now)
        .await
        .map_err(|e| ApplyError::Reload {
            topic: "revocations",
            reason: e.to_string(),
        })
}

/// Deletes change rows older than [`crate::store::changes::RETENTION_SECS`], in batches
/// of `batch`; the purge job calls it. Returns how many it deleted.
pub async fn purge(rt: &Runtime, now: i64, batch: u32) -> Result<u64, StoreError> {
    let before = now.saturating_sub(crate::store::changes::RETENTION_SECS);
    let mut total = 0;
    loop {
        let n = rt.store.purge_changes(before, batch).await?;
        total += n;
        if n < u64::from(batch) {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
