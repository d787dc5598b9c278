//! Group membership workflows. A member added to or removed from an approver group
//! changes who can approve: it is operation `change-approvers`, which runs at once while
//! the group cannot yet meet its quorum (enrolment) and needs approvals from the group
//! once it can (docs/lifecycle.md).

use crate::runtime::Runtime;
use crate::services::approvals::{Approval, Operation, Submitted};
use crate::services::groups::Group;
use crate::services::{Principal, ServiceError};
use crate::store::audit::AuditActor;
use crate::store::groups::{GrantRow, MemberRow};

/// What a membership change led to.
#[derive(Debug)]
pub enum MemberChange {
    /// Applied; for an addition, whether the principal was new to the group.
    Done(bool),
    /// It waits for approvals.
    Pending(Box<Approval>),
}

async fn change(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    group: &str,
    principal: &str,
    add: bool,
    now: i64,
) -> Result<MemberChange, ServiceError> {
    if !rt.groups.approvers().names_group(group) {
        return if add {
            Ok(MemberChange::Done(
                rt.groups.add_member(caller, group, principal, now).await?,
            ))
        } else {
            rt.groups.remove_member(caller, group, principal).await?;
            Ok(MemberChange::Done(true))
        };
    }
    if add
        && rt
            .groups
            .groups_of(principal)
            .await?
            .iter()
            .any(|g| g == group)
    {
        // Already a member: nothing changes, nothing to approve (after the same checks).
        rt.groups
            .check_member_change(caller, group, principal, true)
            .await?;
        return Ok(MemberChange::Done(false));
    }
    let op = Operation::GroupMember {
        group: group.to_string(),
        principal: principal.to_string(),
        add,
    };
    match super::approvals::submit(rt, caller, actor, op, now).await? {
        Submitted::Done(_) => Ok(MemberChange::Done(true)),
        Submitted::Pending(a) => Ok(MemberChange::Pending(a)),
    }
}

/// Adds `principal` to `group`.
pub async fn add_member(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    group: &str,
    principal: &str,
    now: i64,
) -> Result<MemberChange, ServiceError> {
    change(rt, caller, actor, group, principal, true, now).await
}

/// Removes `principal` from `group`.
pub async fn remove_member(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    group: &str,
    principal: &str,
    now: i64,
) -> Result<MemberChange, ServiceError> {
    change(rt, caller, actor, group, principal, false, now).await
}

/// Every group with its members and grants.
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<Group>, ServiceError> {
    rt.groups.list(caller).await
}

/// One group.
pub async fn get(rt: &Runtime, caller: &Principal, name: &str) -> Result<Group, ServiceError> {
    rt.groups.get(caller, name).await
}

/// Creates a group.
pub async fn create(
    rt: &Runtime,
    caller: &Principal,
    name: &str,
    description: Option<String>,
    now: i64,
) -> Result<Group, ServiceError> {
    rt.groups.create(caller, name, description, now).await
}

/// Changes a group's description.
pub async fn update(
    rt: &Runtime,
    caller: &Principal,
    name: &str,
    description: String,
    now: i64,
) -> Result<Group, ServiceError> {
    rt.groups.update(caller, name, description, now).await
}

/// Deletes a group with its memberships and grants (never an approver group).
pub async fn delete(rt: &Runtime, caller: &Principal, name: &str) -> Result<(), ServiceError> {
    rt.groups.delete(caller, name).await
}

/// The group's members.
pub async fn members(
    rt: &Runtime,
    caller: &Principal,
    name: &str,
) -> Result<Vec<MemberRow>, ServiceError> {
    rt.groups.members(caller, name).await
}

/// The group's grants.
pub async fn grants(
    rt: &Runtime,
    caller: &Principal,
    name: &str,
) -> Result<Vec<GrantRow>, ServiceError> {
    rt.groups.grants(caller, name).await
}

/// Sets the group's grant on `resource` (`ring:<name>` of an existing ring), replacing
/// an earlier one (the service's `put_grant`).
pub async fn add_grant(
    rt: &Runtime,
    caller: &Principal,
    name: &str,
    resource: &str,
    permissions: &[String],
    now: i64,
) -> Result<GrantRow, ServiceError> {
    let keys = rt.keys.clone();
    rt.groups
        .put_grant(
            caller,
            name,
            resource,
            permissions,
            |ring| keys.active(ring).is_ok(),
            now,
        )
        .await
}

/// Removes the group's grant on `resource`.
pub async fn delete_grant(
    rt: &Runtime,
    caller: &Principal,
    name: &str,
    resource: &str,
) -> Result<(), ServiceError> {
    rt.groups.delete_grant(caller, name, resource).await
}
