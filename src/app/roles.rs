//! Custom role workflows (`docs/roles.md`). The role service decides who may read and
//! manage roles; deleting one also needs to know which IdP mappings still name it, which
//! only the runtime can tell.

use crate::runtime::Runtime;
use crate::services::roles::{NewRole, RoleInfo, RolePatch};
use crate::services::{Principal, ServiceError};

/// Built-in and custom roles.
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<RoleInfo>, ServiceError> {
    rt.roles.list(caller).await
}

/// One role, built-in or custom.
pub async fn get(rt: &Runtime, caller: &Principal, name: &str) -> Result<RoleInfo, ServiceError> {
    rt.roles.get(caller, name).await
}

/// Creates a custom role.
pub async fn create(
    rt: &Runtime,
    caller: &Principal,
    req: NewRole,
    now: i64,
) -> Result<RoleInfo, ServiceError> {
    rt.roles.create(caller, req, now).await
}

/// Changes a custom role's description or permissions.
pub async fn update(
    rt: &Runtime,
    caller: &Principal,
    name: &str,
    patch: RolePatch,
    now: i64,
) -> Result<RoleInfo, ServiceError> {
    rt.roles.update(caller, name, patch, now).await
}

/// Deletes a custom role that no user, credential or IdP mapping holds.
pub async fn delete(rt: &Runtime, caller: &Principal, name: &str) -> Result<(), ServiceError> {
    let mapped = rt.oauth.servers_mapping_role(name);
    rt.roles.delete(caller, name, mapped).await
}
