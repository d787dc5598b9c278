//! Login sessions and their rotating refresh tokens.
//!
//! A session is opened by the password grant. Each refresh token it is ever given is kept
//! as its hardware HMAC, with `used_at` set when it is exchanged, so presenting a token a
//! second time is recognisable as reuse (RFC 9700 §4.14) rather than as an unknown token.
//!
//! Concurrency: every multi-statement change starts with a write, so SQLite takes its
//! write lock first and concurrent logins or refreshes serialise instead of interleaving.
//! That is what keeps the per-user cap exact under concurrent logins.

use super::{Store, StoreError};
reuse_shared!(sessions);
use sqlx::Row;

shared! {
/// A session as listed to its owner.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: i64,
    pub revoked_at: Option<i64>,
}

/// A refresh token's stored form.
#[derive(Debug, Clone)]
pub struct RefreshDigest {
    pub mac: Vec<u8>,
    pub mac_ring: String,
    pub mac_version: i64,
    /// The public id the token carries (docs/tokens.md "Refresh token format").
    pub public_id: Option<String>,
}

/// A new session with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub username: String,
    pub expires_at: i64,
    pub refresh: RefreshDigest,
    pub max_per_user: u32,
    pub now: i64,
}

/// What exchanging a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// The token was current; it is now used and `next` replaces it.
    Rotated {
        session_id: String,
        username: String,
        role: String,
        expires_at: i64,
    },
    /// The token had been used before: the session is now revoked.
    Reused { session_id: String },
    /// Unknown token, or its session is revoked, expired, or its user is gone.
    Invalid,
}

/// What a refresh token is, for introspection.
#[derive(Debug, Clone)]
pub struct RefreshInfo {
    pub session_id: String,
    pub username: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// Current: unused, in a live session of an existing user.
    pub active: bool,
    /// The user's current role, if the user exists.
    pub role: Option<String>,
}
}

const SESSION_COLUMNS: &str = "id, username, created_at, expires_at, last_used_at, revoked_at";

fn session_from_row(row: &super::DbRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: row.try_get(0)?,
        username: row.try_get(1)?,
        created_at: row.try_get(2)?,
        expires_at: row.try_get(3)?,
        last_used_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
    })
}

impl Store {
    /// Opens a session and revokes the user's oldest live sessions beyond
    /// `max_per_user`, in one transaction. Returns the ids it revoked.
    pub async fn open_session(&self, s: &NewSession) -> Result<Vec<String>, StoreError> {
        let mut tx = super::begin(self.pool()).await?;
        sqlx::query(
            "INSERT INTO sessions (id, username, created_at, expires_at, last_used_at)
             VALUES ($1, $2, $3, $4, $3)",
        )
        .bind(&s.id)
        .bind(&s.username)
        .bind(s.now)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await?;
        insert_refresh(&mut tx, &s.id, &s.refresh, s.now).await?;
        let evicted: Vec<String> = sqlx::query_scalar(&format!(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'session-limit'
             WHERE id IN (
                 SELECT id FROM sessions
                 WHERE username = $1 AND revoked_at IS NULL AND expires_at > $2
                       AND kind <> 'console-api-key'
                 ORDER BY created_at DESC, {rowid} DESC
                 {no_limit} OFFSET $3)
             RETURNING id",
            rowid = super::ROWID,
            no_limit = super::NO_LIMIT
        ))
        .bind(&s.username)
        .bind(s.now)
        .bind(i64::from(s.max_per_user))
        .fetch_all(&mut *tx)
        .await?;
        for id in &evicted {
            super::changes::record(&mut tx, super::changes::Topic::Session, id).await?;
        }
        tx.commit().await?;
        Ok(evicted)
    }

    /// Exchanges the refresh token whose MAC is `mac` for `next`, atomically.
    pub async fn exchange_refresh(
        &self,
        mac: &[u8],
        next: &RefreshDigest,
        now: i64,
    ) -> Result<Exchange, StoreError> {
        let mut tx = super::begin(self.pool()).await?;
        // The write comes first: two exchanges of one token serialise here, and exactly
        // one of them sees the token unused.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 WHERE mac = $1 AND used_at IS NULL",
        )
        .bind(mac)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(
            "SELECT s.id, s.username, s.revoked_at, s.expires_at, u.role
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
             LEFT JOIN users u ON u.username = s.username
             WHERE t.mac = $1",
        )
        .bind(mac)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Exchange::Invalid);
        };
        let session_id: String = row.try_get(0)?;
        let username: String = row.try_get(1)?;
        let revoked_at: Option<i64> = row.try_get(2)?;
        let expires_at: i64 = row.try_get(3)?;
        let role: Option<String> = row.try_get(4)?;
        if !claimed {
            if revoked_at.is_none() {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = 'refresh-token-reused'
                     WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(&session_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                super::changes::record(&mut tx, super::changes::Topic::Session, &session_id)
                    .await?;
                tx.commit().await?;
                return Ok(Exchange::Reused { session_id });
            }
            return Ok(Exchange::Invalid);
        }
        let (Some(role), None, true) = (role, revoked_at, expires_at > now) else {
            // Dropping the transaction rolls the claim back: nothing changed.
            return Ok(Exchange::Invalid);
        };
        insert_refresh(&mut tx, &session_id, next, now).await?;
        sqlx::query("UPDATE sessions SET last_used_at = $2 WHERE id = $1")
            .bind(&session_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Exchange::Rotated {
            session_id,
            username,
            role,
            expires_at,
        })
    }

    /// The stored MAC of the refresh token with public id `public_id`, used or not.
    pub async fn refresh_mac_by_public_id(
        &self,
        public_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT mac FROM refresh_tokens WHERE public_id = $1")
                .bind(public_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Until when a refresh token in the old format (no public id) can matter: the
    /// latest expiry of a live session holding one, used or not (a used one must still
    /// be recognised as reuse). `None` when there is none.
    pub async fn legacy_refresh_horizon(&self, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(s.expires_at) FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
             WHERE t.public_id IS NULL AND s.revoked_at IS NULL AND s.expires_at > $1",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?)
    }

    /// Looks a refresh token up without changing anything.
    pub async fn refresh_info(
        &self,
        mac: &[u8],
        now: i64,
    ) -> Result<Option<RefreshInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.username, t.issued_at, s.expires_at,
                    t.used_at IS NULL AND s.revoked_at IS NULL AND s.expires_at > $2
                        AND u.username IS NOT NULL,
                    u.role
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
             LEFT JOIN users u ON u.username = s.username
             WHERE t.mac = $1",
        )
        .bind(mac)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(RefreshInfo {
                session_id: r.try_get(0)?,
                username: r.try_get(1)?,
                issued_at: r.try_get(2)?,
                expires_at: r.try_get(3)?,
                active: r.try_get::<bool, _>(4)?,
                role: r.try_get(5)?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// Revokes the session holding the refresh token `mac`; returns its id if it was live.
    pub async fn revoke_session_by_refresh(
        &self,
        mac: &[u8],
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self
            .begin_audited("session.revoke", "by-refresh-token", now)
            .await?;
        let id: Option<String> = sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'revoked'
             WHERE revoked_at IS NULL
               AND id = (SELECT session_id FROM refresh_tokens WHERE mac = $1)
             RETURNING id",
        )
        .bind(mac)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        // Nothing revoked: the entry rolls back with the transaction.
        if let Some(id) = &id {
            super::changes::record(&mut tx, super::changes::Topic::Session, id).await?;
            tx.commit().await?;
        }
        Ok(id)
    }

    /// Revokes session `id`; returns whether it was live.
    pub async fn revoke_session(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_audited("session.revoke", id, now).await?;
        let r = sqlx::query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let revoked = r.rows_affected() == 1;
        if revoked {
            super::changes::record(&mut tx, super::changes::Topic::Session, id).await?;
            tx.commit().await?;
        }
        Ok(revoked)
    }

    pub async fn get_session(&self, id: &str) -> Result<SessionRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(self.pool())
        .await?;
        Ok(session_from_row(&row)?)
    }

    /// A user's live sessions, newest first.
    pub async fn list_sessions(
        &self,
        username: &str,
        now: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions
             WHERE username = $1 AND revoked_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC, {} DESC",
            super::ROWID
        ))
        .bind(username)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(session_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// Ids of sessions revoked at or after `since` and not yet expired: their access
    /// tokens may still be in circulation, so the denylist must know them.
    pub async fn recently_revoked_sessions(
        &self,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, revoked_at FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at >= $1",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        super::text_int_pairs(&rows)
    }

    /// Deletes up to `batch` sessions (and, by cascade, their refresh tokens) that ended
    /// before `cutoff`. Returns how many it deleted.
    pub async fn purge_sessions(&self, cutoff: i64, batch: u32) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions
                 WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)
                 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }
}

async fn insert_refresh(
    tx: &mut super::DbConn,
    session_id: &str,
    d: &RefreshDigest,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (mac, session_id, mac_ring, mac_version, issued_at, public_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&d.mac)
    .bind(session_id)
    .bind(&d.mac_ring)
    .bind(d.mac_version)
    .bind(now)
    .bind(&d.public_id)
    .execute(tx)
    .await?;
    Ok(())
}
