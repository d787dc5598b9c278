//! Key-ring operations for callers: permission checks over the key registry.

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

/// Every version of every ring.
pub fn list(keys: &KeyRegistry, caller: &Principal) -> Result<Vec<Arc<KeyVersion>>, ServiceError> {
    require(caller, Permission::KeysRead)?;
    Ok(keys.versions())
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

/// Rotates `ring` and applies any transition that is already due (with a zero publish
/// delay the new version activates at once).
pub async fn rotate(
    rt: &crate::runtime::Runtime,
    caller: &Principal,
    ring: &str,
    immediate: bool,
    now: i64,
) -> Result<Arc<KeyVersion>, ServiceError> {
    require(caller, Permission::KeysRotate)?;
    let v = rt.keys.rotate(ring, immediate, &caller.name, now).await?;
    rt.keys.advance(rt.rotation_times(), now).await?;
    let current = rt
        .keys
        .versions()
        .into_iter()
        .find(|x| x.ring == v.ring && x.version == v.version)
        .unwrap_or(v);
    Ok(current)
}
