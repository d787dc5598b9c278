//! API-key workflows. A key acts as its owner, so creating one in a name, re-keying it
//! or raising its role is acting as that name: the one act-as rule
//! ([`crate::services::groups::GroupService::require_can_act_as`]) decides.

use crate::runtime::Runtime;
use crate::services::api_keys::{ApiKey, ApiKeyPatch, NewApiKey};
use crate::services::authz::ROOT_PRINCIPAL;
use crate::services::{Principal, ServiceError};
use secrecy::SecretString;

/// Creates a key (owned by the caller unless `owner` names someone else); returns the
/// secret once.
pub async fn create(
    rt: &Runtime,
    caller: &Principal,
    req: NewApiKey,
    now: i64,
) -> Result<(ApiKey, SecretString), ServiceError> {
    let owner = req.owner.clone().unwrap_or_else(|| caller.name.clone());
    rt.groups.require_can_act_as(caller, &owner).await?;
    // A key never carries more than its owner's account holds: a super-admin key for a
    // read-only user would make whoever created it a second super-admin.
    let owner_role = if owner == ROOT_PRINCIPAL {
        None
    } else {
        rt.users.role_of(&owner)
    };
    if let Some(r) = owner_role {
        if !r.covers(req.role) {
            return Err(ServiceError::Forbidden(format!(
                "a key owned by {owner:?} (role {r}) cannot carry role {}",
                req.role
            )));
        }
    }
    rt.api_keys
        .create_as(caller, &caller.credential_creator(), req, now)
        .await
}

/// Changes name, description or role; a new role is acting as the owner.
pub async fn update(
    rt: &Runtime,
    caller: &Principal,
    id: &str,
    patch: ApiKeyPatch,
) -> Result<ApiKey, ServiceError> {
    if patch.role.is_some() {
        let owner = rt.api_keys.get(caller, id).await?.owner;
        rt.groups.require_can_act_as(caller, &owner).await?;
    }
    rt.api_keys.update(caller, id, patch).await
}

/// Issues a new secret: the caller will hold a credential acting as the key's owner.
pub async fn regenerate(
    rt: &Runtime,
    caller: &Principal,
    id: &str,
) -> Result<(ApiKey, SecretString), ServiceError> {
    let owner = rt.api_keys.get(caller, id).await?.owner;
    rt.groups.require_can_act_as(caller, &owner).await?;
    rt.api_keys.regenerate(caller, id).await
}

/// Deletes a key; it stops working at once.
pub async fn delete(rt: &Runtime, caller: &Principal, id: &str) -> Result<(), ServiceError> {
    rt.api_keys.delete(caller, id).await
}
