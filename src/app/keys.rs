//! Key-ring workflows: list what the caller may view, sign with a ring. Rotation,
//! regeneration and destruction go through [`super::approvals`].

use crate::keys::KeyVersion;
use crate::runtime::Runtime;
use crate::services::authz::Permission;
use crate::services::groups::{ring_of, RingPermission};
use crate::services::tokens::signing::SignRequest;
use crate::services::{Principal, ServiceError};
use std::sync::Arc;

/// Every version of every ring the caller may view: all of them with `keys:read`,
/// else those of the rings it holds `view` on (403 when none).
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<Arc<KeyVersion>>, ServiceError> {
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

/// The signing service. Needs `sign` on the ring, and on every ring the request names
/// as an audience (`ring:<name>`): a token for another ring's audience speaks for that
/// ring too. Returns the token and its kid.
pub async fn sign(
    rt: &Runtime,
    caller: &Principal,
    ring: &str,
    req: SignRequest,
    now: i64,
) -> Result<(String, String), ServiceError> {
    let mut touched = vec![ring.to_string()];
    touched.extend(
        req.audience
            .iter()
            .filter_map(|a| ring_of(a))
            .map(str::to_string),
    );
    for r in &touched {
        if !rt.groups.allows(caller, r, RingPermission::Sign).await? {
            // Ring existence is not revealed to callers without the grant.
            return Err(ServiceError::Forbidden(format!(
                "no sign grant on ring {r:?} for this caller"
            )));
        }
    }
    rt.tokens.sign_authorized(caller, ring, req, now).await
}

/// Rotation phases from configuration: a replaced key stays published for the longest
/// token lifetime any JWT ring can have signed, plus leeway.
pub fn rotation_times(rt: &Runtime) -> crate::keys::rotation::RotationTimes {
    crate::keys::rotation::RotationTimes {
        publish_delay: rt.config.rotation.publish_delay.secs(),
        retire_after: rt.tokens.settings().longest_token(),
    }
}

/// The scheduled rotation period of `ring` in seconds: `rings.<ring>.rotation_period`,
/// else `rotation.period`; `None` when neither is set.
pub fn rotation_period(rt: &Runtime, ring: &str) -> Option<i64> {
    rt.config
        .rings
        .get(ring)
        .and_then(|r| r.rotation_period)
        .or(rt.config.rotation.period)
        .map(|d| d.secs())
}
