//! Custom roles (`/api/v1/roles`): the HTTP shape of [`crate::services::roles`].

use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::roles::{NewRole, RoleInfo, RolePatch};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A role and its permissions. Built-in roles have no creator or times.
#[derive(Serialize, ToSchema)]
pub struct RoleView {
    pub name: String,
    pub description: String,
    pub permissions: Vec<&'static str>,
    pub builtin: bool,
    pub created_by: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<RoleInfo> for RoleView {
    fn from(r: RoleInfo) -> Self {
        RoleView {
            name: r.name,
            description: r.description,
            permissions: r.permissions,
            builtin: r.builtin,
            created_by: r.created_by,
            created_at: r.created_at.map(rfc3339),
            updated_at: r.updated_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// 1-64 characters of a-z, 0-9, - and _, starting with a letter; not a built-in name.
    pub name: String,
    pub description: Option<String>,
    /// Permission names, e.g. `keys:read`; `GET /api/v1/roles` shows the built-in roles'.
    pub permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    pub description: Option<String>,
    /// Replaces the permissions; applies at once to everyone holding the role.
    pub permissions: Option<Vec<String>>,
}

/// Creates a custom role. The caller must hold every permission it grants.
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = CreateRole,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = RoleView),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateRole>,
) -> Result<(StatusCode, Json<RoleView>), ApiError> {
    let rt = state.rt.clone();
    let role = detached(async move {
        crate::app::roles::create(
            &rt,
            &caller,
            NewRole {
                name: req.name,
                description: req.description,
                permissions: req.permissions,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(role.into())))
}

/// Built-in and custom roles.
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [RoleView]),
              (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<RoleView>>, ApiError> {
    let roles = crate::app::roles::list(&state.rt, &caller).await?;
    Ok(Json(roles.into_iter().map(RoleView::from).collect()))
}

/// One role.
#[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = RoleView), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<RoleView>, ApiError> {
    Ok(Json(
        crate::app::roles::get(&state.rt, &caller, &name)
            .await?
            .into(),
    ))
}

/// Changes a custom role's description or permissions.
#[utoipa::path(patch, path = "/api/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path)), request_body = UpdateRole,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = RoleView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateRole>,
) -> Result<Json<RoleView>, ApiError> {
    let rt = state.rt.clone();
    let role = detached(async move {
        crate::app::roles::update(
            &rt,
            &caller,
            &name,
            RolePatch {
                description: req.description,
                permissions: req.permissions,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(Json(role.into()))
}

/// Deletes a custom role nobody holds.
#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "Still held by users, keys, key files or an OAuth server mapping", body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::roles::delete(&rt, &caller, &name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
