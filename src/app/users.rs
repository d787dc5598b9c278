//! User workflows: create, change (password, role, groups), delete.
//!
//! Authorization, once per operation: acting as the user (a password set for them) goes
//! through the one act-as rule; a group change touching an approver group, a role that
//! approves operations, and deleting an approver are changes of who can approve
//! (docs/lifecycle.md): checked against the approver sets, and through approvals once a
//! set is established.

use crate::approval_rules::ApproverRule;
use crate::runtime::Runtime;
use crate::services::approvals::{Approval, Operation, Submitted};
use crate::services::authz::Role;
use crate::services::users::{NewUser, User, UserPatch};
use crate::services::{Principal, ServiceError};
use crate::store::audit::AuditActor;

/// What a change of a user led to.
#[derive(Debug)]
pub enum UserChange {
    /// Applied: the user as they are now, with their groups.
    Done(User, Vec<String>),
    /// A role that approves operations was asked for; it waits for approvals.
    Pending(Box<Approval>),
}

/// Refuses a direct membership change of an established approver group: those go
/// through `POST`/`DELETE /api/v1/groups/{group}/members`, which need approvals.
async fn check_direct_membership(
    rt: &Runtime,
    principal: &str,
    before: &[String],
    after: &[String],
) -> Result<(), ServiceError> {
    let approvers = rt.groups.approvers();
    let changed = before
        .iter()
        .filter(|g| !after.contains(g))
        .chain(after.iter().filter(|g| !before.contains(g)));
    for g in changed {
        let set = ApproverRule::Group(g.clone());
        if approvers.names_group(g) && approvers.established(&set).await? {
            return Err(ServiceError::Forbidden(format!(
                "group {g:?} approves operations and holds its quorum: change {principal:?}'s membership with POST or DELETE /api/v1/groups/{g}/members, which needs approvals"
            )));
        }
    }
    Ok(())
}

/// Refuses giving `role` directly when it approves operations and its set is
/// established: that is a `change-approvers` request.
async fn check_direct_role(rt: &Runtime, role: Role) -> Result<bool, ServiceError> {
    let approvers = rt.groups.approvers();
    if !approvers.names_role(role) {
        return Ok(false);
    }
    approvers
        .established(&ApproverRule::Role(role.name().to_string()))
        .await
}

/// Creates a user (and their group memberships).
pub async fn create(
    rt: &Runtime,
    caller: &Principal,
    req: NewUser,
    now: i64,
) -> Result<(User, Vec<String>), ServiceError> {
    let groups = req.groups.clone();
    // Checked before the user exists, so a bad group stores nothing. A name that groups
    // already list would inherit their grants: the creator must hold them.
    if !groups.is_empty() {
        rt.groups.check_assignable(caller, &groups).await?;
        check_direct_membership(rt, &req.username, &[], &groups).await?;
    }
    rt.groups.require_can_act_as(caller, &req.username).await?;
    if check_direct_role(rt, req.role).await? {
        return Err(ServiceError::Forbidden(format!(
            "role {} approves operations and holds its quorum: create the user with another role, then ask for the role with PATCH /api/v1/users/{} (it needs approvals)",
            req.role, req.username
        )));
    }
    let user = rt.users.create(caller, req, now).await?;
    if !groups.is_empty() {
        rt.groups
            .set_groups_of(caller, &user.username, &groups, now)
            .await?;
    }
    Ok((user, groups))
}

/// Changes a user's password, role and/or groups.
pub async fn update(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    username: &str,
    patch: UserPatch,
    now: i64,
) -> Result<UserChange, ServiceError> {
    let current_groups = rt.groups.groups_of(username).await?;
    if let Some(groups) = &patch.groups {
        rt.groups.check_assignable(caller, groups).await?;
        check_direct_membership(rt, username, &current_groups, groups).await?;
    }
    // A password chosen by the caller lets them act as the user. The caller's own
    // account needs a credential proving it: a custom token's subject is not the caller.
    if patch.password.is_some() {
        rt.groups.require_can_act_as(caller, username).await?;
    }
    if let Some(role) = patch.role {
        // The right to make the change at all comes first (403 before any 409).
        rt.users.check_role_change(caller, username, role).await?;
        let current = rt.users.get(caller, username).await?;
        if role != current.role {
            let approvers = rt.groups.approvers();
            // Leaving a role that approves operations: never below its quorum.
            if approvers.names_role(current.role) {
                approvers
                    .check_not_below_quorum(
                        &ApproverRule::Role(current.role.name().to_string()),
                        &[username.to_string()],
                    )
                    .await?;
            }
            if approvers.names_role(role) {
                if patch.password.is_some() || patch.groups.is_some() {
                    return Err(ServiceError::Invalid(format!(
                        "role {role} approves operations: change it on its own, without password or groups"
                    )));
                }
                let op = Operation::GrantRole {
                    username: username.to_string(),
                    role: role.name().to_string(),
                };
                return match super::approvals::submit(rt, caller, actor, op, now).await? {
                    Submitted::Pending(a) => Ok(UserChange::Pending(a)),
                    Submitted::Done(_) => {
                        let user = rt.users.get(caller, username).await?;
                        Ok(UserChange::Done(user, current_groups))
                    }
                };
            }
        }
    }
    let groups = patch.groups.clone();
    let (user, revoked) = rt.users.update(caller, username, patch, now).await?;
    // Their access tokens carry the old role or predate the new password: end them with
    // their sessions.
    rt.tokens.sessions_ended(&revoked, now);
    if let Some(groups) = groups {
        rt.groups
            .set_groups_of(caller, &user.username, &groups, now)
            .await?;
    }
    let groups = rt.groups.groups_of(&user.username).await?;
    Ok(UserChange::Done(user, groups))
}

/// Deletes a user, revokes their sessions and deletes the API keys they own. An approver
/// is never deleted below a set's quorum, and a member of an established approver group
/// must first leave it (through approvals).
pub async fn delete(
    rt: &Runtime,
    caller: &Principal,
    username: &str,
    now: i64,
) -> Result<(), ServiceError> {
    // Authorize first, so callers without the right learn nothing about approvers.
    let current = rt.users.get(caller, username).await?;
    rt.users
        .check_role_change(caller, username, current.role)
        .await?;
    let approvers = rt.groups.approvers();
    for set in approvers.sets_of(username).await? {
        if let ApproverRule::Group(g) = &set {
            if approvers.established(&set).await? {
                return Err(ServiceError::Forbidden(format!(
                    "{username:?} approves operations as a member of group {g:?}: remove them with DELETE /api/v1/groups/{g}/members/{username} (it needs approvals) first"
                )));
            }
        }
        approvers
            .check_not_below_quorum(&set, &[username.to_string()])
            .await?;
    }
    let revoked = rt.users.delete(caller, username, now).await?;
    rt.tokens.sessions_ended(&revoked, now);
    // The user's API keys are gone from the store; drop them from the in-memory index
    // before answering, so they stop authenticating at once.
    if let Err(e) = rt.api_keys.reload().await {
        tracing::warn!(error = %e, "API key index reload after deleting a user failed; the change feed retries");
    }
    Ok(())
}

/// Every user with their groups.
pub async fn list(
    rt: &Runtime,
    caller: &Principal,
) -> Result<Vec<(User, Vec<String>)>, ServiceError> {
    let users = rt.users.list(caller).await?;
    let mut groups: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (principal, group) in rt.groups.all_memberships().await? {
        groups.entry(principal).or_default().push(group);
    }
    Ok(users
        .into_iter()
        .map(|u| {
            let g = groups.remove(&u.username).unwrap_or_default();
            (u, g)
        })
        .collect())
}

/// One user with their groups.
pub async fn get(
    rt: &Runtime,
    caller: &Principal,
    username: &str,
) -> Result<(User, Vec<String>), ServiceError> {
    let user = rt.users.get(caller, username).await?;
    let groups = rt.groups.groups_of(&user.username).await?;
    Ok((user, groups))
}

/// Clears the login lockouts of `username` (every source and per source address), so
/// its owner can log in at once (`docs/users.md`, "Login throttling"). Whether a lockout
/// was in force.
pub async fn clear_lockout(
    rt: &Runtime,
    caller: &Principal,
    username: &str,
) -> Result<bool, ServiceError> {
    rt.users.clear_lockout(caller, username).await
}
