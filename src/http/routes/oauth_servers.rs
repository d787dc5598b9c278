//! External OAuth servers (`/api/v1/oauth-servers`).

use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::oauth_servers::{NewOAuthServer, OAuthServer, OAuthServerPatch};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A registered IdP.
#[derive(Serialize, ToSchema)]
pub struct OAuthServerView {
    /// Generated UUID; principals of this IdP are `<oauth_id>:<sub>`.
    pub oauth_id: String,
    pub name: String,
    /// Compared with the token's `iss` exactly.
    pub issuer: String,
    /// Present when the server was registered with a public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
    /// Present when the server was registered with a JWKS URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The token's `aud` must contain it (unless `audience_check` is false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `false` only when the registration opted out of the audience check.
    pub audience_check: bool,
    /// The claim (or dotted path) holding the token's role values.
    pub role_claim: String,
    /// IdP value → local role.
    pub role_mapping: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<OAuthServer> for OAuthServerView {
    fn from(s: OAuthServer) -> Self {
        OAuthServerView {
            oauth_id: s.oauth_id,
            name: s.name,
            issuer: s.issuer,
            public_key_pem: s.public_key_pem,
            jwks_uri: s.jwks_uri,
            audience: s.audience,
            audience_check: s.audience_check,
            role_claim: s.role_claim,
            role_mapping: s.role_mapping,
            created_by: s.created_by,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// Registers an IdP. Give exactly one of `public_key_pem` and `jwks_uri`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOAuthServer {
    pub name: String,
    /// An absolute http(s) URL, exactly as the IdP writes it in `iss`.
    pub issuer: String,
    /// The IdP's SubjectPublicKeyInfo PEM (P-256, P-384, Ed25519 or RSA ≥ 2048 bits).
    pub public_key_pem: Option<String>,
    /// The IdP's JWKS URL (https).
    pub jwks_uri: Option<String>,
    /// Required: the value the IdP puts in `aud` of tokens meant for keygate.
    pub audience: Option<String>,
    /// Default true. `false` is an explicit opt-out of the audience check (then no
    /// `audience` is given); it is logged at registration and at every start.
    pub audience_check: Option<bool>,
    /// Default `roles`. A claim name, or a dotted path such as `realm_access.roles`.
    pub role_claim: Option<String>,
    /// IdP value → local role; every local role must exist.
    pub role_mapping: BTreeMap<String, String>,
}

/// `null` is "remove", absent is "keep".
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Changes a registration. A new `public_key_pem` replaces the `jwks_uri` and the other
/// way round; `role_mapping` replaces the whole mapping; `"audience": null` removes the
/// audience, which needs `"audience_check": false` (an explicit opt-out).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOAuthServer {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub public_key_pem: Option<String>,
    pub jwks_uri: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub audience: Option<Option<String>>,
    pub audience_check: Option<bool>,
    pub role_claim: Option<String>,
    pub role_mapping: Option<BTreeMap<String, String>>,
}

/// Registers an external OAuth 2.0 / OIDC server whose tokens keygate then accepts.
#[utoipa::path(post, path = "/api/v1/oauth-servers", tag = "oauth-servers", request_body = CreateOAuthServer,
    security(("api_key" = []), ("bearer" = []), ("idp_token" = [])),
    responses((status = 201, body = OAuthServerView),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem),
              (status = 409, description = "Name or issuer taken, or the server limit reached", body = Problem),
              (status = 413, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateOAuthServer>,
) -> Result<(StatusCode, Json<OAuthServerView>), ApiError> {
    let rt = state.rt.clone();
    let server = detached(async move {
        crate::app::oauth_servers::create(
            &rt,
            &caller,
            NewOAuthServer {
                name: req.name,
                issuer: req.issuer,
                public_key_pem: req.public_key_pem,
                jwks_uri: req.jwks_uri,
                audience: req.audience,
                audience_check: req.audience_check,
                role_claim: req.role_claim,
                role_mapping: req.role_mapping,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(server.into())))
}

/// Lists the registered OAuth servers.
#[utoipa::path(get, path = "/api/v1/oauth-servers", tag = "oauth-servers",
    security(("api_key" = []), ("bearer" = []), ("idp_token" = [])),
    responses((status = 200, body = [OAuthServerView]), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<OAuthServerView>>, ApiError> {
    let servers = crate::app::oauth_servers::list(&state.rt, &caller).await?;
    Ok(Json(
        servers.into_iter().map(OAuthServerView::from).collect(),
    ))
}

/// One registered OAuth server.
#[utoipa::path(get, path = "/api/v1/oauth-servers/{oauth_id}", tag = "oauth-servers",
    params(("oauth_id" = String, Path, description = "OAuth server id")),
    security(("api_key" = []), ("bearer" = []), ("idp_token" = [])),
    responses((status = 200, body = OAuthServerView), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(oauth_id): ApiPath<String>,
) -> Result<Json<OAuthServerView>, ApiError> {
    Ok(Json(
        crate::app::oauth_servers::get(&state.rt, &caller, &oauth_id)
            .await?
            .into(),
    ))
}

/// Changes a registration; it applies to the next token verified.
#[utoipa::path(patch, path = "/api/v1/oauth-servers/{oauth_id}", tag = "oauth-servers",
    request_body = UpdateOAuthServer,
    params(("oauth_id" = String, Path, description = "OAuth server id")),
    security(("api_key" = []), ("bearer" = []), ("idp_token" = [])),
    responses((status = 200, body = OAuthServerView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(oauth_id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateOAuthServer>,
) -> Result<Json<OAuthServerView>, ApiError> {
    let rt = state.rt.clone();
    let server = detached(async move {
        crate::app::oauth_servers::update(
            &rt,
            &caller,
            &oauth_id,
            OAuthServerPatch {
                name: req.name,
                issuer: req.issuer,
                public_key_pem: req.public_key_pem,
                jwks_uri: req.jwks_uri,
                audience: req.audience,
                audience_check: req.audience_check,
                role_claim: req.role_claim,
                role_mapping: req.role_mapping,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(Json(server.into()))
}

/// Removes a registration; the IdP's tokens stop working at once. Gated by
/// `approvals.delete-oauth-server` (default 0: at once): 202 with the pending approval
/// when approvals are needed.
#[utoipa::path(delete, path = "/api/v1/oauth-servers/{oauth_id}", tag = "oauth-servers",
    params(("oauth_id" = String, Path, description = "OAuth server id")),
    security(("api_key" = []), ("bearer" = []), ("idp_token" = [])),
    responses((status = 204, description = "Deleted"),
              (status = 202, description = "Waiting for approvals", body = crate::services::approvals::Approval),
              (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    crate::http::audit_log::RequestId(rid): crate::http::audit_log::RequestId,
    ApiPath(oauth_id): ApiPath<String>,
) -> Result<axum::response::Response, ApiError> {
    use crate::services::approvals::{self, Submitted};
    use axum::response::IntoResponse;
    let rt = state.rt.clone();
    let submitted = detached(async move {
        let actor = approvals::actor_of(&caller, rid);
        crate::app::oauth_servers::delete(&rt, &caller, &actor, &oauth_id, crate::runtime::now())
            .await
    })
    .await?;
    Ok(match submitted {
        Submitted::Pending(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
        Submitted::Done(_) => StatusCode::NO_CONTENT.into_response(),
    })
}
