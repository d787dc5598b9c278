//! Groups, their members (principals) and their grants on resources.

use super::{Store, StoreError};
reuse_shared!(groups);
use sqlx::Row;

shared! {
#[derive(Debug, Clone)]
pub struct GroupRow {
    pub name: String,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct MemberRow {
    pub principal: String,
    pub added_by: String,
    pub added_at: i64,
}

#[derive(Debug, Clone)]
pub struct GrantRow {
    pub resource: String,
    pub permissions: Vec<String>,
    pub granted_by: String,
    pub granted_at: i64,
}
}

fn perms(json: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("grant permissions: {e}")))
}

fn group(row: &super::DbRow) -> Result<GroupRow, StoreError> {
    Ok(GroupRow {
        name: row.try_get(0)?,
        description: row.try_get(1)?,
        created_by: row.try_get(2)?,
        created_at: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

/// Adds a membership if the group exists (no row otherwise) and it is not there yet.
const INSERT_MEMBER: &str = "INSERT INTO group_members (group_name, principal, added_by, added_at)
     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM groups WHERE name = $1)
     ON CONFLICT (group_name, principal) DO NOTHING";

fn not_found_group(name: &str) -> StoreError {
    StoreError::Conflict(format!("no group {name:?}"))
}

impl Store {
    pub async fn insert_group(&self, g: &GroupRow) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("group.create", &g.name, g.created_at)
            .await?;
        sqlx::query(
            "INSERT INTO groups (name, description, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&g.name)
        .bind(&g.description)
        .bind(&g.created_by)
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("group {} exists", g.name)),
            other => other,
        })?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, description, created_by, created_at, updated_at FROM groups ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(group).collect()
    }

    pub async fn get_group(&self, name: &str) -> Result<GroupRow, StoreError> {
        let row = sqlx::query(
            "SELECT name, description, created_by, created_at, updated_at FROM groups WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        group(&row)
    }

    pub async fn update_group(
        &self,
        name: &str,
        description: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_audited("group.update", name, now).await?;
        let r = sqlx::query("UPDATE groups SET description = $2, updated_at = $3 WHERE name = $1")
            .bind(name)
            .bind(description)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a group with its members and grants (cascade).
    pub async fn delete_group(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("group.delete", name, super::audit_scope::unix_now())
            .await?;
        let r = sqlx::query("DELETE FROM groups WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_members(&self, group: &str) -> Result<Vec<MemberRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT principal, added_by, added_at FROM group_members WHERE group_name = $1
             ORDER BY principal",
        )
        .bind(group)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    principal: r.try_get(0)?,
                    added_by: r.try_get(1)?,
                    added_at: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Adds a member; `Ok(false)` when it already was one.
    pub async fn add_member(
        &self,
        group: &str,
        principal: &str,
        by: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let target = format!("{group}/{principal}");
        let mut tx = self.begin_audited("group.member.add", &target, now).await?;
        let r = sqlx::query(INSERT_MEMBER)
            .bind(group)
            .bind(principal)
            .bind(by)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(true);
        }
        // Nothing changed: the entry rolls back with the transaction.
        drop(tx);
        self.get_group(group).await?;
        Ok(false)
    }

    pub async fn remove_member(&self, group: &str, principal: &str) -> Result<(), StoreError> {
        let target = format!("{group}/{principal}");
        let mut tx = self
            .begin_audited(
                "group.member.remove",
                &target,
                super::audit_scope::unix_now(),
            )
            .await?;
        let r = sqlx::query("DELETE FROM group_members WHERE group_name = $1 AND principal = $2")
            .bind(group)
            .bind(principal)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// The groups `principal` belongs to, by name.
    pub async fn groups_of(&self, principal: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT group_name FROM group_members WHERE principal = $1 ORDER BY group_name",
        )
        .bind(principal)
        .fetch_all(self.pool())
        .await?)
    }

    /// Every (principal, group) membership, for listing users with their groups.
    pub async fn all_memberships(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT principal, group_name FROM group_members ORDER BY group_name")
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Makes `principal` a member of exactly `groups`, atomically. A group that does not
    /// exist is a `Conflict` and changes nothing.
    pub async fn set_groups_of(
        &self,
        principal: &str,
        groups: &[String],
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_audited("user.groups.set", principal, now)
            .await?;
        sqlx::query("DELETE FROM group_members WHERE principal = $1")
            .bind(principal)
            .execute(&mut *tx)
            .await?;
        for g in groups {
            let r = sqlx::query(INSERT_MEMBER)
                .bind(g)
                .bind(principal)
                .bind(by)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() == 0 {
                let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM groups WHERE name = $1")
                    .bind(g)
                    .fetch_one(&mut *tx)
                    .await?;
                if exists == 0 {
                    return Err(not_found_group(g));
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_grants(&self, group: &str) -> Result<Vec<GrantRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT resource, permissions, granted_by, granted_at FROM group_grants
             WHERE group_name = $1 ORDER BY resource",
        )
        .bind(group)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GrantRow {
                    resource: r.try_get(0)?,
                    permissions: perms(&r.try_get::<String, _>(1)?)?,
                    granted_by: r.try_get(2)?,
                    granted_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Sets the group's grant on `resource` (replacing an earlier one).
    pub async fn put_grant(
        &self,
        group: &str,
        resource: &str,
        permissions: &[String],
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(permissions).unwrap_or_else(|_| "[]".into());
        let target = format!("{group}/{resource}");
        let mut tx = self.begin_audited("group.grant.put", &target, now).await?;
        let r = sqlx::query(
            "INSERT INTO group_grants (group_name, resource, permissions, granted_by, granted_at)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM groups WHERE name = $1)
             ON CONFLICT (group_name, resource) DO UPDATE SET permissions = excluded.permissions,
                 granted_by = excluded.granted_by, granted_at = excluded.granted_at",
        )
        .bind(group)
        .bind(resource)
        .bind(json)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_grant(&self, group: &str, resource: &str) -> Result<(), StoreError> {
        let target = format!("{group}/{resource}");
        let mut tx = self
            .begin_audited(
                "group.grant.delete",
                &target,
                super::audit_scope::unix_now(),
            )
            .await?;
        let r = sqlx::query("DELETE FROM group_grants WHERE group_name = $1 AND resource = $2")
            .bind(group)
            .bind(resource)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// The permissions `principal` holds on `resource` through its groups (a union; may
    /// repeat).
    pub async fn granted(
        &self,
        principal: &str,
        resource: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT g.permissions FROM group_grants g
             JOIN group_members m ON m.group_name = g.group_name
             WHERE m.principal = $1 AND g.resource = $2",
        )
        .bind(principal)
        .bind(resource)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(perms(&r)?);
        }
        Ok(out)
    }

    /// Principals whose names start with `prefix` that hold anything: group memberships
    /// or ring ownership.
    pub async fn principals_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let like = format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_"));
        Ok(sqlx::query_scalar(
            "SELECT principal FROM group_members WHERE principal LIKE $1 ESCAPE '\\'
             UNION SELECT created_by FROM rings WHERE created_by LIKE $1 ESCAPE '\\'",
        )
        .bind(like)
        .fetch_all(self.pool())
        .await?)
    }

    /// The rings `principal` created.
    pub async fn rings_owned_by(&self, principal: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT name FROM rings WHERE created_by = $1 ORDER BY name")
                .bind(principal)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Who created ring `name` (its owner), if the ring exists.
    pub async fn ring_owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT created_by FROM rings WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?,
        )
    }
}

/// Forgets everything that belongs to the name of a deleted principal, inside `tx`: its
/// group memberships, and its ownership of rings (the creator is kept for the record as
/// `deleted:<name>`, which no principal can be). A later principal of the same name starts
/// with nothing.
pub(super) async fn forget_principal(
    tx: &mut super::DbConn,
    principal: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM group_members WHERE principal = $1")
        .bind(principal)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE rings SET created_by = 'deleted:' || created_by WHERE created_by = $1")
        .bind(principal)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// [`forget_principal`] for every principal whose name starts with `prefix` (an OAuth
/// server's `<oauth_id>:`).
pub(super) async fn forget_principals_under(
    tx: &mut super::DbConn,
    prefix: &str,
) -> Result<(), sqlx::Error> {
    let like = format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_"));
    sqlx::query("DELETE FROM group_members WHERE principal LIKE $1 ESCAPE '\\'")
        .bind(&like)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE rings SET created_by = 'deleted:' || created_by WHERE created_by LIKE $1 ESCAPE '\\'",
    )
    .bind(&like)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
