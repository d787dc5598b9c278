//! Key rings (`/api/v1/keys`) and the JWKS.

use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::keys::KeyVersion;
use crate::runtime::now;
use crate::services::key_rings;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One key version.
#[derive(Serialize, ToSchema)]
pub struct KeyVersionView {
    pub ring: String,
    pub version: i64,
    /// pending | active | retiring | retired | compromised | destroyed
    pub state: String,
    pub algorithm: String,
    /// Name of the configured backend holding the key.
    pub backend: String,
    pub kid: String,
    pub created_at: String,
    pub activated_at: Option<String>,
}

impl From<&KeyVersion> for KeyVersionView {
    fn from(v: &KeyVersion) -> Self {
        KeyVersionView {
            ring: v.ring.clone(),
            version: v.version,
            state: v.state.clone(),
            algorithm: v.algorithm.name().to_string(),
            backend: v.backend.clone(),
            kid: v.kid.clone(),
            created_at: rfc3339(v.created_at),
            activated_at: v.activated_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRing {
    /// 1-64 of `a-z`, `0-9`, `-`, starting with a letter.
    pub ring: String,
    /// ES256 | ES384 | EdDSA | RS256 | PS256 | HS256 (also RS256-3072, PS256-3072).
    pub algorithm: String,
    /// Configured backend name; defaults to the backend of `jwt-default`.
    pub backend: Option<String>,
}

/// Every version of every ring.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [KeyVersionView]),
              (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<KeyVersionView>>, ApiError> {
    let versions = key_rings::list(&state.rt.keys, &caller)?;
    Ok(Json(
        versions
            .iter()
            .map(|v| KeyVersionView::from(&**v))
            .collect(),
    ))
}

/// Creates a ring whose first version is active and generated in hardware.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateRing,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = KeyVersionView),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 503, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateRing>,
) -> Result<(StatusCode, Json<KeyVersionView>), ApiError> {
    let rt = state.rt.clone();
    let v = detached(async move {
        key_rings::create(
            &rt.keys,
            &caller,
            &req.ring,
            &req.algorithm,
            req.backend,
            now(),
        )
        .await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(KeyVersionView::from(&*v))))
}

/// Public keys of every published version of every JWT-signing ring.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "RFC 7517 JWK Set", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let max_age = state.rt.config.jwks.max_age.secs();
    (
        [(header::CACHE_CONTROL, format!("public, max-age={max_age}"))],
        Json(state.rt.keys.jwks()),
    )
}
