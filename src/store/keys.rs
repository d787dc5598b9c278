//! Key rings and their versions.

use super::{Store, StoreError};
use sqlx::Row;

/// One stored key version. The locator is JSON of [`crate::hardware::KeyLocator`].
#[derive(Debug, Clone)]
pub struct KeyVersionRow {
    pub ring: String,
    pub version: i64,
    pub state: String,
    pub backend: String,
    pub algorithm: String,
    pub locator: String,
    pub kid: String,
    pub public_key: Option<Vec<u8>>,
    pub purpose: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
}

/// A new ring with its first, active version.
#[derive(Debug, Clone)]
pub struct NewRing {
    pub name: String,
    pub algorithm: String,
    pub backend: String,
    pub purpose: String,
    pub created_by: String,
    pub locator: String,
    pub kid: String,
    pub public_key: Option<Vec<u8>>,
    pub now: i64,
}

impl Store {
    /// Inserts the ring and its active version 1 in one transaction. A ring that already
    /// exists is a conflict.
    pub async fn insert_ring(&self, r: &NewRing) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rings (name, algorithm, backend, purpose, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&r.name)
        .bind(&r.algorithm)
        .bind(&r.backend)
        .bind(&r.purpose)
        .bind(&r.created_by)
        .bind(r.now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("ring {} exists", r.name)),
            other => other,
        })?;
        sqlx::query(
            "INSERT INTO key_versions (ring, version, state, backend, algorithm, locator, kid,
                                       public_key, created_at, activated_at)
             VALUES ($1, 1, 'active', $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&r.name)
        .bind(&r.backend)
        .bind(&r.algorithm)
        .bind(&r.locator)
        .bind(&r.kid)
        .bind(&r.public_key)
        .bind(r.now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every version of every ring, ordered by ring and version.
    pub async fn list_key_versions(&self) -> Result<Vec<KeyVersionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.ring, v.version, v.state, v.backend, v.algorithm, v.locator, v.kid,
                    v.public_key, r.purpose, v.created_at, v.activated_at
             FROM key_versions v JOIN rings r ON r.name = v.ring
             ORDER BY v.ring, v.version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(KeyVersionRow {
                    ring: row.try_get(0)?,
                    version: row.try_get(1)?,
                    state: row.try_get(2)?,
                    backend: row.try_get(3)?,
                    algorithm: row.try_get(4)?,
                    locator: row.try_get(5)?,
                    kid: row.try_get(6)?,
                    public_key: row.try_get(7)?,
                    purpose: row.try_get(8)?,
                    created_at: row.try_get(9)?,
                    activated_at: row.try_get(10)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
