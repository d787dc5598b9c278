//! Custom roles: named lists of permissions, managed through `/api/v1/roles`.
//!
//! Why it exists: sites need roles between the built-in ones (an "auditor" that reads
//! keys and users, a "provisioner" that only makes key files). A custom role is made of
//! the same permissions as the built-in roles, so every rule that compares roles
//! ([`Role::covers`], [`Role::manages`]) works unchanged.
//!
//! - Reading needs `roles:read`; creating, changing and deleting need `roles:write` and a
//!   role that covers the custom role, before and after the change: nobody can mint a
//!   role stronger than their own.
//! - Names are 1–64 characters of `a-z 0-9 - _`, starting with a letter, and never a
//!   built-in name. `+` is kept for unions of IdP-mapped roles.
//! - A role held by a user, an API key, a key file or an OAuth server's mapping cannot be
//!   deleted (409); reassign them first.
//! - The process keeps the table in memory ([`crate::services::authz::custom_roles`])
//!   and reloads it after each change here, and when the change feed reports that
//!   another process changed it (`crate::cluster`).

use crate::services::authz::{self, PermSet, Permission, Role};
use crate::services::{validate_text, Principal, ServiceError};
use crate::store::roles::RoleRow;
use crate::store::{Store, StoreError};

/// Most custom roles an installation may hold.
pub const MAX_CUSTOM_ROLES: usize = 256;

/// A role as shown to callers.
#[derive(Debug, Clone)]
pub struct RoleInfo {
    pub name: String,
    pub description: String,
    pub permissions: Vec<&'static str>,
    pub builtin: bool,
    pub created_by: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewRole {
    pub name: String,
    pub description: Option<String>,
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RolePatch {
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

pub struct RoleService {
    store: Store,
}

impl std::fmt::Debug for RoleService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleService").finish_non_exhaustive()
    }
}

fn parse_permissions(names: &[String]) -> Result<PermSet, ServiceError> {
    if names.is_empty() {
        return Err(ServiceError::Invalid(
            "permissions must name at least one permission".into(),
        ));
    }
    let mut perms = Vec::with_capacity(names.len());
    for n in names {
        perms.push(n.parse::<Permission>().map_err(|e| {
            ServiceError::Invalid(format!(
                "{e}; known permissions: {}",
                PermSet::of(&Permission::ALL).names().join(", ")
            ))
        })?);
    }
    Ok(PermSet::of(&perms))
}

fn validate_name(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(ServiceError::Invalid(format!(
            "role name {name:?}: use 1-64 characters of a-z, 0-9, - and _, starting with a letter"
        )));
    }
    if Role::builtin(name).is_some() {
        return Err(ServiceError::Conflict(format!("{name} is a built-in role")));
    }
    Ok(())
}

impl RoleService {
    /// Loads the custom roles into the process's role table.
    pub async fn new(store: Store) -> Result<RoleService, ServiceError> {
        let svc = RoleService { store };
        svc.reload().await?;
        Ok(svc)
    }

    /// Re-reads the custom roles into the process's role table (at start, after a local
    /// change, and when the change feed reports a change made elsewhere).
    pub async fn reload(&self) -> Result<(), ServiceError> {
        authz::custom_roles()
            .reload(|_| async {
                let rows = self.store.list_roles().await?;
                let mut table = Vec::with_capacity(rows.len());
                for r in rows {
                    match parse_permissions(&r.permissions) {
                        Ok(perms) => table.push((
                            r.name,
                            authz::CustomRole {
                                perms,
                                created_at: r.created_at,
                            },
                        )),
                        Err(e) => {
                            tracing::error!(role = %r.name, error = %e, "skipping an unreadable custom role; it grants nothing")
                        }
                    }
                }
                Ok::<_, ServiceError>(authz::custom_table_of(table))
            })
            .await
    }

    async fn after_change(&self) {
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "role table reload failed; the change feed retries");
        }
    }

    fn info(r: RoleRow) -> RoleInfo {
        let perms = parse_permissions(&r.permissions).unwrap_or_default();
        RoleInfo {
            name: r.name,
            description: r.description,
            permissions: perms.names(),
            builtin: false,
            created_by: Some(r.created_by),
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
        }
    }

    fn builtin_info(r: Role) -> RoleInfo {
        RoleInfo {
            name: r.name().to_string(),
            description: String::new(),
            permissions: r.permissions().names(),
            builtin: true,
            created_by: None,
            created_at: None,
            updated_at: None,
        }
    }

    /// Built-in roles first, then the custom ones by name.
    pub async fn list(&self, caller: &Principal) -> Result<Vec<RoleInfo>, ServiceError> {
        authz::require(caller.role, Permission::RolesRead, "read roles")?;
        let mut out: Vec<RoleInfo> = Role::ALL.into_iter().map(Self::builtin_info).collect();
        out.extend(self.store.list_roles().await?.into_iter().map(Self::info));
        Ok(out)
    }

    pub async fn get(&self, caller: &Principal, name: &str) -> Result<RoleInfo, ServiceError> {
        authz::require(caller.role, Permission::RolesRead, "read roles")?;
        if let Some(r) = Role::builtin(name) {
            return Ok(Self::builtin_info(r));
        }
        self.load(name).await.map(Self::info)
    }

    async fn load(&self, name: &str) -> Result<RoleRow, ServiceError> {
        self.store
            .list_roles()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ServiceError::NotFound(format!("no role {name:?}")))
    }

    fn check_grant(caller: &Principal, perms: PermSet) -> Result<(), ServiceError> {
        if !caller.role.manages(Role::proposed(perms)) {
            let missing: Vec<&str> = perms
                .iter()
                .filter(|p| !caller.role.has(*p))
                .map(Permission::name)
                .collect();
            return Err(ServiceError::Forbidden(format!(
                "role {} may not grant permissions it does not hold: {}",
                caller.role,
                missing.join(", ")
            )));
        }
        Ok(())
    }

    pub async fn create(
        &self,
        caller: &Principal,
        req: NewRole,
        now: i64,
    ) -> Result<RoleInfo, ServiceError> {
        authz::require(caller.role, Permission::RolesWrite, "manage roles")?;
        validate_name(&req.name)?;
        let description = req.description.unwrap_or_default();
        validate_text("description", &description, 1024, false)?;
        let perms = parse_permissions(&req.permissions)?;
        Self::check_grant(caller, perms)?;
        let row = RoleRow {
            name: req.name,
            description,
            permissions: perms.names().into_iter().map(String::from).collect(),
            created_by: caller.name.clone(),
            created_at: now,
            updated_at: now,
        };
        self.store.insert_role(&row, MAX_CUSTOM_ROLES).await?;
        self.after_change().await;
        tracing::info!(role = %row.name, permissions = ?row.permissions, by = %caller.name, "created role");
        Ok(Self::info(row))
    }

    pub async fn update(
        &self,
        caller: &Principal,
        name: &str,
        patch: RolePatch,
        now: i64,
    ) -> Result<RoleInfo, ServiceError> {
        authz::require(caller.role, Permission::RolesWrite, "manage roles")?;
        if Role::builtin(name).is_some() {
            return Err(ServiceError::Conflict(format!(
                "{name} is a built-in role and cannot be changed"
            )));
        }
        let current = self.load(name).await?;
        Self::check_grant(caller, parse_permissions(&current.permissions)?)?;
        if let Some(d) = &patch.description {
            validate_text("description", d, 1024, false)?;
        }
        let perms = match &patch.permissions {
            Some(p) => {
                let set = parse_permissions(p)?;
                Self::check_grant(caller, set)?;
                Some(
                    set.names()
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                )
            }
            None => None,
        };
        self.store
            .update_role(name, patch.description.as_deref(), perms.as_deref(), now)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ServiceError::NotFound(format!("no role {name:?}")),
                e => e.into(),
            })?;
        self.after_change().await;
        tracing::info!(role = %name, permissions = ?perms, by = %caller.name, "changed role");
        self.load(name).await.map(Self::info)
    }

    /// Deletes a custom role. `mapped_by` names the OAuth servers whose mapping uses it.
    pub async fn delete(
        &self,
        caller: &Principal,
        name: &str,
        mapped_by: Vec<String>,
    ) -> Result<(), ServiceError> {
        authz::require(caller.role, Permission::RolesWrite, "manage roles")?;
        if Role::builtin(name).is_some() {
            return Err(ServiceError::Conflict(format!(
                "{name} is a built-in role and cannot be deleted"
            )));
        }
        let current = self.load(name).await?;
        Self::check_grant(caller, parse_permissions(&current.permissions)?)?;
        if !mapped_by.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "role {name} is mapped by OAuth servers {}; change their role_mapping first",
                mapped_by.join(", ")
            )));
        }
        self.store.delete_role(name).await.map_err(|e| match e {
            StoreError::NotFound => ServiceError::NotFound(format!("no role {name:?}")),
            e => e.into(),
        })?;
        self.after_change().await;
        tracing::info!(role = %name, by = %caller.name, "deleted role");
        Ok(())
    }
}
