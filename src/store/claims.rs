//! One-time claims in `meta`: which replica does a one-off job when several start on one
//! store at the same moment (the bootstrap super-admin key).
//!
//! A claim is a `meta` row whose value is the time it was taken. The first insert wins.
//! A claim older than `stale_after` whose job never finished (its holder crashed) can be
//! taken over by one replica, with a compare-and-set on the old value.

use super::{Store, StoreError};

impl Store {
    /// Takes claim `key` at `now`; returns whether this call holds it.
    pub async fn claim(&self, key: &str, now: i64, stale_after: i64) -> Result<bool, StoreError> {
        if self.meta_set_once(key, &now.to_string()).await? {
            return Ok(true);
        }
        let Some(old) = self.meta_get(key).await? else {
            // Released meanwhile: try once more.
            return self.meta_set_once(key, &now.to_string()).await;
        };
        let taken_at = old.parse::<i64>().unwrap_or(i64::MIN);
        if now.saturating_sub(taken_at) < stale_after {
            return Ok(false);
        }
        let r = sqlx::query("UPDATE meta SET value = $3 WHERE key = $1 AND value = $2")
            .bind(key)
            .bind(&old)
            .bind(now.to_string())
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives claim `key` up (its job failed), so another start can take it at once.
    pub async fn release_claim(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM meta WHERE key = $1")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

shared! {
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_claimant_wins_until_the_claim_is_released_or_stale() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let s = Store::open(&url, crate::store::DEFAULT_MAX_CONNECTIONS).await.unwrap();
        assert!(s.claim("job", 100, 60).await.unwrap());
        assert!(!s.claim("job", 120, 60).await.unwrap(), "held and fresh");
        assert!(s.claim("job", 200, 60).await.unwrap(), "stale: taken over");
        assert!(!s.claim("job", 201, 60).await.unwrap());
        s.release_claim("job").await.unwrap();
        assert!(s.claim("job", 202, 60).await.unwrap());
    }
}
}
