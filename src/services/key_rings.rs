//! Key-ring operations for callers: permission checks over the key registry.
//!
//! Ring-level permissions come from the caller's role, ring ownership and group grants
//! ([`crate::services::groups`]); `rings.<r>.signers` in the configuration also gives
//! `sign`. An action needs its permission on every ring it touches.

use crate::hardware::Algorithm;
use crate::keys::{KeyRegistry, KeyVersion, JWT_DEFAULT_RING};
use crate::services::authz::Permission;
use crate::services::groups::RingPermission;
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

/// Every version of every ring the caller may view: all of them with `keys:read`,
/// else those of the rings a grant or ownership lets it view (403 when none).
pub async fn list(
    rt: &crate::runtime::Runtime,
    caller: &Principal,
) -> Result<Vec<Arc<KeyVersion>>, ServiceError> {
    let all = rt.keys.versions();
    if caller.role.has(Permission::KeysRead) {
        return Ok(all);
    }
    let mut rings: Vec<&str> = all.iter().map(|v| v.ring.as_str()).collect();
    rings.sort_unstable();
    rings.dedup();
    let mut visible = std::collections::HashSet::new();
    for r in rings {
        if rt.groups.allows(caller, r, RingPermission::View).await? {
            visible.insert(r.to_string());
        }
    }
    if visible.is_empty() {
        return Err(ServiceError::Forbidden(format!(
            "role {} lacks keys:read and holds no view grant",
            caller.role
        )));
    }
    Ok(all
        .into_iter()
        .filter(|v| visible.contains(&v.ring))
        .collect())
}

/// Whether `caller` may sign with `ring`: by role, configured signers, ownership or a
/// group grant.
async fn may_sign(
    rt: &crate::runtime::Runtime,
    caller: &Principal,
    ring: &str,
) -> Result<bool, ServiceError> {
    Ok(rt.tokens.may_sign(caller, ring)
        || rt.groups.allows(caller, ring, RingPermission::Sign).await?)
}

/// The signing service. Needs `sign` on the ring, and on every ring the request names
/// as an audience (`ring:<name>`): a token for another ring's audience speaks for that
/// ring too.
pub async fn sign(
    rt: &crate::runtime::Runtime,
    caller: &Principal,
    ring: &str,
    req: crate::services::tokens::signing::SignRequest,
    now: i64,
) -> Result<(String, String), ServiceError> {
    let mut touched = vec![ring.to_string()];
    touched.extend(
        req.audience
            .iter()
            .filter_map(|a| crate::services::groups::ring_of(a))
            .map(str::to_string),
    );
    for r in &touched {
        if !may_sign(rt, caller, r).await? {
            // Ring existence is not revealed to callers without the grant.
            return Err(ServiceError::Forbidden(format!(
                "no sign grant on ring {r:?} for this caller"
            )));
        }
    }
    rt.tokens.sign_authorized(caller, ring, req, now).await
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
    rt.groups
        .require_all(caller, &[(ring, RingPermission::Rotate)])
        .await?;
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
