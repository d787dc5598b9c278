//! The change feed (`changes` table, migration 0060): one row per change that replicas
//! must apply to what they hold in memory, written in the same transaction as the change
//! itself (docs/deployment.md, "Replicas and the change feed").
//!
//! `change_head` hands out sequence numbers. Its one row is updated inside the writing
//! transaction, so it stays locked until commit: numbers become visible in order and
//! without gaps. A reader that finds the first row after its position missing knows that
//! the purge removed rows it never read, and reloads everything.

use super::{Store, StoreError};
reuse_shared!(changes);
use sqlx::Row;

shared! {
/// How long change rows are kept. A replica that falls further behind than this (it was
/// cut off from the store, or paused) finds a gap and reloads every cache instead.
pub const RETENTION_SECS: i64 = 3600;

/// What changed. Stored as text, so a newer keygate may add topics; a reader that does
/// not know a topic reloads everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// API-key records: the authentication index.
    ApiKeys,
    /// API key files: live files and their generations.
    KeyFiles,
    /// Registered OAuth servers (IdPs) and their keys.
    OauthServers,
    /// Custom roles.
    Roles,
    /// Local users (the role each holds); the key is the username.
    Users,
    /// Key versions and their states.
    Keys,
    /// A session ended (logout, revocation, refresh-token reuse, eviction, user change);
    /// the key is the session id.
    Session,
    /// An access token was revoked; the key is its `jti`.
    Token,
}

impl Topic {
    pub const ALL: [Topic; 8] = [
        Topic::ApiKeys,
        Topic::KeyFiles,
        Topic::OauthServers,
        Topic::Roles,
        Topic::Users,
        Topic::Keys,
        Topic::Session,
        Topic::Token,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topic::ApiKeys => "api_keys",
            Topic::KeyFiles => "key_files",
            Topic::OauthServers => "oauth_servers",
            Topic::Roles => "roles",
            Topic::Users => "users",
            Topic::Keys => "keys",
            Topic::Session => "session",
            Topic::Token => "token",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// One row of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    /// `None` for a topic this keygate does not know (written by a newer one).
    pub topic: Option<Topic>,
    pub key: String,
    pub at: i64,
}

}

/// Appends a change inside `tx`, the transaction that makes the change.
pub(crate) async fn record(
    tx: &mut super::DbConn,
    topic: Topic,
    key: &str,
) -> Result<(), sqlx::Error> {
    let seq: i64 =
        sqlx::query_scalar("UPDATE change_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("INSERT INTO changes (seq, topic, key, at) VALUES ($1, $2, $3, $4)")
        .bind(seq)
        .bind(topic.name())
        .bind(key)
        .bind(crate::clock::now())
        .execute(&mut *tx)
        .await?;
    if let Some(notify) = super::NOTIFY_CHANGE {
        sqlx::query(notify).execute(&mut *tx).await?;
    }
    Ok(())
}

impl Store {
    /// The sequence number of the newest change (0 before the first).
    pub async fn change_head(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM change_head WHERE id = 1")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// At most `limit` changes after `after`, oldest first.
    pub async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, topic, key, at FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let topic: String = r.try_get(1)?;
                Ok(Change {
                    seq: r.try_get(0)?,
                    topic: Topic::parse(&topic),
                    key: r.try_get(2)?,
                    at: r.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Deletes at most `batch` changes written before `before`; returns how many.
    pub async fn purge_changes(&self, before: i64, batch: u32) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM changes WHERE seq IN
                 (SELECT seq FROM changes WHERE at < $1 ORDER BY seq LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }
}

shared! {
#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let s = Store::open(&url, crate::store::DEFAULT_MAX_CONNECTIONS).await.unwrap();
        (dir, s)
    }

    async fn write(s: &Store, topic: Topic, key: &str, commit: bool) {
        let mut tx = s.pool.begin().await.unwrap();
        record(&mut tx, topic, key).await.unwrap();
        if commit {
            tx.commit().await.unwrap();
        }
    }

    #[tokio::test]
    async fn changes_are_numbered_in_commit_order_without_gaps() {
        let (_d, s) = store().await;
        assert_eq!(s.change_head().await.unwrap(), 0);
        write(&s, Topic::ApiKeys, "k1", true).await;
        // A rolled-back change leaves no row and no hole in the numbering.
        write(&s, Topic::Roles, "gone", false).await;
        write(&s, Topic::Session, "s1", true).await;
        let all = s.changes_after(0, 10).await.unwrap();
        let seen: Vec<(i64, Option<Topic>, &str)> = all
            .iter()
            .map(|c| (c.seq, c.topic, c.key.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, Some(Topic::ApiKeys), "k1"),
                (2, Some(Topic::Session), "s1")
            ]
        );
        assert_eq!(s.change_head().await.unwrap(), 2);
        assert_eq!(s.changes_after(1, 10).await.unwrap().len(), 1);
        assert_eq!(s.changes_after(0, 1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn purge_removes_old_rows_in_batches_but_never_moves_the_head() {
        let (_d, s) = store().await;
        for i in 0..5 {
            write(&s, Topic::Token, &format!("j{i}"), true).await;
        }
        let future = crate::clock::now() + 10;
        assert_eq!(s.purge_changes(future, 3).await.unwrap(), 3);
        assert_eq!(s.purge_changes(future, 3).await.unwrap(), 2);
        assert!(s.changes_after(0, 10).await.unwrap().is_empty());
        assert_eq!(s.change_head().await.unwrap(), 5);
        write(&s, Topic::Token, "j5", true).await;
        assert_eq!(s.changes_after(0, 10).await.unwrap()[0].seq, 6);
    }

    #[test]
    fn every_topic_round_trips_through_its_name() {
        for t in Topic::ALL {
            assert_eq!(Topic::parse(t.name()), Some(t));
        }
        assert_eq!(Topic::parse("from-a-newer-keygate"), None);
    }
}
}
