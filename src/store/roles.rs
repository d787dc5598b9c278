//! Custom roles (`roles` table). Every change writes a row to the
//! change feed (`changes.rs`) in the same transaction, so every process can keep its in-memory role table current.

use super::{Store, StoreError};
reuse_shared!(roles);
use sqlx::Row;

shared! {
#[derive(Debug, Clone)]
pub struct RoleRow {
    pub name: String,
    pub description: String,
    /// Permission names, as stored (JSON array).
    pub permissions: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}
}

fn from_row(row: &super::DbRow) -> Result<RoleRow, StoreError> {
    let perms: String = row.try_get(2)?;
    Ok(RoleRow {
        name: row.try_get(0)?,
        description: row.try_get(1)?,
        permissions: serde_json::from_str(&perms)
            .map_err(|e| StoreError::Corrupt(format!("role permissions: {e}")))?,
        created_by: row.try_get(3)?,
        created_at: row.try_get(4)?,
        updated_at: row.try_get(5)?,
    })
}

fn json(perms: &[String]) -> String {
    serde_json::to_string(perms).unwrap_or_else(|_| "[]".into())
}

const COLUMNS: &str = "name, description, permissions, created_by, created_at, updated_at";

impl Store {
    pub async fn list_roles(&self) -> Result<Vec<RoleRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM roles ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Inserts a role unless `max` exist already (`Conflict`); the count and the insert
    /// are one statement.
    pub async fn insert_role(&self, r: &RoleRow, max: usize) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("role.create", &r.name, r.created_at)
            .await?;
        let done = sqlx::query(&format!(
            "INSERT INTO roles ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6
             WHERE (SELECT COUNT(*) FROM roles) < $7"
        ))
        .bind(&r.name)
        .bind(&r.description)
        .bind(json(&r.permissions))
        .bind(&r.created_by)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("role {} exists", r.name)),
            other => other,
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "at most {max} custom roles; delete one first"
            )));
        }
        super::changes::record(&mut tx, super::changes::Topic::Roles, &r.name).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_role(
        &self,
        name: &str,
        description: Option<&str>,
        permissions: Option<&[String]>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_audited("role.update", name, now).await?;
        let r = sqlx::query(
            "UPDATE roles SET description = COALESCE($2, description),
                 permissions = COALESCE($3, permissions), updated_at = $4 WHERE name = $1",
        )
        .bind(name)
        .bind(description)
        .bind(permissions.map(json))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        super::changes::record(&mut tx, super::changes::Topic::Roles, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a role unless a user, API key or key file still holds it; returns the
    /// holders' kinds when it refuses. (OAuth-server mappings are checked by the service.)
    pub async fn delete_role(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("role.delete", name, super::audit_scope::unix_now())
            .await?;
        let mut holders = Vec::new();
        for (table, what) in [
            ("users", "users"),
            ("api_keys", "API keys"),
            ("key_files", "key files"),
        ] {
            let n: i64 =
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE role = $1"))
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
            if n > 0 {
                holders.push(format!("{n} {what}"));
            }
        }
        if !holders.is_empty() {
            return Err(StoreError::Conflict(format!(
                "role {name} is held by {}; reassign them first",
                holders.join(", ")
            )));
        }
        let r = sqlx::query("DELETE FROM roles WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        super::changes::record(&mut tx, super::changes::Topic::Roles, name).await?;
        tx.commit().await?;
        Ok(())
    }
}
