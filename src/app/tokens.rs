//! Token workflows that act for an authenticated caller: minting a custom token,
//! introspection, and the caller's sessions (`docs/tokens.md`). The grants that
//! authenticate a client themselves (password, refresh token, key-file assertion) and
//! revocation by holding a token have no caller to authorize; they stay with the token
//! endpoint.

use crate::runtime::Runtime;
use crate::services::tokens::grants::{CustomRequest, GrantError};
use crate::services::tokens::{Introspection, Issued, SessionInfo};
use crate::services::{Principal, ServiceError};

/// Mints a custom token (`tokens:custom`). The subject's account role, if the subject is
/// a user, bounds what the token may carry; the token never proves the subject.
pub async fn custom(
    rt: &Runtime,
    caller: &Principal,
    req: CustomRequest,
    now: i64,
) -> Result<Issued, GrantError> {
    let subject_role = rt.users.role_of(req.subject.trim());
    rt.tokens.custom(caller, req, subject_role, now).await
}

/// RFC 7662 introspection (`tokens:introspect`): keygate's own credentials first; a
/// token keygate does not know whose issuer is a registered IdP is that IdP's
/// (`docs/oauth-servers.md`).
pub async fn introspect(
    rt: &Runtime,
    caller: &Principal,
    token: &str,
    now: i64,
) -> Result<Introspection, ServiceError> {
    let own = rt.tokens.introspect(caller, token, now).await?;
    let idp = !own.active
        && crate::services::tokens::jws::unverified_issuer(token)
            .is_some_and(|iss| rt.oauth.issuer_registered(&iss));
    if !idp {
        return Ok(own);
    }
    Ok(match rt.oauth.verify(token, now).await {
        Ok(t) => Introspection {
            active: true,
            sub: Some(t.principal.name.clone()),
            role: Some(t.principal.role.name().to_string()),
            scope: None,
            exp: Some(t.exp),
            iat: t.iat,
            iss: Some(t.iss),
            aud: t.aud,
            jti: t.jti,
            token_type: Some("idp_token".into()),
        },
        // Expired, unmapped, badly signed: not usable here, so not active.
        Err(_) => Introspection::default(),
    })
}

/// The caller's own live sessions, newest first.
pub async fn list_sessions(
    rt: &Runtime,
    caller: &Principal,
    now: i64,
) -> Result<Vec<SessionInfo>, ServiceError> {
    rt.tokens.list_sessions(caller, now).await
}

/// Ends a session: the caller's own, or one of a user the caller may manage.
pub async fn end_session(
    rt: &Runtime,
    caller: &Principal,
    id: &str,
    now: i64,
) -> Result<(), ServiceError> {
    rt.tokens.end_session(caller, id, now).await
}

/// The live sessions of the users the caller manages (`users:write`), by user name.
pub async fn list_managed_sessions(
    rt: &Runtime,
    caller: &Principal,
    now: i64,
) -> Result<Vec<SessionInfo>, ServiceError> {
    rt.tokens.list_managed_sessions(caller, now).await
}
