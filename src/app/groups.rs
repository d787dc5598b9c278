//! Group membership workflows. A member added to or removed from an approver group
//! changes who can approve: it is operation `change-approvers`, which runs at once while
//! the group cannot yet meet its quorum (enrolment) and needs approvals from the group
//! once it can (docs/lifecycle.md).

use crate::runtime::Runtime;
use crate::services::approvals::{Approval, Operation, Submitted};
use crate::services::{Principal, ServiceError};
use crate::store::audit::AuditActor;

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
