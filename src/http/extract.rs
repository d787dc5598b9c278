//! Extractors: who is calling, and JSON bodies with problem+json rejections.

use super::error::ApiError;
use super::AppState;
use crate::runtime::now;
use crate::services::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use serde::de::DeserializeOwned;

/// The authenticated caller. Extracting it authenticates the request and enforces the
/// `read-only` rule (safe methods only).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// The one credential a request carried.
enum Credential<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
    /// `x-oauth2-token`: an external IdP's token.
    IdpToken(&'a str),
}

fn credential(parts: &Parts) -> Result<Credential<'_>, ApiError> {
    let malformed = |m: &str| {
        ApiError::from(crate::services::ServiceError::MalformedCredentials(
            m.to_string(),
        ))
    };
    let mut api_keys = parts.headers.get_all("x-api-key").iter();
    let mut auths = parts.headers.get_all(header::AUTHORIZATION).iter();
    let mut idps = parts.headers.get_all(IDP_TOKEN_HEADER).iter();
    let (api_key, auth, idp) = (api_keys.next(), auths.next(), idps.next());
    if api_keys.next().is_some() || auths.next().is_some() || idps.next().is_some() {
        return Err(malformed("credential header repeated"));
    }
    if let Some(v) = idp {
        if api_key.is_some() || auth.is_some() {
            return Err(malformed(
                "send exactly one credential: x-api-key, Authorization or x-oauth2-token",
            ));
        }
        let v = v
            .to_str()
            .map_err(|_| malformed("x-oauth2-token is not ASCII"))?
            .trim();
        if v.is_empty() {
            return Err(ApiError::unauthenticated("x-oauth2-token is empty"));
        }
        return Ok(Credential::IdpToken(v));
    }
    match (api_key, auth) {
        (Some(_), Some(_)) => Err(malformed(
            "send exactly one credential: x-api-key, Authorization or x-oauth2-token",
        )),
        (Some(v), None) => {
            let v = v
                .to_str()
                .map_err(|_| malformed("x-api-key is not ASCII"))?;
            Ok(Credential::ApiKey(v.trim()))
        }
        (None, Some(v)) => {
            let v = v
                .to_str()
                .map_err(|_| malformed("Authorization is not ASCII"))?;
            let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(ApiError::credentials_required(
                    "only the Bearer authorization scheme is accepted",
                ));
            }
            let token = rest.trim();
            if token.is_empty() || token.contains(' ') {
                return Err(ApiError::unauthenticated(
                    "Authorization: Bearer takes exactly one token",
                ));
            }
            Ok(Credential::Bearer(token))
        }
        (None, None) => Err(ApiError::credentials_required(
            "send an API key in x-api-key or Authorization: Bearer",
        )),
    }
}

/// The header that carries an external IdP's token (`docs/oauth-servers.md`).
pub const IDP_TOKEN_HEADER: &str = "x-oauth2-token";

/// Authenticates whatever credential the request carries, per `docs/api.md` "Authentication":
/// an API key (`x-api-key`, or a `kg_` bearer); an IdP token (`x-oauth2-token`); or a
/// bearer JWT, which goes to the verifier its unverified `iss` names: keygate's own
/// access tokens, a registered OAuth server's, or else a key-file assertion (whose `iss`
/// is an accessID). The issuer only picks the verifier; each verifier checks it again.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let rt = &state.rt;
    let principal = match credential(parts)? {
        Credential::ApiKey(s) => rt.api_keys.authenticate(s, now()).await?,
        Credential::Bearer(s) if s.starts_with(crate::services::api_keys::SECRET_PREFIX) => {
            rt.api_keys.authenticate(s, now()).await?
        }
        Credential::IdpToken(s) => rt.oauth.authenticate(s, now()).await?,
        Credential::Bearer(s) => {
            match crate::services::tokens::jws::unverified_issuer(s) {
                Some(iss) if iss == rt.tokens.settings().issuer => {
                    rt.tokens.authenticate(s, now())?
                }
                Some(iss) if rt.oauth.issuer_registered(&iss) => {
                    rt.oauth.authenticate(s, now()).await?
                }
                Some(_) => rt.key_files.authenticate(s, now()).await?,
                // Not a JWT with an issuer: keygate's verifier gives the precise refusal.
                None => rt.tokens.authenticate(s, now())?,
            }
        }
    };
    // Recorded first, so a refusal below is logged with the credential that was used.
    super::audit_log::AuditSlot::set(parts, &principal);
    // The caller's own quota (`limits.per_credential`, docs/operations.md "Limits").
    rt.limits
        .check_credential(principal.quota_key().as_deref())?;
    crate::tls::client_identity::check_principal(&parts.extensions, &principal)?;
    Ok(principal)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(parts, state).await?;
        if principal.role.read_only() && !matches!(parts.method, Method::GET | Method::HEAD) {
            return Err(ApiError::forbidden("role read-only may use GET only"));
        }
        Ok(Caller(principal))
    }
}

/// The authenticated caller, without the `read-only` method rule: for the endpoints
/// `docs/roles.md` lets every principal use on its own session (`DELETE /api/v1/auth/sessions/{id}`).
/// The handler must check that the target is the caller's own.
#[derive(Debug, Clone)]
pub struct SessionCaller(pub Principal);

impl FromRequestParts<AppState> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(SessionCaller(authenticate(parts, state).await?))
    }
}

/// The caller if the request carries credentials, `None` if it carries none. Presented
/// credentials that fail are still an error. Used by the token endpoint, where only
/// `custom_token` needs a caller.
#[derive(Debug)]
pub struct MaybeCaller(pub Option<Result<Principal, ApiError>>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        if !parts.headers.contains_key("x-api-key")
            && !parts.headers.contains_key(header::AUTHORIZATION)
            && !parts.headers.contains_key(IDP_TOKEN_HEADER)
        {
            return Ok(MaybeCaller(None));
        }
        Ok(MaybeCaller(Some(authenticate(parts, state).await)))
    }
}

/// `Json<T>` whose rejections are problem+json: 413 for an oversized body, 400 for
/// everything else (wrong content type, bad syntax, wrong shape), as `docs/api.md` requires.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

/// `Path<T>` whose rejection (a segment that is not valid UTF-8, say) is problem+json.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::payload_too_large("request body exceeds the configured limit");
    }
    let detail = match &rej {
        JsonRejection::MissingJsonContentType(_) => {
            "expected Content-Type: application/json".to_string()
        }
        other => other.body_text(),
    };
    ApiError::bad_request(detail)
}
