//! Console sessions (docs/console.md): a `sessions` row of kind `console` plus the SHA-256
//! of its cookie. Opening one evicts the user's oldest live sessions beyond the cap, in
//! the same transaction as the password grant does ([`Store::open_session`]), so browser
//! and API sessions share `sessions.max_per_user`.

use super::{Store, StoreError};
reuse_shared!(console_sessions);
use sqlx::Row;

shared! {

/// A console session to open.
#[derive(Debug, Clone)]
pub struct NewConsoleSession {
    pub id: String,
    pub username: String,
    /// SHA-256 of the cookie value.
    pub cookie_hash: Vec<u8>,
    /// Break-glass sign-in: the API key's binding.
    pub api_key_binding: Option<String>,
    pub expires_at: i64,
    pub max_per_user: u32,
    pub now: i64,
}

/// A console session found by its cookie.
#[derive(Debug, Clone)]
pub struct ConsoleSessionRow {
    pub id: String,
    pub username: String,
    pub expires_at: i64,
    pub last_used_at: i64,
    pub revoked_at: Option<i64>,
    pub api_key_binding: Option<String>,
}

}

impl Store {
    /// Opens a console session; returns the ids of the sessions it evicted. The audit
    /// entry (`console.sign-in`, or `console.sign-in.break-glass` for an API key) commits
    /// with it.
    pub async fn open_console_session(
        &self,
        s: &NewConsoleSession,
    ) -> Result<Vec<String>, StoreError> {
        let (action, kind) = match s.api_key_binding {
            Some(_) => ("console.sign-in.break-glass", "console-api-key"),
            None => ("console.sign-in", "console"),
        };
        let mut tx = self.begin_audited(action, &s.id, s.now).await?;
        sqlx::query(
            "INSERT INTO sessions (id, username, created_at, expires_at, last_used_at, kind)
             VALUES ($1, $2, $3, $4, $3, $5)",
        )
        .bind(&s.id)
        .bind(&s.username)
        .bind(s.now)
        .bind(s.expires_at)
        .bind(kind)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO console_sessions (session_id, cookie_hash, api_key_binding)
             VALUES ($1, $2, $3)",
        )
        .bind(&s.id)
        .bind(&s.cookie_hash)
        .bind(&s.api_key_binding)
        .execute(&mut *tx)
        .await?;
        // A password sign-in is one of the user's sessions and evicts their oldest beyond
        // the cap. A break-glass sign-in is capped per API key and evicts only that key's
        // older break-glass sessions: whoever holds a key owned by someone must not be
        // able to end that person's sessions by signing in repeatedly.
        let sql = if s.api_key_binding.is_some() {
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'session-limit'
             WHERE id IN (
                 SELECT s.id FROM sessions s JOIN console_sessions c ON c.session_id = s.id
                 WHERE c.api_key_binding = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
                 ORDER BY s.created_at DESC, s.{rowid} DESC
                 {no_limit} OFFSET $3)
             RETURNING id"
        } else {
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'session-limit'
             WHERE id IN (
                 SELECT id FROM sessions
                 WHERE username = $1 AND revoked_at IS NULL AND expires_at > $2
                       AND kind <> 'console-api-key'
                 ORDER BY created_at DESC, {rowid} DESC
                 {no_limit} OFFSET $3)
             RETURNING id"
        };
        let evicted: Vec<String> = sqlx::query_scalar(
            &sql.replace("{rowid}", super::ROWID)
                .replace("{no_limit}", super::NO_LIMIT),
        )
        .bind(s.api_key_binding.as_deref().unwrap_or(&s.username))
        .bind(s.now)
        .bind(i64::from(s.max_per_user))
        .fetch_all(&mut *tx)
        .await?;
        // Every replica refuses the evicted sessions' tokens (docs/deployment.md, "The
        // change feed").
        for id in &evicted {
            super::changes::record(&mut tx, super::changes::Topic::Session, id).await?;
        }
        tx.commit().await?;
        Ok(evicted)
    }

    /// The console session whose cookie hashes to `hash`, live or not. One indexed read.
    pub async fn console_session(
        &self,
        hash: &[u8],
    ) -> Result<Option<ConsoleSessionRow>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.username, s.expires_at, s.last_used_at, s.revoked_at,
                    c.api_key_binding
             FROM console_sessions c JOIN sessions s ON s.id = c.session_id
             WHERE c.cookie_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(ConsoleSessionRow {
                id: r.try_get(0)?,
                username: r.try_get(1)?,
                expires_at: r.try_get(2)?,
                last_used_at: r.try_get(3)?,
                revoked_at: r.try_get(4)?,
                api_key_binding: r.try_get(5)?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// Records that a live session was used (the console's idle timeout counts from it).
    pub async fn touch_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_used_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
