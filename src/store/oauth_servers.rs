//! External OAuth 2.0 / OIDC servers (`oauth_servers` table). Every change writes a
//! row to the change feed (`changes.rs`) in the same transaction, so every process can keep its
//! in-memory table of registered issuers current.

use super::{Store, StoreError};
reuse_shared!(oauth_servers);
use sqlx::Row;
use std::collections::BTreeMap;

shared! {
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthServerRow {
    pub oauth_id: String,
    pub name: String,
    pub issuer: String,
    /// SubjectPublicKeyInfo PEM; exactly one of this and `jwks_uri` is set.
    pub public_key_pem: Option<String>,
    pub jwks_uri: Option<String>,
    pub audience: Option<String>,
    /// Whether `aud` must hold `audience`. `false` is the explicit opt-out
    /// (`docs/oauth-servers.md`), logged at start.
    pub audience_check: bool,
    pub role_claim: String,
    /// IdP value → local role name.
    pub role_mapping: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}
}

const COLUMNS: &str = "oauth_id, name, issuer, public_key_pem, jwks_uri, audience, role_claim, \
     role_mapping, created_by, created_at, updated_at, audience_check";

fn from_row(row: &super::DbRow) -> Result<OAuthServerRow, StoreError> {
    let mapping: String = row.try_get(7)?;
    Ok(OAuthServerRow {
        oauth_id: row.try_get(0)?,
        name: row.try_get(1)?,
        issuer: row.try_get(2)?,
        public_key_pem: row.try_get(3)?,
        jwks_uri: row.try_get(4)?,
        audience: row.try_get(5)?,
        role_claim: row.try_get(6)?,
        role_mapping: serde_json::from_str(&mapping)
            .map_err(|e| StoreError::Corrupt(format!("oauth server role_mapping: {e}")))?,
        created_by: row.try_get(8)?,
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
        audience_check: row.try_get(11)?,
    })
}

fn json(mapping: &BTreeMap<String, String>) -> String {
    serde_json::to_string(mapping).unwrap_or_else(|_| "{}".into())
}

/// A unique-constraint failure, in words: which of name and issuer is taken.
fn conflict(e: sqlx::Error, r: &OAuthServerRow) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(m) if m.contains("oauth_servers.issuer") => StoreError::Conflict(
            format!("an OAuth server with issuer {:?} is registered", r.issuer),
        ),
        StoreError::Conflict(m) if m.contains("oauth_servers.name") => {
            StoreError::Conflict(format!("an OAuth server named {:?} exists", r.name))
        }
        other => other,
    }
}

impl Store {
    pub async fn list_oauth_servers(&self) -> Result<Vec<OAuthServerRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM oauth_servers ORDER BY created_at, oauth_id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_oauth_server(&self, oauth_id: &str) -> Result<OAuthServerRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM oauth_servers WHERE oauth_id = $1"
        ))
        .bind(oauth_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// Inserts a server unless `max` servers exist already (`Conflict`); a taken name or
    /// issuer is a `Conflict` too.
    pub async fn insert_oauth_server(
        &self,
        r: &OAuthServerRow,
        max: u32,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("oauth-server.create", &r.oauth_id, r.created_at)
            .await?;
        let done = sqlx::query(&format!(
            "INSERT INTO oauth_servers ({COLUMNS})
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13
             WHERE (SELECT COUNT(*) FROM oauth_servers) < $12"
        ))
        .bind(&r.oauth_id)
        .bind(&r.name)
        .bind(&r.issuer)
        .bind(&r.public_key_pem)
        .bind(&r.jwks_uri)
        .bind(&r.audience)
        .bind(&r.role_claim)
        .bind(json(&r.role_mapping))
        .bind(&r.created_by)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(i64::from(max))
        .bind(r.audience_check)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, r))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "the limit of {max} OAuth servers is reached; delete one first"
            )));
        }
        super::changes::record(&mut tx, super::changes::Topic::OauthServers, &r.oauth_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces every field but the id and the creation facts with `r`'s.
    pub async fn update_oauth_server(&self, r: &OAuthServerRow) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("oauth-server.update", &r.oauth_id, r.updated_at)
            .await?;
        let done = sqlx::query(
            "UPDATE oauth_servers SET name = $2, issuer = $3, public_key_pem = $4,
                 jwks_uri = $5, audience = $6, role_claim = $7, role_mapping = $8,
                 updated_at = $9, audience_check = $10
             WHERE oauth_id = $1",
        )
        .bind(&r.oauth_id)
        .bind(&r.name)
        .bind(&r.issuer)
        .bind(&r.public_key_pem)
        .bind(&r.jwks_uri)
        .bind(&r.audience)
        .bind(&r.role_claim)
        .bind(json(&r.role_mapping))
        .bind(r.updated_at)
        .bind(r.audience_check)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, r))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        super::changes::record(&mut tx, super::changes::Topic::OauthServers, &r.oauth_id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_oauth_server(&self, oauth_id: &str) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited(
                "oauth-server.delete",
                oauth_id,
                super::audit_scope::unix_now(),
            )
            .await?;
        let done = sqlx::query("DELETE FROM oauth_servers WHERE oauth_id = $1")
            .bind(oauth_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // Its principals `<oauth_id>:<sub>` are gone with it: memberships and rings too.
        super::groups::forget_principals_under(&mut tx, &format!("{oauth_id}:")).await?;
        super::changes::record(&mut tx, super::changes::Topic::OauthServers, oauth_id).await?;
        tx.commit().await?;
        Ok(())
    }
}
