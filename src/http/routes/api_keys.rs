//! API keys (`/api/v1/api-keys`).

use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::{parse_rfc3339, rfc3339};
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::api_keys::{ApiKey, ApiKeyPatch, NewApiKey};
use crate::services::authz::Role;
use axum::extract::State;
use axum::http::header::{HeaderName, CACHE_CONTROL};
use axum::http::StatusCode;

/// Responses that carry a secret must not be kept by any cache.
const NO_STORE: [(HeaderName, &str); 1] = [(CACHE_CONTROL, "no-store")];
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An API key's metadata; never the secret.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub role: Role,
    pub owner: String,
    pub created_at: String,
    pub expires_at: String,
    /// Null until first use; updated at most once a minute.
    pub last_used_at: Option<String>,
    /// The last 4 characters of the secret.
    pub hint: String,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name,
            description: k.description,
            role: k.role,
            owner: k.owner,
            created_at: rfc3339(k.created_at),
            expires_at: rfc3339(k.expires_at),
            last_used_at: k.last_used_at.map(rfc3339),
            hint: k.hint,
        }
    }
}

/// A key with its secret, returned by create and regenerate only.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyWithSecret {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The secret. Shown this once; keygate keeps only its HMAC.
    pub api_key: String,
}

impl ApiKeyWithSecret {
    pub(crate) fn new(key: ApiKey, secret: SecretString) -> Self {
        ApiKeyWithSecret {
            key: key.into(),
            api_key: secret.expose_secret().to_string(),
        }
    }
}

impl Drop for ApiKeyWithSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.api_key);
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub description: Option<String>,
    pub role: Role,
    /// Defaults to the caller.
    pub owner: Option<String>,
    /// RFC 3339; defaults to one year from now.
    pub expires_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKey {
    pub name: Option<String>,
    pub description: Option<String>,
    pub role: Option<Role>,
}

/// Creates an API key and returns its secret once. A super-admin key, when
/// `approvals.create-super-admin-key.required` > 0, answers 202 with the pending request;
/// once approved, the requester collects the key with
/// `POST /api/v1/approvals/{id}/redeem`.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = ApiKeyWithSecret),
              (status = 202, description = "Waiting for approvals (create-super-admin-key)", body = crate::services::approvals::Approval),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, description = "Owner at api_keys.max_per_owner", body = Problem),
              (status = 413, body = Problem), (status = 503, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    crate::http::audit_log::RequestId(rid): crate::http::audit_log::RequestId,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let expires_at = req
        .expires_at
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let rt = state.rt.clone();
    let created = detached(async move {
        let actor = crate::services::approvals::actor_of(&caller, rid);
        crate::app::api_keys::create(
            &rt,
            &caller,
            &actor,
            NewApiKey {
                name: req.name,
                description: req.description,
                role: req.role,
                owner: req.owner,
                expires_at,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(match created {
        crate::app::api_keys::KeyCreation::Created(key, secret) => (
            StatusCode::CREATED,
            NO_STORE,
            Json(ApiKeyWithSecret::new(*key, secret)),
        )
            .into_response(),
        crate::app::api_keys::KeyCreation::Pending(a) => {
            (StatusCode::ACCEPTED, Json(a)).into_response()
        }
    })
}

/// Lists API keys without secrets.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [ApiKeyView]), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    let keys = crate::app::api_keys::list(&state.rt, &caller).await?;
    Ok(Json(keys.into_iter().map(ApiKeyView::from).collect()))
}

/// One API key without its secret.
#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = ApiKeyView), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    Ok(Json(
        crate::app::api_keys::get(&state.rt, &caller, &id)
            .await?
            .into(),
    ))
}

/// Changes name, description or role; the secret stays the same.
#[utoipa::path(patch, path = "/api/v1/api-keys/{id}", tag = "api-keys", request_body = UpdateApiKey,
    params(("id" = String, Path, description = "API key id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = ApiKeyView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateApiKey>,
) -> Result<Json<ApiKeyView>, ApiError> {
    let rt = state.rt.clone();
    let key = detached(async move {
        crate::app::api_keys::update(
            &rt,
            &caller,
            &id,
            ApiKeyPatch {
                name: req.name,
                description: req.description,
                role: req.role,
            },
        )
        .await
    })
    .await?;
    Ok(Json(key.into()))
}

/// Issues a new secret; the old one stops working at once.
#[utoipa::path(post, path = "/api/v1/api-keys/{id}/regenerate", tag = "api-keys",
    params(("id" = String, Path, description = "API key id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = ApiKeyWithSecret), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn regenerate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<([(HeaderName, &'static str); 1], Json<ApiKeyWithSecret>), ApiError> {
    let rt = state.rt.clone();
    let (key, secret) =
        detached(async move { crate::app::api_keys::regenerate(&rt, &caller, &id).await }).await?;
    Ok((NO_STORE, Json(ApiKeyWithSecret::new(key, secret))))
}

/// Deletes a key; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::api_keys::delete(&rt, &caller, &id).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
