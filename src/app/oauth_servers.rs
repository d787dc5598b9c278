//! External OAuth server workflows. A new issuer or new keys let whoever holds them
//! speak for every `<oauth_id>:<sub>`: the caller must be able to act as each of them.

use crate::runtime::Runtime;
use crate::services::approvals::{Operation, Submitted};
use crate::services::oauth_servers::jwks::CacheState;
use crate::services::oauth_servers::{NewOAuthServer, OAuthServer, OAuthServerPatch};
use crate::services::{Principal, ServiceError};
use crate::store::audit::{AuditActor, NewAuditEntry};
use std::collections::HashMap;

/// Changes a registration; it applies to the next token verified.
pub async fn update(
    rt: &Runtime,
    caller: &Principal,
    oauth_id: &str,
    patch: OAuthServerPatch,
    now: i64,
) -> Result<OAuthServer, ServiceError> {
    if patch.issuer.is_some() || patch.public_key_pem.is_some() || patch.jwks_uri.is_some() {
        rt.groups
            .require_can_act_as_all_under(caller, &format!("{oauth_id}:"))
            .await?;
    }
    rt.oauth.update(caller, oauth_id, patch, now).await
}

/// Removes a registration (operation `delete-oauth-server`, approvals as configured).
pub async fn delete(
    rt: &Runtime,
    caller: &Principal,
    actor: &AuditActor,
    oauth_id: &str,
    now: i64,
) -> Result<Submitted, ServiceError> {
    let op = Operation::DeleteOauthServer {
        oauth_id: oauth_id.to_string(),
    };
    super::approvals::submit(rt, caller, actor, op, now).await
}

/// Registers an external OAuth 2.0 / OIDC server (`oauth-servers:write`, and a role
/// covering every role its mapping hands out).
pub async fn create(
    rt: &Runtime,
    caller: &Principal,
    req: NewOAuthServer,
    now: i64,
) -> Result<OAuthServer, ServiceError> {
    rt.oauth.create(caller, req, now).await
}

/// Every registration (`oauth-servers:read`).
pub async fn list(rt: &Runtime, caller: &Principal) -> Result<Vec<OAuthServer>, ServiceError> {
    rt.oauth.list(caller).await
}

/// One registration (`oauth-servers:read`).
pub async fn get(
    rt: &Runtime,
    caller: &Principal,
    oauth_id: &str,
) -> Result<OAuthServer, ServiceError> {
    rt.oauth.get(caller, oauth_id).await
}

/// The JWKS cache state of every server with a `jwks_uri`, by `oauth_id`
/// (`oauth-servers:read`). The state is this process's own cache.
pub fn jwks_states(
    rt: &Runtime,
    caller: &Principal,
) -> Result<HashMap<String, CacheState>, ServiceError> {
    rt.oauth.jwks_states(caller)
}

/// Fetches a server's JWKS now (`oauth-servers:write`), within the cache's single flight
/// and `oauth.jwks_refetch_interval`, and answers the cache state after it. The fetch
/// changes only this process's memory, so no store write records it: the use case
/// appends its own `oauth-server.fetch-jwks` audit entry, in the request's audit scope
/// (the caller as actor). The fetch's result is in the state returned, not the entry.
pub async fn refresh_jwks(
    rt: &Runtime,
    caller: &Principal,
    oauth_id: &str,
) -> Result<CacheState, ServiceError> {
    let state = rt.oauth.refresh_jwks(caller, oauth_id).await?;
    rt.audit
        .record(NewAuditEntry {
            time: crate::runtime::now(),
            actor: crate::store::audit_scope::current_actor(),
            action: "oauth-server.fetch-jwks".into(),
            target: oauth_id.to_string(),
            outcome: "ok".into(),
        })
        .await?;
    Ok(state)
}
