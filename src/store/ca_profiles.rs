//! CA profiles managed through the API. Enumerated fields are stored as their API
//! spellings (`crl`, `fail-closed`, `san-dns`, ...), lists as JSON arrays.

use super::{Store, StoreError};
reuse_shared!(ca_profiles);
use super::DbRow;
use sqlx::Row;

shared! {
#[derive(Debug, Clone)]
pub struct CaProfileRow {
    pub name: String,
    pub ca_pem: String,
    pub revocation_check: String,
    pub crl_files: Vec<String>,
    pub crl_urls: Vec<String>,
    pub crl_refresh_secs: i64,
    pub stale_crl: String,
    pub principal_match: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}
}

const COLUMNS: &str = "name, ca_pem, revocation_check, crl_files, crl_urls, crl_refresh_secs, \
                       stale_crl, principal_match, created_by, created_at, updated_at";

fn list_of(text: &str) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn from_row(r: &DbRow) -> Result<CaProfileRow, sqlx::Error> {
    Ok(CaProfileRow {
        name: r.try_get(0)?,
        ca_pem: r.try_get(1)?,
        revocation_check: r.try_get(2)?,
        crl_files: list_of(&r.try_get::<String, _>(3)?)?,
        crl_urls: list_of(&r.try_get::<String, _>(4)?)?,
        crl_refresh_secs: r.try_get(5)?,
        stale_crl: r.try_get(6)?,
        principal_match: r.try_get(7)?,
        created_by: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

fn json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

impl Store {
    pub async fn list_ca_profiles(&self) -> Result<Vec<CaProfileRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM ca_profiles ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    pub async fn get_ca_profile(&self, name: &str) -> Result<CaProfileRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ca_profiles WHERE name = $1"
        ))
        .bind(name)
        .fetch_one(self.pool())
        .await?;
        Ok(from_row(&row)?)
    }

    pub async fn insert_ca_profile(&self, p: &CaProfileRow) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("ca-profile.create", &p.name, p.created_at)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO ca_profiles ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&p.name)
        .bind(&p.ca_pem)
        .bind(&p.revocation_check)
        .bind(json(&p.crl_files))
        .bind(json(&p.crl_urls))
        .bind(p.crl_refresh_secs)
        .bind(&p.stale_crl)
        .bind(&p.principal_match)
        .bind(&p.created_by)
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces every field but name and creation; NotFound if absent.
    pub async fn update_ca_profile(&self, p: &CaProfileRow) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("ca-profile.update", &p.name, p.updated_at)
            .await?;
        let done = sqlx::query(
            "UPDATE ca_profiles SET ca_pem = $2, revocation_check = $3, crl_files = $4, crl_urls = $5,
             crl_refresh_secs = $6, stale_crl = $7, principal_match = $8, updated_at = $9 WHERE name = $1",
        )
        .bind(&p.name)
        .bind(&p.ca_pem)
        .bind(&p.revocation_check)
        .bind(json(&p.crl_files))
        .bind(json(&p.crl_urls))
        .bind(p.crl_refresh_secs)
        .bind(&p.stale_crl)
        .bind(&p.principal_match)
        .bind(p.updated_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_ca_profile(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("ca-profile.delete", name, super::audit_scope::unix_now())
            .await?;
        let done = sqlx::query("DELETE FROM ca_profiles WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}
