//! API-key workflows. A key acts as its owner, so creating one in a name, re-keying it
//! or raising its role is acting as that name: the one act-as rule
//! ([`crate::services::groups::GroupService::require_can_act_as`]) decides.

use crate::approval_rules::ApprovalOperation;
use crate::runtime::Runtime;
use crate::services::api_keys::{ApiKey, ApiKeyPatch, NewApiKey};
use crate::services::approvals::{Approval, Operation, Submitted};
use crate::services::authz::{self, Permission, Role, ROOT_PRINCIPAL};
use crate::services::{Principal, ServiceError};
use crate::store::audit::AuditActor;
use secrecy::SecretString;

/// What creating a key led to.
#[derive(Debug)]
pub enum KeyCreation {
    /// The key, and its secret (shown this once).
    Created(Box<ApiKey>, SecretString),
    /// A super-admin key under `approvals.create-super-admin-key`: it waits for
    /// approvals, then the requester redeems it.
    Pending(Box<Approval>),
}

/// The checks of a new key in `owner`'s name with `role`, before anything is stored:
/// `api-keys:write` and a role managing `role`, the act-as rule for the owner, and a
/// role the owner's account covers (a super-admin key for a read-only user would make
/// whoever created it a second super-admin).
pub async fn check_create(
    rt: &Runtime,
    caller: &Principal,
    owner: &str,
    role: Role,
) -> Result<(), ServiceError> {
    authz::require(caller.role, Permission::ApiKeysWrite, "manage API keys")?;
    if !caller.role.manages(role) {
        return Err(ServiceError::Forbidden(format!(
            "role {} may not manage keys with role {role}",
            caller.role
        )));
    }
    rt.groups.require_can_act_as(caller, owner).await?;
    if owner != ROOT_PRINCIPAL {
        if let Some(r) = rt.users.role_of(owner) {
            if !r.covers(role) {
                return Err(ServiceError::Forbidden(format!(
                    "a key owned by {owner:?} (role {r}) cannot carry role {role}"
                )));
            }
        }
    }
    Ok(())
}

/// Refuses to hand out a super-admin credential outside `create-super-admin-key` while
/// that operation needs approvals (`docs/lifecycle.md`): `what` names the credential.
pub fn require_no_super_admin_gate(rt: &Runtime, what: &str) -> Result<(), ServiceError> {
    let required = rt
        .config
        .approvals
        .rule(ApprovalOperation::CreateSuperAdminKey)
        .required;
    if required > 0 {
        return Err(ServiceError::Forbidden(format!(
            "{what} cannot become super-admin while approvals.create-super-admin-key requires {required} approval(s); request a super-admin API key through approvals instead"
        )));
    }
    Ok(())
}

/// Creates a key (owned by the caller unless `owner` names someone else); returns the
/// secret once. A super-admin key is operation `create-super-admin-key`: with approvals
/// required it becomes a request the requester redeems once approved.
pub async fn create(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    req: NewApiKey,
    now: i64,
) -> Result<KeyCreation, ServiceError> {
    let owner = req.owner.clone().unwrap_or_else(|| caller.name.clone());
    check_create(rt, caller, &owner, req.role).await?;
    if req.role == Role::SuperAdmin
        && rt
            .config
            .approvals
            .rule(ApprovalOperation::CreateSuperAdminKey)
            .required
            > 0
    {
        let op = Operation::CreateSuperAdminKey {
            name: req.name,
            description: req.description,
            owner,
            expires_at: req.expires_at,
        };
        return match super::approvals::submit(rt, caller, actor, op, now).await? {
            Submitted::Pending(a) => Ok(KeyCreation::Pending(a)),
            Submitted::Done(_) => Err(ServiceError::Internal(
                "create-super-admin-key ran without its approvals".into(),
            )),
        };
    }
    let (key, secret) = rt
        .api_keys
        .create_as(caller, &caller.credential_creator(), req, now)
        .await?;
    Ok(KeyCreation::Created(Box::new(key), secret))
}

/// Changes name, description or role; a new role is acting as the owner.
pub async fn update(
    rt: &Runtime,
    caller: &Principal,
    id: &str,
    patch: ApiKeyPatch,
) -> Result<ApiKey, ServiceError> {
    if let Some(role) = patch.role {
        let current = rt.api_keys.get(caller, id).await?;
        // A new role is checked like a new key in the owner's name: act-as, the owner's
        // account must cover it, and the caller must manage it.
        check_create(rt, caller, &current.owner, role).await?;
        // Raising a key to super-admin would make a super-admin credential without the
        // `create-super-admin-key` approvals: make a new key through them instead.
        if role == Role::SuperAdmin && current.role != Role::SuperAdmin {
            require_no_super_admin_gate(rt, "an API key's role")?;
        }
    }
    rt.api_keys.update(caller, id, patch).await
}

/// Issues a new secret: the caller will hold a credential acting as the key's owner.
/// A secret someone other than the owner received is not the owner's own: the key is
/// recorded as made by them first, so it never votes for the owner.
pub async fn regenerate(
    rt: &Runtime,
    caller: &Principal,
    id: &str,
) -> Result<(ApiKey, SecretString), ServiceError> {
    let owner = rt.api_keys.get(caller, id).await?.owner;
    rt.groups.require_can_act_as(caller, &owner).await?;
    let creator = caller.credential_creator();
    if creator != owner {
        rt.store.set_api_key_creator(id, &creator).await?;
    }
    rt.api_keys.regenerate(caller, id).await
}

/// Deletes a key; it stops working at once.
pub async fn delete(rt: &Runtime, caller: &Principal, id: &str) -> Result<(), ServiceError> {
    rt.api_keys.delete(caller, id).await
}

/// Every API key the caller may see (`api-keys:read`), without secrets.
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<ApiKey>, ServiceError> {
    rt.api_keys.list(caller).await
}

/// One API key's metadata (`api-keys:read`).
pub async fn get(rt: &Runtime, caller: &Principal, id: &str) -> Result<ApiKey, ServiceError> {
    rt.api_keys.get(caller, id).await
}
