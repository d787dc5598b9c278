//! M-of-N approvals for destructive or identity-changing operations (`docs/lifecycle.md`): rotate, rotate-now, regenerate, destroy, change-backend,
//! create-super-admin-key, delete-oauth-server.
//!
//! This module holds what an approval *is*: the operations, the signed bytes of requests
//! and votes, their verification and how callers see them. The workflow (submit, vote,
//! execute) is `app::approvals`: it runs an operation at once when
//! `approvals.<op>.required` is 0, and otherwise records a pending request signed in
//! hardware by the `audit` ring. Eligible people other than the requester approve or
//! reject it, each with a credential proving them; the approval that reaches `required`
//! moves the request to `executing` in the same store transaction that records it
//! (compare-and-set), so concurrent approvers run the operation exactly once. Before it
//! runs, every signature on the request is checked again, so a request or vote edited in
//! the database fails instead of running.

use crate::approval_rules::{ApprovalOperation, ApproverRule};
use crate::keys::KeyVersion;
use crate::services::audit::AuditService;
use crate::services::authz::Permission;
use crate::services::{AuthMethod, Principal, ServiceError};
use crate::store::approvals::{ApprovalRow, VoteRow};
use crate::store::audit::{hex, AuditActor, NewAuditEntry};
use crate::store::{Store, StoreError};
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
    /// Delete an external OAuth server.
    DeleteOauthServer { oauth_id: String },
    /// Add `principal` to approver group `group` (`add`), or take them out.
    GroupMember {
        group: String,
        principal: String,
        add: bool,
    },
    /// Give user `username` role `role`, which approves gated operations.
    GrantRole { username: String, role: String },
    /// A super-admin API key for `owner`. Approval makes the request redeemable: the
    /// requester collects the key (and its one-time secret) with
    /// `POST /api/v1/approvals/{id}/redeem`, once; nothing secret is stored meanwhile.
    CreateSuperAdminKey {
        name: String,
        description: Option<String>,
        owner: String,
        expires_at: Option<i64>,
    },
    /// Remove hardware objects of `backend` that no key version names (reconciliation,
    /// docs/operations.md). Destructive like a destroy, so gated by `approvals.destroy`.
    DestroyOrphans {
        backend: String,
        objects: Vec<String>,
    },
}

impl Operation {
    /// The operation as `[approvals.<name>]` names it.
    pub fn kind(&self) -> ApprovalOperation {
        match self {
            Operation::Rotate {
                backend: Some(_), ..
            } => ApprovalOperation::ChangeBackend,
            Operation::Rotate {
                immediate: true, ..
            } => ApprovalOperation::RotateNow,
            Operation::Rotate { .. } => ApprovalOperation::Rotate,
            Operation::Regenerate { .. } => ApprovalOperation::Regenerate,
            Operation::Destroy { .. } => ApprovalOperation::Destroy,
            Operation::DeleteOauthServer { .. } => ApprovalOperation::DeleteOauthServer,
            Operation::GroupMember { .. } | Operation::GrantRole { .. } => {
                ApprovalOperation::ChangeApprovers
            }
            Operation::CreateSuperAdminKey { .. } => ApprovalOperation::CreateSuperAdminKey,
            // Removing orphaned hardware objects is destructive like a destroy.
            Operation::DestroyOrphans { .. } => ApprovalOperation::Destroy,
        }
    }

    /// The operation's name in `docs/lifecycle.md` and in `[approvals.<name>]`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// For a change of who can approve: the approver set it changes.
    pub fn approver_set(&self) -> Option<ApproverRule> {
        match self {
            Operation::GroupMember { group, .. } => Some(ApproverRule::Group(group.clone())),
            Operation::GrantRole { role, .. } => Some(ApproverRule::Role(role.clone())),
            _ => None,
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
            Operation::GroupMember {
                group, principal, ..
            } => format!("group:{group}/member:{principal}"),
            Operation::GrantRole { username, .. } => format!("user:{username}"),
            Operation::CreateSuperAdminKey { owner, .. } => format!("api-key-owner:{owner}"),
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
    /// The credential the requester used: `<kind>:<id>` (session, api-key, idp,
    /// key-file, cli).
    pub requested_with: String,
    pub requested_at: String,
    pub expires_at: String,
    /// Who may approve: `role:<name>` or `group:<name>` rules.
    pub approvers: Vec<String>,
    /// What happened when it ran, failed, or was rejected.
    pub outcome: Option<String>,
    /// For an executed `create-super-admin-key`: when the requester collected the key
    /// (RFC 3339), null until then.
    pub redeemed_at: Option<String>,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
}

/// One decision on a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Vote {
    pub principal: String,
    pub at: String,
    /// The credential the vote was cast with: `<kind>:<id>` (session, api-key, idp,
    /// key-file).
    pub credential: String,
}

/// The audit actor for a caller. `request_id` comes from the HTTP layer.
pub fn actor_of(p: &Principal, request_id: Option<String>) -> AuditActor {
    let method = match &p.method {
        AuthMethod::ApiKey { id, .. } => format!("api-key:{id}"),
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

/// The canonical bytes of a request: what the audit ring signs. The requester's
/// credential is part of them when recorded (requests older than it are signed without).
pub fn request_bytes(a: &ApprovalRow) -> Vec<u8> {
    let mut v = json!({
        "approval_id": a.id,
        "operation": a.operation,
        "target": a.target,
        "params": a.params,
        "requested_by": a.requested_by,
        "requested_at": a.requested_at,
        "expires_at": a.expires_at,
        "required": a.required,
        "approvers": a.approvers,
    });
    if !a.requested_with.is_empty() {
        v["requested_with"] = json!(a.requested_with);
    }
    v.to_string().into_bytes()
}

/// The canonical bytes of a vote; they bind the request through its digest.
/// The credential the vote was cast with is part of them when recorded.
pub fn vote_bytes(a: &ApprovalRow, v: &VoteRow) -> Vec<u8> {
    let mut j = json!({
        "approval_id": v.approval_id,
        "request_digest": hex(&AuditService::digest(&request_bytes(a))),
        "principal": v.principal,
        "decision": v.decision,
        "at": v.at,
    });
    if !v.credential.is_empty() {
        j["credential"] = json!(v.credential);
    }
    j.to_string().into_bytes()
}

/// Every signature problem on request `row` and its votes (empty when intact).
pub async fn verify_request(
    store: &Store,
    audit: &AuditService,
    row: &ApprovalRow,
) -> Result<Vec<String>, ServiceError> {
    let mut problems = Vec::new();
    if !audit.verify(&row.sig_kid, &request_bytes(row), &row.request_sig) {
        problems.push(format!(
            "approval {}: the request's signature does not verify",
            row.id
        ));
    }
    for v in store.votes(&row.id).await? {
        if v.principal == row.requested_by && v.decision == "approve" {
            problems.push(format!(
                "approval {}: the requester's own approval is recorded",
                row.id
            ));
        }
        if !audit.verify(&v.sig_kid, &vote_bytes(row, &v), &v.signature) {
            problems.push(format!(
                "approval {}: the {} by {} does not verify",
                row.id, v.decision, v.principal
            ));
        }
    }
    Ok(problems)
}

/// Marks every pending request past its expiry as expired (one audit entry each).
pub async fn expire_due(store: &Store, now: i64) -> Result<Vec<String>, ServiceError> {
    let ids = store
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

/// How long a request may stay `executing` before it counts as interrupted: far longer
/// than any operation takes (each hardware call has its own timeout), so a request still
/// running in another replica is never touched.
pub const INTERRUPTED_AFTER_SECS: i64 = 900;

/// Marks requests stuck in `executing` for longer than [`INTERRUPTED_AFTER_SECS`] (the
/// server running them was killed) as `failed`, one `approval.interrupted:<operation>`
/// audit entry each. They are never run again: whether a step of theirs reached the
/// hardware before the kill is not known, and a second rotation or regeneration is not
/// harmless (docs/lifecycle.md, "Crashes").
pub async fn fail_interrupted(store: &Store, now: i64) -> Result<Vec<String>, ServiceError> {
    let failed = store
        .fail_interrupted_approvals(
            now.saturating_sub(INTERRUPTED_AFTER_SECS),
            now,
            "interrupted: keygate stopped while the approved operation ran; the audit log \
             shows whether it took effect; if it did not, ask again",
            |id, op| NewAuditEntry {
                time: now,
                actor: AuditActor::scheduler(),
                action: format!("approval.interrupted:{op}"),
                target: format!("approval:{id}"),
                outcome: "failed".into(),
            },
        )
        .await?;
    for (id, op) in &failed {
        tracing::warn!(approval = %id, operation = %op,
            "an approved request was still executing long after it started (keygate stopped while it ran); marked failed");
    }
    Ok(failed.into_iter().map(|(id, _)| id).collect())
}

/// Request `id` as callers see it.
pub async fn get(store: &Store, caller: &Principal, id: &str) -> Result<Approval, ServiceError> {
    require_view(caller)?;
    match store.get_approval(id).await {
        Ok(r) => view(store, r).await,
        Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!(
            "no approval request {id:?}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The most recent requests, newest first.
pub async fn list(store: &Store, caller: &Principal) -> Result<Vec<Approval>, ServiceError> {
    require_view(caller)?;
    let mut out = Vec::new();
    for r in store.list_approvals(500).await? {
        out.push(view(store, r).await?);
    }
    Ok(out)
}

fn require_view(caller: &Principal) -> Result<(), ServiceError> {
    crate::services::authz::require(caller.role, Permission::KeysRead, "view approval requests")
}

/// Request `r` as callers see it, with its votes.
pub async fn view(store: &Store, r: ApprovalRow) -> Result<Approval, ServiceError> {
    let votes = store.votes(&r.id).await?;
    let pick = |d: &str| -> Vec<Vote> {
        votes
            .iter()
            .filter(|v| v.decision == d)
            .map(|v| Vote {
                principal: v.principal.clone(),
                at: crate::clock::rfc3339(v.at),
                credential: v.credential.clone(),
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
        requested_with: r.requested_with.clone(),
        requested_at: crate::clock::rfc3339(r.requested_at),
        expires_at: crate::clock::rfc3339(r.expires_at),
        approvers: r.approvers.split(',').map(str::to_string).collect(),
        outcome: r.outcome.clone(),
        redeemed_at: store
            .approval_redeemed_at(&r.id)
            .await?
            .map(crate::clock::rfc3339),
        params: serde_json::from_str(&r.params).unwrap_or(serde_json::Value::Null),
    })
}
