//! API key files (`key_files` table: public keys only) and the assertion ids they have
//! used (`assertion_jtis`). Every change to a file writes a row to the change feed
//! (`changes.rs`) in the same transaction, so every process can keep its view of live files current.

use super::{Store, StoreError};
reuse_shared!(key_files);
use sqlx::Row;

shared! {
#[derive(Debug, Clone)]
pub struct KeyFileRow {
    pub access_id: String,
    pub customer_name: String,
    pub description: String,
    pub role: String,
    pub algorithm: String,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    /// `generated` (keygate made the pair) or `client` (bring your own key).
    pub key_source: String,
    pub generation: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}
}

const COLUMNS: &str = "access_id, customer_name, description, role, algorithm, public_key, \
     key_source, generation, created_by, created_at, updated_at, last_used_at";

fn from_row(row: &super::DbRow) -> Result<KeyFileRow, StoreError> {
    Ok(KeyFileRow {
        access_id: row.try_get(0)?,
        customer_name: row.try_get(1)?,
        description: row.try_get(2)?,
        role: row.try_get(3)?,
        algorithm: row.try_get(4)?,
        public_key: row.try_get(5)?,
        key_source: row.try_get(6)?,
        generation: row.try_get(7)?,
        created_by: row.try_get(8)?,
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
        last_used_at: row.try_get(11)?,
    })
}

impl Store {
    /// Inserts a key file unless `max` files exist already (`Conflict`). The count and
    /// the insert are one statement, so concurrent creates cannot pass the limit.
    pub async fn insert_key_file(&self, r: &KeyFileRow, max: u32) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("key-file.create", &r.access_id, r.created_at)
            .await?;
        let done = sqlx::query(&format!(
            "INSERT INTO key_files ({COLUMNS})
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL
             WHERE (SELECT COUNT(*) FROM key_files) < $12"
        ))
        .bind(&r.access_id)
        .bind(&r.customer_name)
        .bind(&r.description)
        .bind(&r.role)
        .bind(&r.algorithm)
        .bind(&r.public_key)
        .bind(&r.key_source)
        .bind(r.generation)
        .bind(&r.created_by)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(i64::from(max))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "the limit of {max} key files is reached (key_files.max); delete one first"
            )));
        }
        super::changes::record(&mut tx, super::changes::Topic::KeyFiles, &r.access_id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_key_files(&self) -> Result<Vec<KeyFileRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM key_files ORDER BY created_at, access_id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_key_file(&self, access_id: &str) -> Result<KeyFileRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM key_files WHERE access_id = $1"
        ))
        .bind(access_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    pub async fn update_key_file(
        &self,
        access_id: &str,
        description: Option<&str>,
        role: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("key-file.update", access_id, now)
            .await?;
        // A new role bumps the generation: tokens minted under the old role end.
        let r = sqlx::query(
            "UPDATE key_files SET description = COALESCE($2, description),
                 generation = generation + (CASE WHEN $3 IS NOT NULL AND $3 <> role THEN 1 ELSE 0 END),
                 role = COALESCE($3, role), updated_at = $4 WHERE access_id = $1",
        )
        .bind(access_id)
        .bind(description)
        .bind(role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        super::changes::record(&mut tx, super::changes::Topic::KeyFiles, access_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the public key and bumps the generation, so the previous file and every
    /// token minted with it stop working. Only if the file is still at generation
    /// `expected` (a concurrent regenerate wins once, the other gets `Conflict`).
    pub async fn rekey_key_file(
        &self,
        access_id: &str,
        expected: i64,
        algorithm: &str,
        public_key: &[u8],
        key_source: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("key-file.regenerate", access_id, now)
            .await?;
        let r = sqlx::query(
            "UPDATE key_files SET algorithm = $3, public_key = $4, key_source = $5,
                 generation = generation + 1, updated_at = $6
             WHERE access_id = $1 AND generation = $2",
        )
        .bind(access_id)
        .bind(expected)
        .bind(algorithm)
        .bind(public_key)
        .bind(key_source)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the key file changed meanwhile; fetch it and try again".into(),
            ));
        }
        // Spent assertion ids stay until they expire: a client key registered again must
        // not make its spent assertions work a second time.
        super::changes::record(&mut tx, super::changes::Topic::KeyFiles, access_id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_key_file(&self, access_id: &str) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("key-file.delete", access_id, super::audit_scope::unix_now())
            .await?;
        let r = sqlx::query("DELETE FROM key_files WHERE access_id = $1")
            .bind(access_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM assertion_jtis WHERE access_id = $1")
            .bind(access_id)
            .execute(&mut *tx)
            .await?;
        super::groups::forget_principal(&mut tx, access_id).await?;
        super::changes::record(&mut tx, super::changes::Topic::KeyFiles, access_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that file `access_id` at `generation` used assertion `jti`, valid until
    /// `expires_at`. Returns false when the jti was seen before (a replay) or the file no
    /// longer is at that generation; nothing is recorded then.
    pub async fn spend_assertion(
        &self,
        access_id: &str,
        generation: i64,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = super::begin(self.pool()).await?;
        // The write comes first, so SQLite takes the write lock before anything is read.
        let fresh = sqlx::query(
            "INSERT INTO assertion_jtis (access_id, jti, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (access_id, jti) DO NOTHING",
        )
        .bind(access_id)
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(false);
        }
        let current = sqlx::query(
            "UPDATE key_files SET last_used_at = $3 WHERE access_id = $1 AND generation = $2",
        )
        .bind(access_id)
        .bind(generation)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !current {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes up to `batch` expired assertion ids; returns how many.
    pub async fn purge_assertion_jtis(&self, now: i64, batch: u32) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM assertion_jtis WHERE (access_id, jti) IN
                 (SELECT access_id, jti FROM assertion_jtis WHERE expires_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(i64::from(batch))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    /// Every file's access id and generation: what tokens minted with a file are bound to.
    pub async fn key_file_generations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT access_id, generation FROM key_files")
            .fetch_all(self.pool())
            .await?;
        super::text_int_pairs(&rows)
    }
}
