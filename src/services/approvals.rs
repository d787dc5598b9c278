//! M-of-N approvals for destructive or identity-changing operations (API.md "Key rings
//! and the signing service"): rotate, rotate-now, regenerate, destroy, change-backend,
//! create-super-admin-key, delete-oauth-server.
//!
//! [`submit`] runs an operation at once when `approvals.<op>.required` is 0, and
//! otherwise records a pending request signed in hardware by the `audit` ring. Eligible
//! principals other than the requester approve or reject it; the approval that reaches
//! `required` moves the request to `executing` in the same store transaction that records
//! it (compare-and-set), so concurrent approvers run the operation exactly once. Before
//! it runs, every signature on the request is checked again, so a request or vote edited
//! in the database fails instead of running.

use crate::config::ApprovalRule;
use crate::keys::{KeyVersion, Purpose, API_KEY_MAC_RING};
use crate::runtime::Runtime;
use crate::services::audit::AuditService;
use crate::services::authz::Permission;
use crate::services::groups::RingPermission;
use crate::services::{AuthMethod, Principal, ServiceError};
use crate::store::approvals::{ApprovalRow, VoteResult, VoteRow};
use crate::store::audit::{hex, AuditActor, NewAuditEntry};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// An operation that may need approvals, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Operation {
    /// A new version of `ring`: pending (rotate), active at once (rotate-now), or
    /// generated on another backend (change-backend).
    Rotate {
        ring: String,
        immediate: bool,
        backend: Option<String>,
    },
    /// Replace the active version at once and mark the old one compromised.
    Regenerate { ring: String, force: bool },
    /// Remove a retired or compromised version from the hardware.
    Destroy { ring: String, version: i64 },
    /// Delete an external OAuth server (the OAuth-server service calls [`submit`]).
    DeleteOauthServer { oauth_id: String },
    /// Remove hardware objects of `backend` that no key version names (reconciliation,
    /// docs/operations.md). Destructive like a destroy, so gated by `approvals.destroy`.
    DestroyOrphans {
        backend: String,
        objects: Vec<String>,
    },
}

impl Operation {
    /// The operation's name in API.md and in `[approvals.<name>]`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Rotate {
                backend: Some(_), ..
            } => "change-backend",
            Operation::Rotate {
                immediate: true, ..
            } => "rotate-now",
            Operation::Rotate { .. } => "rotate",
            Operation::Regenerate { .. } => "regenerate",
            Operation::Destroy { .. } => "destroy",
            Operation::DeleteOauthServer { .. } => "delete-oauth-server",
            Operation::DestroyOrphans { .. } => "destroy",
        }
    }

    /// What it acts on, as written in the audit log.
    pub fn target(&self) -> String {
        match self {
            Operation::Rotate { ring, .. } | Operation::Regenerate { ring, .. } => {
                format!("ring:{ring}")
            }
            Operation::Destroy { ring, version } => format!("ring:{ring}/version:{version}"),
            Operation::DeleteOauthServer { oauth_id } => format!("oauth-server:{oauth_id}"),
            Operation::DestroyOrphans { backend, objects } => {
                format!("backend:{backend}/orphans:{}", objects.join(","))
            }
        }
    }
}

/// What [`submit`] or an approval led to.
#[derive(Debug)]
pub enum Submitted {
    /// It ran at once (no approvals required).
    Done(Done),
    /// It waits for approvals.
    Pending(Box<Approval>),
}

/// The result of an operation that ran.
#[derive(Debug)]
pub enum Done {
    Version(Arc<KeyVersion>),
    Destroyed,
    /// An operation of another component (OAuth-server deletion), with its outcome.
    Other(String),
}

/// An approval request as callers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Approval {
    pub approval_id: String,
    /// rotate | rotate-now | regenerate | destroy | change-backend |
    /// create-super-admin-key | delete-oauth-server
    pub operation: String,
    pub target: String,
    /// pending | executing | executed | rejected | expired | failed
    pub state: String,
    /// Approvals needed from principals other than the requester.
    pub required: i64,
    pub approvals: Vec<Vote>,
    pub rejections: Vec<Vote>,
    pub requested_by: String,
    pub requested_at: String,
    pub expires_at: String,
    /// Who may approve: `role:<name>` or `group:<name>` rules.
    pub approvers: Vec<String>,
    /// What happened when it ran, failed, or was rejected.
    pub outcome: Option<String>,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
}

/// One decision on a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Vote {
    pub principal: String,
    pub at: String,
}

/// The audit actor for a caller. `request_id` comes from the HTTP layer.
pub fn actor_of(p: &Principal, request_id: Option<String>) -> AuditActor {
    let method = match &p.method {
        AuthMethod::ApiKey { id } => format!("api-key:{id}"),
        AuthMethod::AccessToken { minted: true, .. } => "custom-token".into(),
        AuthMethod::AccessToken { .. } => "access-token".into(),
        AuthMethod::KeyFile { .. } => "key-file".into(),
        AuthMethod::IdpToken { oauth_id, .. } => format!("idp:{oauth_id}"),
        AuthMethod::Cli => "cli".into(),
    };
    AuditActor {
        principal: p.name.clone(),
        method,
        client_cert_serial: None,
        request_id,
    }
}

/// The canonical bytes of a request: what the audit ring signs.
pub fn request_bytes(a: &ApprovalRow) -> Vec<u8> {
    json!({
        "approval_id": a.id,
        "operation": a.operation,
        "target": a.target,
        "params": a.params,
        "requested_by": a.requested_by,
        "requested_at": a.requested_at,
        "expires_at": a.expires_at,
        "required": a.required,
        "approvers": a.approvers,
    })
    .to_string()
    .into_bytes()
}

/// The canonical bytes of a vote; they bind the request through its digest.
pub fn vote_bytes(a: &ApprovalRow, v: &VoteRow) -> Vec<u8> {
    json!({
        "approval_id": v.approval_id,
        "request_digest": hex(&AuditService::digest(&request_bytes(a))),
        "principal": v.principal,
        "decision": v.decision,
        "at": v.at,
    })
    .to_string()
    .into_bytes()
}

/// Approvals count distinct principals, so only a credential that proves its name may
/// request or decide: a custom token names a subject its minter chose, and one minter
/// could otherwise vote under many names.
fn require_identity(who: &Principal) -> Result<(), ServiceError> {
    if who.proves_identity() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "a custom token proves no identity; request and approve with your own credential"
                .into(),
        ))
    }
}

/// Checks the caller may ask for `op` at all, and that `op` is possible now (so a
/// request that could never run is refused at once, with nothing recorded).
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
            crate::services::authz::require(caller.role, Permission::KeysDestroy, "destroy keys")?;
            rt.keys.check_destroyable(ring, *version)?;
            Ok(())
        }
        Operation::DeleteOauthServer { oauth_id } => rt.oauth.check_delete(caller, oauth_id).await,
        Operation::DestroyOrphans { backend, objects } => {
            crate::services::authz::require(caller.role, Permission::KeysDestroy, "destroy keys")?;
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

/// Asks for `op`: runs it at once when no approvals are required, else records a pending
/// request signed by the audit ring.
pub async fn submit(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    op: Operation,
    now: i64,
) -> Result<Submitted, ServiceError> {
    require_identity(caller)?;
    check_request(rt, caller, &op).await?;
    let rule = rt.config.approvals.rule(op.name());
    // api-key-mac: regenerating it needs `force` and the approvals; the configured
    // count applies, but never less than one other principal.
    let required = if matches!(&op, Operation::Regenerate { ring, .. } if ring == API_KEY_MAC_RING)
    {
        rule.required.max(1)
    } else {
        rule.required
    };
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
        expires_at: now.saturating_add(rule.ttl_secs),
        required: i64::from(required),
        approvers: rule.approvers.join(","),
        state: "pending".into(),
        outcome: None,
        decided_at: None,
        sig_kid: String::new(),
        request_sig: Vec::new(),
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
    Ok(Submitted::Pending(Box::new(view(rt, row).await?)))
}

/// Whether `who` satisfies one of the approver rules.
async fn eligible(rt: &Runtime, who: &Principal, rules: &str) -> Result<bool, ServiceError> {
    let mut groups: Option<Vec<String>> = None;
    for rule in rules.split(',') {
        match rule.split_once(':') {
            Some(("role", r)) if who.role.name().split('+').any(|n| n == r) => {
                return Ok(true);
            }
            Some(("group", g)) => {
                if groups.is_none() {
                    groups = Some(rt.groups.groups_of(&who.name).await?);
                }
                if groups.as_ref().is_some_and(|gs| gs.iter().any(|x| x == g)) {
                    return Ok(true);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Approves or rejects request `id` as `who`.
///
/// Refusals, each with nothing changed: unknown id 404; the requester approving their
/// own request, or a principal no approver rule names, 403; a second decision by the
/// same principal, or a request no longer pending (executed, rejected, failed, or past
/// its expiry), 409. The requester may reject (withdraw) their own request.
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
    require_identity(who)?;
    let own = row.requested_by == who.name;
    if approve && own {
        return Err(ServiceError::Forbidden(
            "the requester cannot approve their own request".into(),
        ));
    }
    if !own && !eligible(rt, who, &row.approvers).await? {
        return Err(ServiceError::Forbidden(format!(
            "only {} may decide on this request",
            row.approvers
        )));
    }
    if row.state == "pending" && row.expires_at <= now {
        expire_due(rt, now).await?;
        return Err(ServiceError::Conflict(format!(
            "approval request {id} expired at {}",
            crate::http::time_fmt::rfc3339(row.expires_at)
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
    view(rt, fresh).await
}

/// Runs a request that just reached its approvals, after checking every signature on
/// it; records `executed` or `failed` with the outcome.
async fn run_approved(rt: &Runtime, row: &ApprovalRow, now: i64) {
    let executor = AuditActor {
        principal: row.requested_by.clone(),
        method: format!("approval:{}", row.id),
        client_cert_serial: None,
        request_id: None,
    };
    let result = async {
        let problems = verify_request(rt, row).await?;
        if let Some(p) = problems.first() {
            return Err(ServiceError::Conflict(format!(
                "the stored request does not match its signatures: {p}"
            )));
        }
        let op: Operation = serde_json::from_str(&row.params)
            .map_err(|e| ServiceError::Internal(format!("approval params: {e}")))?;
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

/// Every signature problem on request `row` and its votes (empty when intact).
pub async fn verify_request(rt: &Runtime, row: &ApprovalRow) -> Result<Vec<String>, ServiceError> {
    let mut problems = Vec::new();
    if !rt
        .audit
        .verify(&row.sig_kid, &request_bytes(row), &row.request_sig)
    {
        problems.push(format!(
            "approval {}: the request's signature does not verify",
            row.id
        ));
    }
    for v in rt.store.votes(&row.id).await? {
        if v.principal == row.requested_by && v.decision == "approve" {
            problems.push(format!(
                "approval {}: the requester's own approval is recorded",
                row.id
            ));
        }
        if !rt
            .audit
            .verify(&v.sig_kid, &vote_bytes(row, &v), &v.signature)
        {
            problems.push(format!(
                "approval {}: the {} by {} does not verify",
                row.id, v.decision, v.principal
            ));
        }
    }
    Ok(problems)
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
            rt.keys.advance(rt.rotation_times(), now).await?;
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

/// Marks every pending request past its expiry as expired (one audit entry each).
pub async fn expire_due(rt: &Runtime, now: i64) -> Result<Vec<String>, ServiceError> {
    let ids = rt
        .store
        .expire_approvals(now, |id| NewAuditEntry {
            time: now,
            actor: AuditActor::scheduler(),
            action: "approval.expired".into(),
            target: format!("approval:{id}"),
            outcome: "expired".into(),
        })
        .await?;
    for id in &ids {
        tracing::info!(approval = %id, "approval request expired");
    }
    Ok(ids)
}

/// Request `id` as callers see it.
pub async fn get(rt: &Runtime, caller: &Principal, id: &str) -> Result<Approval, ServiceError> {
    require_view(caller)?;
    match rt.store.get_approval(id).await {
        Ok(r) => view(rt, r).await,
        Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!(
            "no approval request {id:?}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The most recent requests, newest first.
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<Approval>, ServiceError> {
    require_view(caller)?;
    let mut out = Vec::new();
    for r in rt.store.list_approvals(500).await? {
        out.push(view(rt, r).await?);
    }
    Ok(out)
}

fn require_view(caller: &Principal) -> Result<(), ServiceError> {
    crate::services::authz::require(caller.role, Permission::KeysRead, "view approval requests")
}

async fn view(rt: &Runtime, r: ApprovalRow) -> Result<Approval, ServiceError> {
    let votes = rt.store.votes(&r.id).await?;
    let pick = |d: &str| -> Vec<Vote> {
        votes
            .iter()
            .filter(|v| v.decision == d)
            .map(|v| Vote {
                principal: v.principal.clone(),
                at: crate::http::time_fmt::rfc3339(v.at),
            })
            .collect()
    };
    Ok(Approval {
        approval_id: r.id.clone(),
        operation: r.operation.clone(),
        target: r.target.clone(),
        state: r.state.clone(),
        required: r.required,
        approvals: pick("approve"),
        rejections: pick("reject"),
        requested_by: r.requested_by.clone(),
        requested_at: crate::http::time_fmt::rfc3339(r.requested_at),
        expires_at: crate::http::time_fmt::rfc3339(r.expires_at),
        approvers: r.approvers.split(',').map(str::to_string).collect(),
        outcome: r.outcome.clone(),
        params: serde_json::from_str(&r.params).unwrap_or(serde_json::Value::Null),
    })
}

/// The effective approval rule of `op` (for docs and the CLI).
pub fn rule(rt: &Runtime, op: &str) -> ApprovalRule {
    rt.config.approvals.rule(op)
}
