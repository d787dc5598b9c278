//! The attestation keys of TPM backends, recorded when first used (docs/attestation.md).

use super::{Store, StoreError};
reuse_shared!(attestation);
use sqlx::Row;

shared! {
/// An attestation key as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAk {
    pub ak_name: String,
    pub ak_public: Vec<u8>,
    pub recorded_at: i64,
}
}

impl Store {
    /// Records `backend`'s AK unless one is recorded already, and returns the recorded one
    /// (which the caller compares with what the TPM used).
    pub async fn record_attestation_key(
        &self,
        backend: &str,
        ak_name: &str,
        ak_public: &[u8],
        now: i64,
    ) -> Result<RecordedAk, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO attestation_keys (backend, ak_name, ak_public, recorded_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (backend) DO NOTHING",
        )
        .bind(backend)
        .bind(ak_name)
        .bind(ak_public)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT ak_name, ak_public, recorded_at FROM attestation_keys WHERE backend = $1",
        )
        .bind(backend)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RecordedAk {
            ak_name: row.try_get(0)?,
            ak_public: row.try_get(1)?,
            recorded_at: row.try_get(2)?,
        })
    }
}
