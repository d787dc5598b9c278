//! Destroys that were started: recorded before the hardware step of a destroy, so a
//! crash between the hardware and the store step is completed at the next start.

use super::{Store, StoreError};
use sqlx::Row;

impl Store {
    /// Records that `ring` v`version` is about to be destroyed in hardware.
    pub async fn record_destroy_intent(
        &self,
        ring: &str,
        version: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO destroy_intents (ring, version, started_at) VALUES ($1, $2, $3)
             ON CONFLICT (ring, version) DO NOTHING",
        )
        .bind(ring)
        .bind(version)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Started destroys whose version is not recorded as destroyed yet.
    pub async fn unfinished_destroys(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.ring, d.version FROM destroy_intents d
             JOIN key_versions v ON v.ring = d.ring AND v.version = d.version
             WHERE v.state <> 'destroyed' ORDER BY d.started_at",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
