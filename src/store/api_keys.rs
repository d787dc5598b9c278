//! API-key records. Only the HMAC of each secret is stored, never the secret.
//!
//! Every change that affects authentication (create, update, new secret, delete) writes a
//! row to the change feed (`changes.rs`) in the same transaction, so every replica holding
//! an in-memory index of keys reloads it.

use super::{Store, StoreError};
reuse_shared!(api_keys);
use super::DbRow;
use sqlx::Row;

shared! {
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub role: String,
    pub hint: String,
    pub mac_ring: String,
    pub mac_version: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    /// The secret's public identifier; `None` for keys made before it existed.
    pub public_id: Option<String>,
    /// Who created the key; `None` for keys older than the column (docs/api-keys.md).
    pub created_by: Option<String>,
}

/// The MAC and hint of a fresh secret.
#[derive(Debug, Clone)]
pub struct SecretDigest {
    pub mac: Vec<u8>,
    pub mac_ring: String,
    pub mac_version: i64,
    pub hint: String,
    /// The public identifier carried in the secret (docs/api-keys.md "Format").
    pub public_id: Option<String>,
}
}

const COLUMNS: &str = "id, name, description, owner, role, hint, mac_ring, mac_version, \
                       created_at, expires_at, last_used_at, public_id, created_by";

fn from_row(row: &DbRow) -> Result<ApiKeyRow, sqlx::Error> {
    Ok(ApiKeyRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        owner: row.try_get(3)?,
        role: row.try_get(4)?,
        hint: row.try_get(5)?,
        mac_ring: row.try_get(6)?,
        mac_version: row.try_get(7)?,
        created_at: row.try_get(8)?,
        expires_at: row.try_get(9)?,
        last_used_at: row.try_get(10)?,
        public_id: row.try_get(11)?,
        created_by: row.try_get(12)?,
    })
}

/// Why a compare-and-set on key `id` matched nothing: gone, or changed meanwhile.
async fn key_missing_or_changed(
    tx: &mut super::DbConn,
    id: &str,
) -> Result<StoreError, StoreError> {
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(match exists {
        None => StoreError::NotFound,
        Some(_) => StoreError::Conflict(format!(
            "API key {id:?} was changed by another request since it was read; read it again and retry"
        )),
    })
}

impl Store {
    /// Every key with its MAC, for the in-memory authentication index.
    pub async fn list_api_keys_with_macs(&self) -> Result<Vec<(ApiKeyRow, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS}, mac FROM api_keys"))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((from_row(row)?, row.try_get::<Vec<u8>, _>(13)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Inserts the key unless its owner already holds `max_per_owner` keys. The count and
    /// the insert are one statement, so concurrent creations cannot exceed the limit.
    pub async fn insert_api_key(
        &self,
        row: &ApiKeyRow,
        digest: &SecretDigest,
        max_per_owner: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("api-key.create", &row.id, row.created_at)
            .await?;
        insert_api_key_in(&mut tx, row, digest, max_per_owner).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// Records `creator` as who made key `id` (a new secret chosen by someone other than
    /// the owner makes the key theirs, not the owner's own).
    pub async fn set_api_key_creator(&self, id: &str, creator: &str) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE api_keys SET created_by = $2 WHERE id = $1")
            .bind(id)
            .bind(creator)
            .execute(self.pool())
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn get_api_key(&self, id: &str) -> Result<ApiKeyRow, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(from_row(&row)?)
    }

    /// Updates name, description and role; `None` keeps the current value. A
    /// compare-and-set: only while the key's role is still `expected_role`, the role the
    /// caller's rights were checked against (a conflict otherwise).
    pub async fn update_api_key(
        &self,
        id: &str,
        expected_role: &str,
        name: Option<&str>,
        description: Option<&str>,
        role: Option<&str>,
    ) -> Result<ApiKeyRow, StoreError> {
        let mut tx = self
            .begin_audited("api-key.update", id, super::audit_scope::unix_now())
            .await?;
        let r = sqlx::query(&format!(
            "UPDATE api_keys SET name = COALESCE($3, name),
                                 description = COALESCE($4, description),
                                 role = COALESCE($5, role)
             WHERE id = $1 AND role = $2
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(expected_role)
        .bind(name)
        .bind(description)
        .bind(role)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = r else {
            return Err(key_missing_or_changed(&mut tx, id).await?);
        };
        let row = from_row(&r)?;
        super::changes::record(&mut tx, super::changes::Topic::ApiKeys, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Replaces the secret's MAC; the old secret stops matching as soon as this commits.
    /// A compare-and-set on the role, like [`update_api_key`](Self::update_api_key): a
    /// key whose role changed since the caller looked is not re-keyed for them.
    pub async fn replace_api_key_secret(
        &self,
        id: &str,
        expected_role: &str,
        digest: &SecretDigest,
    ) -> Result<ApiKeyRow, StoreError> {
        let mut tx = self
            .begin_audited("api-key.regenerate", id, super::audit_scope::unix_now())
            .await?;
        let r = sqlx::query(&format!(
            "UPDATE api_keys SET mac = $3, mac_ring = $4, mac_version = $5, hint = $6,
                                 last_used_at = NULL, public_id = $7
             WHERE id = $1 AND role = $2
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(expected_role)
        .bind(&digest.mac)
        .bind(&digest.mac_ring)
        .bind(digest.mac_version)
        .bind(&digest.hint)
        .bind(&digest.public_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = r else {
            return Err(key_missing_or_changed(&mut tx, id).await?);
        };
        let row = from_row(&r)?;
        super::changes::record(&mut tx, super::changes::Topic::ApiKeys, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Deletes a key whose role is still `expected_role` (compare-and-set, as above).
    /// `action` names the audit entry (`api-key.delete`, or `api-key.revoke` when the
    /// holder of the secret revoked it).
    pub async fn delete_api_key(
        &self,
        id: &str,
        expected_role: &str,
        action: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited(action, id, super::audit_scope::unix_now())
            .await?;
        let r = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND role = $2")
            .bind(id)
            .bind(expected_role)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(key_missing_or_changed(&mut tx, id).await?);
        }
        super::changes::record(&mut tx, super::changes::Topic::ApiKeys, id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn touch_api_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether any API key (expired or not) carries `role`.
    pub async fn any_api_key_with_role(&self, role: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE role = $1")
            .bind(role)
            .fetch_one(self.pool())
            .await?;
        Ok(n > 0)
    }
}

/// The insert of [`Store::insert_api_key`] inside `tx`, which already holds its audit
/// entry: also used by the redemption of a `create-super-admin-key` approval, whose
/// compare-and-set commits with the key (`Store::redeem_approval_into_key`).
pub(super) async fn insert_api_key_in(
    tx: &mut super::DbConn,
    row: &ApiKeyRow,
    digest: &SecretDigest,
    max_per_owner: i64,
) -> Result<(), StoreError> {
    let r = sqlx::query(
        "INSERT INTO api_keys (id, name, description, owner, role, mac, mac_ring, mac_version,
                               hint, created_at, expires_at, last_used_at, public_id,
                               created_by)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $13, $14
         WHERE (SELECT COUNT(*) FROM api_keys WHERE owner = $4) < $12",
    )
    .bind(&row.id)
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.owner)
    .bind(&row.role)
    .bind(&digest.mac)
    .bind(&digest.mac_ring)
    .bind(digest.mac_version)
    .bind(&digest.hint)
    .bind(row.created_at)
    .bind(row.expires_at)
    .bind(max_per_owner)
    .bind(&digest.public_id)
    .bind(&row.created_by)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!(
            "owner {:?} already holds the maximum of {max_per_owner} API keys",
            row.owner
        )));
    }
    super::changes::record(tx, super::changes::Topic::ApiKeys, &row.id).await?;
    Ok(())
}
