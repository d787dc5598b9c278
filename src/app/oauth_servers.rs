//! External OAuth server workflows. A new issuer or new keys let whoever holds them
//! speak for every `<oauth_id>:<sub>`: the caller must be able to act as each of them.

use crate::runtime::Runtime;
use crate::services::approvals::{Operation, Submitted};
use crate::services::oauth_servers::{NewOAuthServer, OAuthServer, OAuthServerPatch};
use crate::services::{Principal, ServiceError};
use crate::store::audit::AuditActor;

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
