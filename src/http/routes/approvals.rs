//! Approval requests (`/api/v1/approvals`): list, read, approve, reject, redeem.

use crate::http::audit_log::RequestId;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiPath, Caller};
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::approvals::{self, Approval};
use axum::extract::State;
use axum::Json;

/// Recent approval requests, newest first. Needs `keys:read`.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [Approval]),
              (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<Approval>>, ApiError> {
    Ok(Json(crate::app::approvals::list(&state.rt, &caller).await?))
}

/// One approval request.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Approval), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Approval>, ApiError> {
    Ok(Json(
        crate::app::approvals::get(&state.rt, &caller, &id).await?,
    ))
}

async fn decide(
    state: AppState,
    caller: crate::services::Principal,
    request_id: Option<String>,
    id: String,
    approve: bool,
) -> Result<Json<Approval>, ApiError> {
    let rt = state.rt.clone();
    let a = detached(async move {
        let actor = approvals::actor_of(&caller, request_id);
        crate::app::approvals::decide(&rt, &caller, &actor, &id, approve, now()).await
    })
    .await?;
    Ok(Json(a))
}

/// Approves a request. The approval that reaches `required` runs the operation before
/// this answers; the returned state is then `executed` or `failed`. 403 for the
/// requester or a principal no approver rule names; 409 for a second decision by the
/// same principal or a request that is no longer pending (including expired).
#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Approval), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn approve(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Approval>, ApiError> {
    decide(state, caller, rid, id, true).await
}

/// Rejects a request: one rejection by an eligible approver, or by the requester
/// (withdrawing it), ends it as `rejected`.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/reject", tag = "approvals",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Approval), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn reject(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Approval>, ApiError> {
    decide(state, caller, rid, id, false).await
}

/// Collects the super-admin API key of an executed `create-super-admin-key` request:
/// only its requester, once, before the request's `expires_at`. Answers like
/// `POST /api/v1/api-keys` (201, the secret shown this once). 403 for anyone else; 409
/// when the request is not executed, was redeemed already, expired, or is of another
/// operation.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/redeem", tag = "approvals",
    params(("id" = String, Path)), security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = super::api_keys::ApiKeyWithSecret), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn redeem(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<String>,
) -> Result<
    (
        axum::http::StatusCode,
        [(axum::http::HeaderName, &'static str); 1],
        Json<super::api_keys::ApiKeyWithSecret>,
    ),
    ApiError,
> {
    let rt = state.rt.clone();
    let (key, secret) = detached(async move {
        let actor = approvals::actor_of(&caller, rid);
        crate::app::approvals::redeem(&rt, &caller, &actor, &id, now()).await
    })
    .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(super::api_keys::ApiKeyWithSecret::new(key, secret)),
    ))
}
