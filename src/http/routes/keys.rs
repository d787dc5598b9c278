//! Key rings (`/api/v1/keys`) and the JWKS.

use crate::http::audit_log::RequestId;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::keys::KeyVersion;
use crate::runtime::now;
use crate::services::approvals::{self, Approval, Done, Submitted};
use crate::services::key_rings;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
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
            state: v.state.to_string(),
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
    let versions = crate::app::keys::list(&state.rt, &caller).await?;
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

/// `POST /api/v1/keys/{ring}/rotate` body.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Rotate-now: the new version signs at once instead of after `rotation.publish_delay`.
    #[serde(default)]
    pub immediate: bool,
    /// Change-backend: generate the new version on this configured backend.
    pub backend: Option<String>,
}

/// `POST /api/v1/keys/{ring}/regenerate` body.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    /// Required for MAC rings (`api-key-mac`): regenerating one invalidates every API key
    /// and refresh token.
    #[serde(default)]
    pub force: bool,
}

/// An empty body means the defaults; anything else must be the JSON object.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
    }
}

/// Submits a lifecycle operation: 201/200 with the result when it ran at once, 202
/// with the pending approval when it needs approvals.
async fn submit(
    state: AppState,
    caller: crate::services::Principal,
    request_id: Option<String>,
    op: approvals::Operation,
) -> Result<Response, ApiError> {
    let rt = state.rt.clone();
    let submitted = detached(async move {
        let actor = approvals::actor_of(&caller, request_id);
        crate::app::approvals::submit(&rt, &caller, &actor, op, now()).await
    })
    .await?;
    Ok(match submitted {
        Submitted::Pending(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
        Submitted::Done(Done::Version(v)) => {
            (StatusCode::CREATED, Json(KeyVersionView::from(&*v))).into_response()
        }
        Submitted::Done(Done::Destroyed) => StatusCode::NO_CONTENT.into_response(),
        Submitted::Done(Done::Other(s)) => {
            (StatusCode::OK, Json(serde_json::json!({ "outcome": s }))).into_response()
        }
    })
}

/// Creates the ring's next version in hardware. It is published at once and starts
/// signing after `rotation.publish_delay` (or at once with `immediate`); the previous
/// version keeps verifying until its last token has expired. Gated by
/// `approvals.rotate`, `approvals.rotate-now` or (with `backend`)
/// `approvals.change-backend`: 202 with the pending approval when approvals are needed.
#[utoipa::path(post, path = "/api/v1/keys/{ring}/rotate", tag = "keys",
    params(("ring" = String, Path)), request_body(content = Option<RotateRequest>),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = KeyVersionView),
              (status = 202, description = "Waiting for approvals", body = Approval),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn rotate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath(ring): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: RotateRequest = optional_body(&body)?;
    let op = approvals::Operation::Rotate {
        ring,
        immediate: req.immediate,
        backend: req.backend,
    };
    submit(state, caller, rid, op).await
}

/// Replaces the active version at once with a new one and marks the old version
/// `compromised`: every token it signed is refused from then on. For a MAC ring
/// (`api-key-mac`) this invalidates every API key and refresh token, so it needs
/// `force: true` and at least one approval. Gated by `approvals.regenerate`.
#[utoipa::path(post, path = "/api/v1/keys/{ring}/regenerate", tag = "keys",
    params(("ring" = String, Path)), request_body(content = Option<RegenerateRequest>),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = KeyVersionView),
              (status = 202, description = "Waiting for approvals", body = Approval),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn regenerate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath(ring): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: RegenerateRequest = optional_body(&body)?;
    let op = approvals::Operation::Regenerate {
        ring,
        force: req.force,
    };
    submit(state, caller, rid, op).await
}

/// Removes a retired or compromised version from the hardware and marks it
/// `destroyed`. Needs `keys:destroy`; gated by `approvals.destroy` (default 2). 409 for
/// a version that is pending, active, retiring or already destroyed.
#[utoipa::path(post, path = "/api/v1/keys/{ring}/versions/{version}/destroy", tag = "keys",
    params(("ring" = String, Path), ("version" = i64, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Destroyed (no approvals required)"),
              (status = 202, description = "Waiting for approvals", body = Approval),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn destroy(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath((ring, version)): ApiPath<(String, i64)>,
) -> Result<Response, ApiError> {
    submit(
        state,
        caller,
        rid,
        approvals::Operation::Destroy { ring, version },
    )
    .await
}

/// `POST /api/v1/keys/{ring}/sign` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    /// The claims to sign. `iss` and `aud` are refused; `iat`, `nbf`, `exp` and `jti`
    /// too unless `signing.allow_caller_times` is on.
    #[schema(value_type = Object)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Seconds; default `signing.default_ttl`, at most `signing.max_ttl`.
    pub expires_in: Option<i64>,
    /// Required: one string or an array. Never keygate's own audience.
    #[schema(value_type = Object)]
    pub audience: Option<StringOrList>,
    /// JOSE `typ`; default `JWT`, never `at+jwt`.
    pub typ: Option<String>,
}

/// One string or a list of strings.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// A signed token.
#[derive(Serialize, ToSchema)]
pub struct Signed {
    pub token: String,
    pub kid: String,
}

/// The signing service for other gateways: signs `claims` with the ring's active
/// hardware key. Needs the `sign` grant on the ring.
#[utoipa::path(post, path = "/api/v1/keys/{ring}/sign", tag = "keys",
    params(("ring" = String, Path)), request_body = SignBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Signed),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn sign(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(ring): ApiPath<String>,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Json<Signed>, ApiError> {
    let audience = match body.audience {
        Some(StringOrList::One(a)) => vec![a],
        Some(StringOrList::Many(v)) => v,
        None => Vec::new(),
    };
    let req = crate::services::tokens::signing::SignRequest {
        claims: body.claims,
        expires_in: body.expires_in,
        audience,
        typ: body.typ,
    };
    // The ring's own quota (`limits.per_ring`); unknown rings keep no bucket.
    if state.rt.keys.ring_exists(&ring) {
        state.rt.limits.check_ring(&ring)?;
    }
    let (token, kid) = crate::app::keys::sign(&state.rt, &caller, &ring, req, now()).await?;
    Ok(Json(Signed { token, kid }))
}
