//! Revoked access tokens, by `jti`, kept until the token would have expired anyway.

use super::{Store, StoreError};

impl Store {
    /// Denylists `jti` until `expires_at`. Revoking twice is not an error.
    pub async fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("token.revoke", jti, super::audit_scope::unix_now())
            .await?;
        let r = sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        // Already revoked: nothing changed, the entry rolls back.
        if r.rows_affected() == 1 {
            super::changes::record(&mut tx, super::changes::Topic::Token, jti).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Every denylist entry still in force at `now`.
    pub async fn revoked_jtis(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= $1")
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        super::text_int_pairs(&rows)
    }

    /// Deletes up to `batch` entries that expired before `cutoff`.
    pub async fn purge_revoked_jtis(&self, cutoff: i64, batch: u32) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM revoked_tokens WHERE jti IN (
                 SELECT jti FROM revoked_tokens WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }
}
