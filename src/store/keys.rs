//! Key rings and their versions.

use super::audit::{append_in, NewAuditEntry};
use super::{Store, StoreError};
use crate::key_state::KeyState;
reuse_shared!(keys);
use sqlx::Row;

shared! {
/// One stored key version. The locator is JSON of [`crate::hardware::KeyLocator`].
#[derive(Debug, Clone)]
pub struct KeyVersionRow {
    pub ring: String,
    pub version: i64,
    /// Parsed here: a state this keygate does not know is [`StoreError::Corrupt`].
    pub state: KeyState,
    pub backend: String,
    pub algorithm: String,
    pub locator: String,
    pub kid: String,
    pub public_key: Option<Vec<u8>>,
    pub purpose: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub deactivated_at: Option<i64>,
}

/// A new version of an existing ring, generated in hardware and not yet signing.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub ring: String,
    pub version: i64,
    pub backend: String,
    pub algorithm: String,
    pub locator: String,
    pub kid: String,
    pub public_key: Option<Vec<u8>>,
    pub now: i64,
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
}

impl Store {
    /// Inserts the ring and its active version 1 in one transaction. A ring that already
    /// exists is a conflict.
    pub async fn insert_ring(&self, r: &NewRing) -> Result<(), StoreError> {
        let mut tx = self.begin_audited("ring.create", &r.name, r.now).await?;
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
        super::changes::record(&mut tx, super::changes::Topic::Keys, &r.name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every version of every ring, ordered by ring and version.
    pub async fn list_key_versions(&self) -> Result<Vec<KeyVersionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.ring, v.version, v.state, v.backend, v.algorithm, v.locator, v.kid,
                    v.public_key, r.purpose, v.created_at, v.activated_at, v.deactivated_at
             FROM key_versions v JOIN rings r ON r.name = v.ring
             ORDER BY v.ring, v.version",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                let (ring, version, state): (String, i64, String) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                let state = state
                    .parse::<KeyState>()
                    .map_err(|e| StoreError::Corrupt(format!("{ring} v{version}: {e}")))?;
                Ok(KeyVersionRow {
                    ring,
                    version,
                    state,
                    backend: row.try_get(3)?,
                    algorithm: row.try_get(4)?,
                    locator: row.try_get(5)?,
                    kid: row.try_get(6)?,
                    public_key: row.try_get(7)?,
                    purpose: row.try_get(8)?,
                    created_at: row.try_get(9)?,
                    activated_at: row.try_get(10)?,
                    deactivated_at: row.try_get(11)?,
                })
            })
            .collect::<Result<_, StoreError>>()
    }

    /// Records a pending version. When `activate` is set, the same transaction makes it
    /// the active version and moves the previous one to retiring (rotate-now). The audit
    /// entry is written in the same transaction.
    pub async fn insert_version(
        &self,
        v: &NewVersion,
        activate: bool,
        audit: &NewAuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO key_versions (ring, version, state, backend, algorithm, locator, kid,
                                       public_key, created_at)
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8)",
        )
        .bind(&v.ring)
        .bind(v.version)
        .bind(&v.backend)
        .bind(&v.algorithm)
        .bind(&v.locator)
        .bind(&v.kid)
        .bind(&v.public_key)
        .bind(v.now)
        .execute(&mut *tx)
        .await?;
        if activate && !activate_in(&mut tx, &v.ring, v.version, v.now).await? {
            return Err(StoreError::Conflict(format!(
                "{} v{} could not be activated",
                v.ring, v.version
            )));
        }
        append_in(&mut tx, audit).await?;
        super::changes::record(&mut tx, super::changes::Topic::Keys, &v.ring).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes pending `version` of `ring` active and the active one retiring, atomically.
    /// Returns false when that version is no longer pending (another process did it).
    pub async fn activate_version(
        &self,
        ring: &str,
        version: i64,
        now: i64,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if !activate_in(&mut tx, ring, version, now).await? {
            return Ok(false);
        }
        append_in(&mut tx, audit).await?;
        super::changes::record(&mut tx, super::changes::Topic::Keys, ring).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a retiring version to retired. Returns false when it was not retiring.
    pub async fn retire_version(
        &self,
        ring: &str,
        version: i64,
        now: i64,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE key_versions SET state = 'retired', retired_at = $3
             WHERE ring = $1 AND version = $2 AND state = 'retiring'",
        )
        .bind(ring)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        append_in(&mut tx, audit).await?;
        super::changes::record(&mut tx, super::changes::Topic::Keys, ring).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Regeneration: in one transaction, active version `old` of the ring becomes
    /// `compromised` and the new version `v` is recorded as active. A conflict when `old`
    /// is no longer the active version.
    pub async fn replace_compromised(
        &self,
        v: &NewVersion,
        old: i64,
        audit: &NewAuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE key_versions SET state = 'compromised', compromised_at = $3,
                    deactivated_at = COALESCE(deactivated_at, $3)
             WHERE ring = $1 AND version = $2 AND state = 'active'",
        )
        .bind(&v.ring)
        .bind(old)
        .bind(v.now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "{} v{old} is no longer the active version",
                v.ring
            )));
        }
        sqlx::query(
            "INSERT INTO key_versions (ring, version, state, backend, algorithm, locator, kid,
                                       public_key, created_at, activated_at)
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&v.ring)
        .bind(v.version)
        .bind(&v.backend)
        .bind(&v.algorithm)
        .bind(&v.locator)
        .bind(&v.kid)
        .bind(&v.public_key)
        .bind(v.now)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit).await?;
        super::changes::record(&mut tx, super::changes::Topic::Keys, &v.ring).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a retired or compromised version destroyed and, in the same transaction,
    /// replaces its locator with `erased_locator` (a TPM locator without its wrapped
    /// private blob), so the store holds nothing the version could be loaded from.
    pub async fn mark_destroyed_erasing(
        &self,
        ring: &str,
        version: i64,
        now: i64,
        erased_locator: &str,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE key_versions SET state = 'destroyed', destroyed_at = $3, locator = $4
             WHERE ring = $1 AND version = $2 AND state IN ('retired', 'compromised')",
        )
        .bind(ring)
        .bind(version)
        .bind(now)
        .bind(erased_locator)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        append_in(&mut tx, audit).await?;
        super::changes::record(&mut tx, super::changes::Topic::Keys, ring).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks a retired or compromised version destroyed (its hardware object is gone).
    /// False when the version is in another state.
    pub async fn mark_destroyed(
        &self,
        ring: &str,
        version: i64,
        now: i64,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE key_versions SET state = 'destroyed', destroyed_at = $3
             WHERE ring = $1 AND version = $2 AND state IN ('retired', 'compromised')",
        )
        .bind(ring)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        append_in(&mut tx, audit).await?;
        super::changes::record(&mut tx, super::changes::Topic::Keys, ring).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Old active → retiring first, then pending → active: the unique index on the active
/// state holds at every statement. Both statements write, so the transaction holds the
/// write lock from its first statement. The caller rolls back when this returns false.
async fn activate_in(
    tx: &mut super::DbConn,
    ring: &str,
    version: i64,
    now: i64,
) -> Result<bool, StoreError> {
    sqlx::query(
        "UPDATE key_versions SET state = 'retiring', deactivated_at = $2
         WHERE ring = $1 AND state = 'active'
           AND EXISTS (SELECT 1 FROM key_versions
                       WHERE ring = $1 AND version = $3 AND state = 'pending')",
    )
    .bind(ring)
    .bind(now)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    let r = sqlx::query(
        "UPDATE key_versions SET state = 'active', activated_at = $3
         WHERE ring = $1 AND version = $2 AND state = 'pending'",
    )
    .bind(ring)
    .bind(version)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(r.rows_affected() == 1)
}
