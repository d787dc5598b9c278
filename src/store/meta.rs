//! One-off installation facts (`meta` table).

use super::{Store, StoreError};

impl Store {
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Sets `key` only if unset; returns whether this call set it.
    pub async fn meta_set_once(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether `name` is a known principal: the built-in `root` or a local user.
    pub async fn principal_exists(&self, name: &str) -> Result<bool, StoreError> {
        if name == crate::names::ROOT_PRINCIPAL {
            return Ok(true);
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = $1")
            .bind(name)
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }
}
