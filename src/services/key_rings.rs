//! Key-ring creation for callers. Listing, signing and rotating are workflows over
//! several services (`app::keys`); ring-level permissions are decided in one place,
//! [`crate::services::groups::GroupService::allows`].

use crate::hardware::Algorithm;
use crate::keys::{KeyRegistry, KeyVersion, JWT_DEFAULT_RING};
use crate::services::authz::Permission;
use crate::services::{Principal, ServiceError};
use std::sync::Arc;

fn require(caller: &Principal, p: Permission) -> Result<(), ServiceError> {
    if caller.role.has(p) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!(
            "role {} lacks {}",
            caller.role,
            p.name()
        )))
    }
}

/// Creates a ring whose first version is active and generated in hardware. `backend`
/// defaults to the backend holding `jwt-default`.
pub async fn create(
    keys: &KeyRegistry,
    caller: &Principal,
    ring: &str,
    algorithm: &str,
    backend: Option<String>,
    now: i64,
) -> Result<Arc<KeyVersion>, ServiceError> {
    require(caller, Permission::KeysCreate)?;
    let alg: Algorithm = algorithm.parse().map_err(ServiceError::Invalid)?;
    let backend = match backend {
        Some(b) => b,
        None => keys.active(JWT_DEFAULT_RING)?.backend.clone(),
    };
    let v = keys
        .create_ring(ring, alg, &backend, &caller.name, now)
        .await?;
    Ok(v)
}
