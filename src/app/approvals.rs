//! The approval workflow (docs/lifecycle.md): submit an operation, vote on it, run it.
//!
//! - [`submit`] checks the requester may ask for the operation at all, then runs it at
//!   once when its rule requires no approvals, or records a pending request signed by the
//!   `audit` ring. A change of who can approve ([`Operation::GroupMember`],
//!   [`Operation::GrantRole`]) needs approvals only once the set it changes is
//!   established ([`crate::services::approvers`]): before that, enrolment is open.
//! - [`decide`] records a vote. It counts only when cast by an eligible person other than
//!   the requester, with a credential that proves that person
//!   ([`Principal::proves_person`]); the vote records the credential and is signed.
//! - The vote that reaches `required` runs the operation, after every signature is checked
//!   again and the requester's right is checked again *as it is now*: a deleted or demoted
//!   requester makes the request `failed`, with the reason recorded.

use crate::approval_rules::{self, ApproverRule};
use crate::keys::{Purpose, API_KEY_MAC_RING};
use crate::runtime::Runtime;
use crate::services::api_keys::ApiKey;
use crate::services::approvals::{
    request_bytes, verify_request, view, vote_bytes, Approval, Done, Operation, Submitted,
};
use crate::services::authz::{self, Permission, Role, ROOT_PRINCIPAL};
use crate::services::groups::RingPermission;
use crate::services::{AuthMethod, Principal, Proof, ServiceError};
use crate::store::approvals::{ApprovalRow, VoteResult, VoteRow};
use crate::store::audit::{AuditActor, NewAuditEntry};
use crate::store::StoreError;
use secrecy::SecretString;

/// Checks the caller may ask for `op` at all, and that `op` is possible now (so a
/// request that could never run is refused at once, with nothing recorded). Run again,
/// with the requester as they are then, before an approved request executes.
async fn check_request(
    rt: &Runtime,
    caller: &Principal,
    op: &Operation,
) -> Result<(), ServiceError> {
    match op {
        Operation::Rotate { ring, backend, .. } => {
            // Moving a ring to another backend is an administrator's decision.
            let need = if backend.is_some() {
                RingPermission::Admin
            } else {
                RingPermission::Rotate
            };
            rt.groups.require_all(caller, &[(ring, need)]).await?;
            let v = rt.keys.active(ring)?;
            if v.purpose != Purpose::Jwt {
                return Err(ServiceError::Invalid(format!(
                    "ring {ring:?} is a {} ring; only JWT-signing rings rotate through this workflow",
                    v.purpose.name()
                )));
            }
            if let Some(b) = backend {
                rt.keys.backend(b)?;
                if *b == v.backend {
                    return Err(ServiceError::Invalid(format!(
                        "ring {ring:?} is already on backend {b:?}"
                    )));
                }
            }
            Ok(())
        }
        Operation::Regenerate { ring, force } => {
            // Regenerating revokes everything the ring signed: more than a rotation.
            rt.groups
                .require_all(caller, &[(ring, RingPermission::Admin)])
                .await?;
            let v = rt.keys.active(ring)?;
            match v.purpose {
                Purpose::Tls | Purpose::Audit => Err(ServiceError::Invalid(format!(
                    "ring {ring:?} is a {} ring; it cannot be regenerated",
                    v.purpose.name()
                ))),
                Purpose::Mac if !force => Err(ServiceError::Invalid(format!(
                    "regenerating {ring:?} invalidates every API key and refresh token it protects{}; repeat with \"force\": true to request it anyway",
                    if ring == API_KEY_MAC_RING { ", including the one you are using" } else { "" }
                ))),
                _ => Ok(()),
            }
        }
        Operation::Destroy { ring, version } => {
            authz::require(caller.role, Permission::KeysDestroy, "destroy keys")?;
            rt.keys.check_destroyable(ring, *version)?;
            Ok(())
        }
        Operation::DeleteOauthServer { oauth_id } => rt.oauth.check_delete(caller, oauth_id).await,
        Operation::GroupMember {
            group,
            principal,
            add,
        } => {
            rt.groups
                .check_member_change(caller, group, principal, *add)
                .await
        }
        Operation::GrantRole { username, role } => {
            let role: Role = role.parse().map_err(ServiceError::Invalid)?;
            rt.users.check_role_change(caller, username, role).await
        }
        Operation::CreateSuperAdminKey { owner, .. } => {
            super::api_keys::check_create(rt, caller, owner, Role::SuperAdmin).await
        }
        Operation::DestroyOrphans { backend, objects } => {
            authz::require(caller.role, Permission::KeysDestroy, "destroy keys")?;
            if objects.is_empty() {
                return Err(ServiceError::Invalid("no objects to remove".into()));
            }
            let orphans = rt.keys.orphans().await?;
            for id in objects {
                if !orphans
                    .iter()
                    .any(|o| &o.backend == backend && &o.object.id == id)
                {
                    return Err(ServiceError::Invalid(format!(
                        "object {id} on backend {backend:?} is not an orphan (a key version names it, or it is gone)"
                    )));
                }
            }
            Ok(())
        }
    }
}

/// The credential-independent part of a request's rule: who approves and how many.
async fn rule_for(
    rt: &Runtime,
    op: &Operation,
) -> Result<(u32, Vec<ApproverRule>, i64), ServiceError> {
    let rule = rt.config.approvals.rule(op.kind());
    if let Some(set) = op.approver_set() {
        // A change of who can approve needs the set's own quorum, once it has one.
        let approvers = rt.groups.approvers();
        let required = if approvers.established(&set).await? {
            approvers.required(&set).max(rule.required)
        } else {
            0
        };
        return Ok((required, vec![set], rule.ttl_secs));
    }
    // api-key-mac: regenerating it needs `force` and the approvals; the configured
    // count applies, but never less than one other principal.
    let required = if matches!(op, Operation::Regenerate { ring, .. } if ring == API_KEY_MAC_RING) {
        rule.required.max(1)
    } else {
        rule.required
    };
    Ok((required, rule.approvers, rule.ttl_secs))
}

/// Asks for `op` as `caller`: runs it at once when no approvals are required, else
/// records a pending request signed by the audit ring.
pub async fn submit(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    op: Operation,
    now: i64,
) -> Result<Submitted, ServiceError> {
    // Requests are made in one's own name: a custom token's subject was chosen by its
    // minter.
    if !caller.proves_identity() {
        return Err(ServiceError::Forbidden(
            "a custom token proves no identity; request with your own credential".into(),
        ));
    }
    check_request(rt, caller, &op).await?;
    let (required, approvers, ttl) = rule_for(rt, &op).await?;
    if required == 0 {
        return Ok(Submitted::Done(execute(rt, op, actor, now).await?));
    }
    let params = serde_json::to_string(&op)
        .map_err(|e| ServiceError::Internal(format!("approval params: {e}")))?;
    let mut row = ApprovalRow {
        id: uuid::Uuid::new_v4().to_string(),
        operation: op.name().to_string(),
        target: op.target(),
        params,
        requested_by: caller.name.clone(),
        requested_at: now,
        expires_at: now.saturating_add(ttl),
        required: i64::from(required),
        approvers: approval_rules::join(&approvers),
        state: "pending".into(),
        outcome: None,
        decided_at: None,
        sig_kid: String::new(),
        request_sig: Vec::new(),
        requested_with: caller.proof().credential(),
    };
    let (kid, sig) = rt.audit.sign(request_bytes(&row)).await?;
    row.sig_kid = kid;
    row.request_sig = sig;
    let audit = NewAuditEntry {
        time: now,
        actor: actor.clone(),
        action: format!("approval.request:{}", row.operation),
        target: row.target.clone(),
        outcome: format!("pending {} (needs {required})", row.id),
    };
    rt.store.insert_approval(&row, &audit).await?;
    tracing::info!(approval = %row.id, operation = %row.operation, target = %row.target,
        by = %caller.name, required, "approval requested");
    Ok(Submitted::Pending(Box::new(view(&rt.store, row).await?)))
}

/// Approves or rejects request `id` as `who`.
///
/// Refusals, each with nothing changed: unknown id 404; the requester approving their
/// own request, a principal no approver rule names, or a credential that does not prove
/// the person (one somebody else created for them, a custom token, a token minted from
/// a key), 403; a second decision by the same principal, or a request no longer pending
/// (executed, rejected, failed, or past its expiry), 409. The requester may reject
/// (withdraw) their own request.
pub async fn decide(
    rt: &Runtime,
    who: &Principal,
    actor: &AuditActor,
    id: &str,
    approve: bool,
    now: i64,
) -> Result<Approval, ServiceError> {
    let row = match rt.store.get_approval(id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => {
            return Err(ServiceError::NotFound(format!(
                "no approval request {id:?}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let own = row.requested_by == who.name;
    if own && !who.proves_identity() {
        return Err(ServiceError::Forbidden(
            "a custom token proves no identity; decide with your own credential".into(),
        ));
    }
    if approve && own {
        return Err(ServiceError::Forbidden(
            "the requester cannot approve their own request".into(),
        ));
    }
    if !own {
        let rules = approval_rules::parse_list(&row.approvers);
        if !rt.groups.approvers().eligible(who, &rules).await? {
            return Err(ServiceError::Forbidden(format!(
                "only {} may decide on this request",
                row.approvers
            )));
        }
        if !who.proves_person() {
            return Err(ServiceError::Forbidden(format!(
                "a vote needs a credential that proves you: your own login session, your own IdP token, or a key you created for yourself (this is {})",
                describe(&who.proof())
            )));
        }
    }
    if row.state == "pending" && row.expires_at <= now {
        expire_due(rt, now).await?;
        return Err(ServiceError::Conflict(format!(
            "approval request {id} expired at {}",
            crate::clock::rfc3339(row.expires_at)
        )));
    }
    if row.state != "pending" {
        return Err(ServiceError::Conflict(format!(
            "approval request {id} is {}",
            row.state
        )));
    }
    let mut vote = VoteRow {
        approval_id: row.id.clone(),
        principal: who.name.clone(),
        decision: if approve { "approve" } else { "reject" }.into(),
        at: now,
        sig_kid: String::new(),
        signature: Vec::new(),
        credential: who.proof().credential(),
    };
    let (kid, sig) = rt.audit.sign(vote_bytes(&row, &vote)).await?;
    vote.sig_kid = kid;
    vote.signature = sig;
    let audit = NewAuditEntry {
        time: now,
        actor: actor.clone(),
        action: format!("approval.{}:{}", vote.decision, row.operation),
        target: row.target.clone(),
        outcome: format!("request {}", row.id),
    };
    let result = rt.store.cast_vote(&vote, &audit).await?;
    if result == VoteResult::Execute {
        run_approved(rt, &row, now).await;
    }
    let fresh = rt.store.get_approval(id).await?;
    view(&rt.store, fresh).await
}

fn describe(p: &Proof) -> String {
    match p {
        Proof::DelegatedApiKey { created_by, .. } => format!(
            "an API key {} created for you",
            created_by.as_deref().unwrap_or("somebody else")
        ),
        Proof::DelegatedKeyFile { created_by, .. } => {
            format!("a key file {created_by} created")
        }
        Proof::Derived { .. } => "a token minted from a key".into(),
        Proof::Minted { .. } => "a custom token".into(),
        Proof::Cli => "the CLI".into(),
        other => other.credential(),
    }
}

/// The requester as they are now, from the credential they requested with: a deleted
/// account or key, a changed key file, an IdP that is gone, refuse; otherwise the
/// principal carries the role it holds *now*.
async fn requester_now(rt: &Runtime, row: &ApprovalRow) -> Result<Principal, ServiceError> {
    let name = row.requested_by.clone();
    let gone =
        |what: String| ServiceError::Forbidden(format!("the requester's {what} no longer exists"));
    let (kind, id) = row
        .requested_with
        .split_once(':')
        .unwrap_or((row.requested_with.as_str(), ""));
    let by_account = |rt: &Runtime| -> Result<Role, ServiceError> {
        rt.users
            .role_of(&name)
            .ok_or_else(|| gone(format!("account {name:?}")))
    };
    let (role, method) = match kind {
        "cli" => (Role::SuperAdmin, AuthMethod::Cli),
        "api-key" => {
            let key = rt
                .api_keys
                .live_key(id)
                .filter(|k| k.owner == name)
                .ok_or_else(|| gone(format!("API key {id}")))?;
            // The key acts with its own role, never more than its owner holds now.
            if name != ROOT_PRINCIPAL {
                let owner = by_account(rt)?;
                if !owner.covers(key.role) {
                    return Err(ServiceError::Forbidden(format!(
                        "the requester {name:?} is no longer {} (now {owner})",
                        key.role
                    )));
                }
            }
            (
                key.role,
                AuthMethod::ApiKey {
                    id: key.id.clone(),
                    created_by: key.created_by.clone(),
                },
            )
        }
        "key-file" => {
            let f = rt
                .store
                .get_key_file(id)
                .await
                .map_err(|_| gone(format!("key file {id}")))?;
            let role: Role = f.role.parse().map_err(ServiceError::Internal)?;
            (
                role,
                AuthMethod::KeyFile {
                    access_id: f.access_id,
                    binding: String::new(),
                    created_by: f.created_by,
                },
            )
        }
        "idp" => {
            let server = rt
                .store
                .get_oauth_server(id)
                .await
                .map_err(|_| gone(format!("OAuth server {id}")))?;
            let roles: Vec<Role> = server
                .role_mapping
                .values()
                .filter_map(|r| Role::lookup(r))
                .collect();
            let role = Role::union(&roles).ok_or_else(|| gone("IdP role mapping".into()))?;
            (
                role,
                AuthMethod::IdpToken {
                    oauth_id: id.to_string(),
                    jti: None,
                    exp: i64::MAX,
                    binding: String::new(),
                },
            )
        }
        // A login session, a token minted from a key, or a request older than the
        // record of its credential: the account as it is now.
        _ => (
            by_account(rt)?,
            AuthMethod::AccessToken {
                jti: String::new(),
                sid: None,
                exp: i64::MAX,
                key_binding: None,
                minted: false,
            },
        ),
    };
    Ok(Principal { name, role, method })
}

/// Runs a request that just reached its approvals, after checking every signature on
/// it and the requester's right as it is now; records `executed` or `failed` with the
/// outcome.
async fn run_approved(rt: &Runtime, row: &ApprovalRow, now: i64) {
    let executor = AuditActor {
        principal: row.requested_by.clone(),
        method: format!("approval:{}", row.id),
        client_cert_serial: None,
        request_id: None,
    };
    let result = async {
        // Decide on the store's current state, not on what this replica has applied yet.
        crate::cluster::applier::catch_up(rt, now).await?;
        let problems = verify_request(&rt.store, &rt.audit, row).await?;
        if let Some(p) = problems.first() {
            return Err(ServiceError::Conflict(format!(
                "the stored request does not match its signatures: {p}"
            )));
        }
        let op: Operation = serde_json::from_str(&row.params)
            .map_err(|e| ServiceError::Internal(format!("approval params: {e}")))?;
        let requester = requester_now(rt, row).await?;
        check_request(rt, &requester, &op).await.map_err(|e| {
            ServiceError::Forbidden(format!("the requester may no longer ask for this: {e}"))
        })?;
        execute(rt, op, &executor, now).await
    }
    .await;
    let (state, outcome) = match result {
        Ok(Done::Version(v)) => (
            "executed",
            format!("{} v{} is {} (kid {})", v.ring, v.version, v.state, v.kid),
        ),
        Ok(Done::Destroyed) => ("executed", "destroyed in hardware".to_string()),
        Ok(Done::Other(s)) => ("executed", s),
        Err(e) => ("failed", e.to_string()),
    };
    let audit = NewAuditEntry {
        time: now,
        actor: executor.clone(),
        action: format!("approval.{state}:{}", row.operation),
        target: row.target.clone(),
        outcome: outcome.clone(),
    };
    match rt
        .store
        .finish_approval(&row.id, state, &outcome, now, &audit)
        .await
    {
        Ok(true) => {
            tracing::info!(approval = %row.id, state, outcome = %outcome, "approved operation finished")
        }
        Ok(false) => {
            tracing::error!(approval = %row.id, "approval left the executing state while it ran")
        }
        Err(e) => tracing::error!(approval = %row.id, error = %e, outcome = %outcome,
            "could not record how an approved operation ended; it stays `executing`"),
    }
}

/// Runs `op` now.
async fn execute(
    rt: &Runtime,
    op: Operation,
    actor: &AuditActor,
    now: i64,
) -> Result<Done, ServiceError> {
    match op {
        Operation::Rotate {
            ring,
            immediate,
            backend,
        } => {
            let v = rt
                .keys
                .rotate_as(&ring, immediate, backend.as_deref(), actor, now)
                .await?;
            rt.keys.advance(super::keys::rotation_times(rt), now).await?;
            Ok(Done::Version(
                rt.keys.version(&v.ring, v.version).unwrap_or(v),
            ))
        }
        Operation::Regenerate { ring, .. } => {
            let v = rt.keys.regenerate(&ring, actor, now).await?;
            if ring == API_KEY_MAC_RING {
                // Remembered MACs were made by the old key; none may authenticate again.
                rt.api_keys.forget_verified();
            }
            Ok(Done::Version(v))
        }
        Operation::Destroy { ring, version } => {
            rt.keys.destroy_version(&ring, version, actor, now).await?;
            Ok(Done::Destroyed)
        }
        Operation::DeleteOauthServer { oauth_id } => {
            rt.oauth
                .delete_approved(&oauth_id, &actor.principal)
                .await?;
            Ok(Done::Other(format!("deleted OAuth server {oauth_id}")))
        }
        Operation::GroupMember {
            group,
            principal,
            add,
        } => {
            rt.groups
                .apply_member_change(&group, &principal, add, &actor.principal, now)
                .await?;
            Ok(Done::Other(if add {
                format!("added {principal} to group {group}")
            } else {
                format!("removed {principal} from group {group}")
            }))
        }
        Operation::GrantRole { username, role } => {
            let role: Role = role.parse().map_err(ServiceError::Invalid)?;
            let revoked = rt
                .users
                .apply_role(&username, role, &actor.principal, now)
                .await?;
            rt.tokens.sessions_ended(&revoked, now);
            Ok(Done::Other(format!("user {username} now has role {role}")))
        }
        // Nothing is created until the requester redeems the approval ([`redeem`]), so
        // no secret waits in the store.
        Operation::CreateSuperAdminKey { owner, .. } => Ok(Done::Other(format!(
            "approved: the requester collects the super-admin key for {owner} with POST /api/v1/approvals/{{id}}/redeem, once"
        ))),
        Operation::DestroyOrphans { backend, objects } => {
            let removed = rt
                .keys
                .remove_orphans(&backend, &objects, actor, now)
                .await?;
            let list: Vec<String> = removed.iter().map(|o| o.uri.clone()).collect();
            Ok(Done::Other(format!(
                "removed {} of {} orphaned objects on backend {backend}: {}",
                removed.len(),
                objects.len(),
                list.join(", ")
            )))
        }
    }
}

/// Collects the key of an executed `create-super-admin-key` request: only its requester,
/// with a credential proving their name, once, before the request's expiry, and only if
/// they may still ask for it. Returns the key and its secret (shown this once).
pub async fn redeem(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    id: &str,
    now: i64,
) -> Result<(ApiKey, SecretString), ServiceError> {
    let row = match rt.store.get_approval(id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => {
            return Err(ServiceError::NotFound(format!(
                "no approval request {id:?}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if row.requested_by != caller.name || !caller.proves_identity() {
        return Err(ServiceError::Forbidden(
            "only the requester redeems an approval, with their own credential".into(),
        ));
    }
    let op: Operation = serde_json::from_str(&row.params)
        .map_err(|e| ServiceError::Internal(format!("approval params: {e}")))?;
    let Operation::CreateSuperAdminKey {
        name,
        description,
        owner,
        expires_at,
    } = op.clone()
    else {
        return Err(ServiceError::Conflict(format!(
            "approval request {id} is a {} request; only create-super-admin-key is redeemed",
            row.operation
        )));
    };
    if row.state != "executed" {
        return Err(ServiceError::Conflict(format!(
            "approval request {id} is {}",
            row.state
        )));
    }
    if rt.store.approval_redeemed_at(id).await?.is_some() {
        return Err(ServiceError::Conflict(format!(
            "approval request {id} was redeemed already"
        )));
    }
    if row.expires_at <= now {
        return Err(ServiceError::Conflict(format!(
            "approval request {id} expired at {}",
            crate::clock::rfc3339(row.expires_at)
        )));
    }
    let problems = verify_request(&rt.store, &rt.audit, &row).await?;
    if let Some(p) = problems.first() {
        return Err(ServiceError::Conflict(format!(
            "the stored request does not match its signatures: {p}"
        )));
    }
    check_request(rt, caller, &op).await?;
    // The redemption's compare-and-set and the key commit in one transaction: exactly
    // one of any number of racing redemptions gets a key, and none is left behind.
    let redemption = crate::services::api_keys::Redemption {
        approval_id: id.to_string(),
        requested_by: caller.name.clone(),
        audit: NewAuditEntry {
            time: now,
            actor: actor.clone(),
            action: "approval.redeem:create-super-admin-key".into(),
            target: row.target.clone(),
            outcome: String::new(),
        },
    };
    let (key, secret) = rt
        .api_keys
        .create_redeeming(
            caller,
            &caller.credential_creator(),
            crate::services::api_keys::NewApiKey {
                name,
                description,
                role: Role::SuperAdmin,
                owner: Some(owner),
                expires_at,
            },
            now,
            redemption,
        )
        .await?;
    tracing::info!(approval = %id, api_key = %key.id, by = %caller.name, "redeemed a create-super-admin-key approval");
    Ok((key, secret))
}

/// Marks every pending request past its expiry as expired (one audit entry each).
pub async fn expire_due(rt: &Runtime, now: i64) -> Result<Vec<String>, ServiceError> {
    crate::services::approvals::expire_due(&rt.store, now).await
}

/// Marks requests interrupted mid-execution as failed (see
/// [`crate::services::approvals::fail_interrupted`]).
pub async fn fail_interrupted(rt: &Runtime, now: i64) -> Result<Vec<String>, ServiceError> {
    crate::services::approvals::fail_interrupted(&rt.store, now).await
}

/// Request `id` as callers see it.
pub async fn get(rt: &Runtime, caller: &Principal, id: &str) -> Result<Approval, ServiceError> {
    crate::services::approvals::get(&rt.store, caller, id).await
}

/// The most recent requests, newest first.
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<Approval>, ServiceError> {
    crate::services::approvals::list(&rt.store, caller).await
}
