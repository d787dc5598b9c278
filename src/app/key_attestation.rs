//! Key attestation for callers (docs/attestation.md): anyone who may view a ring may
//! fetch the attestation of its versions.

use crate::keys::attestation::Attestation;
use crate::services::groups::RingPermission;
use crate::services::{Principal, ServiceError};

/// Attests `ring` v`version` with the relying party's `nonce`. Needs `view` on the ring.
pub async fn attest(
    rt: &crate::runtime::Runtime,
    caller: &Principal,
    ring: &str,
    version: i64,
    nonce: Vec<u8>,
    now: i64,
) -> Result<Attestation, ServiceError> {
    if !rt.keys.ring_exists(ring) {
        return Err(ServiceError::NotFound(format!("no key ring {ring:?}")));
    }
    if !rt.groups.allows(caller, ring, RingPermission::View).await? {
        return Err(ServiceError::Forbidden(format!(
            "viewing ring {ring:?} needs keys:read or a view grant"
        )));
    }
    rt.keys
        .attest(ring, version, nonce, now)
        .await
        .map_err(|e| match e {
            // Attestation names one version; asking for one that does not exist is 404.
            crate::keys::KeysError::UnknownRing(r) => {
                ServiceError::NotFound(format!("no key version {r}"))
            }
            other => other.into(),
        })
}
