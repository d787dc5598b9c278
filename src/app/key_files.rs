//! Key-file workflows. Re-keying a file hands the caller a credential acting as the
//! file's accessID: the one act-as rule decides.

use crate::runtime::Runtime;
use crate::services::authz::Role;
use crate::services::key_files::{KeyFile, KeyFileDocument, KeyFilePatch, NewKeyFile, Rekey};
use crate::services::{Principal, ServiceError};

/// Replaces the file's key; the previous file and every token minted with it stop
/// working at once.
pub async fn regenerate(
    rt: &Runtime,
    caller: &Principal,
    access_id: &str,
    req: Rekey,
    now: i64,
) -> Result<KeyFileDocument, ServiceError> {
    rt.groups.require_can_act_as(caller, access_id).await?;
    rt.key_files.regenerate(caller, access_id, req, now).await
}

/// Creates a key file. A super-admin file is a super-admin credential: while
/// `create-super-admin-key` needs approvals it is refused (approvals redeem API keys).
pub async fn create(
    rt: &Runtime,
    caller: &Principal,
    req: NewKeyFile,
    now: i64,
) -> Result<KeyFileDocument, ServiceError> {
    if req.role == Some(Role::SuperAdmin) {
        super::api_keys::require_no_super_admin_gate(rt, "a key file")?;
    }
    rt.key_files.create(caller, req, now).await
}

/// Changes a key file's description or role; raising it to super-admin is refused like
/// creating one.
pub async fn update(
    rt: &Runtime,
    caller: &Principal,
    access_id: &str,
    patch: KeyFilePatch,
    now: i64,
) -> Result<KeyFile, ServiceError> {
    if patch.role == Some(Role::SuperAdmin) {
        let current = rt.key_files.get(caller, access_id).await?;
        if current.role != Role::SuperAdmin {
            super::api_keys::require_no_super_admin_gate(rt, "a key file")?;
        }
    }
    rt.key_files.update(caller, access_id, patch, now).await
}

/// Every key file's metadata (`key-files:read`; an unreadable record is skipped and
/// logged, so it cannot hide the others).
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<KeyFile>, ServiceError> {
    rt.key_files.list(caller).await
}

/// One key file's metadata (`key-files:read`).
pub async fn get(
    rt: &Runtime,
    caller: &Principal,
    access_id: &str,
) -> Result<KeyFile, ServiceError> {
    rt.key_files.get(caller, access_id).await
}

/// Deletes a key file (`key-files:write`, and a role that manages the file's): its
/// assertions and every token minted with it stop working at once. Ending a credential
/// is not acting as its accessID, so the act-as rule does not apply.
pub async fn delete(rt: &Runtime, caller: &Principal, access_id: &str) -> Result<(), ServiceError> {
    rt.key_files.delete(caller, access_id).await
}
