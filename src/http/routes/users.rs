//! Local users (`/api/v1/users`): the HTTP shape of [`crate::services::users`].
//!
//! Requests are strict (`deny_unknown_fields`), so a misspelt field is a 400 instead of
//! being silently ignored. Responses never carry the password hash, only
//! `has_password`. `groups` sets the user's group memberships (see
//! [`crate::services::groups`]); the groups are checked before the user is stored.

use crate::app::users::UserChange;
use crate::http::audit_log::RequestId;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::approvals::actor_of;
use crate::services::authz::Role;
use crate::services::users::{NewUser, User, UserPatch};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user; never the password or its hash.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub username: String,
    pub role: Role,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// Whether the user can use the password grant.
    pub has_password: bool,
    pub created_at: String,
    /// Null until the first change.
    pub updated_at: Option<String>,
}

impl UserView {
    fn new(u: User, groups: Vec<String>) -> Self {
        UserView {
            username: u.username,
            role: u.role,
            groups,
            has_password: u.has_password,
            created_at: rfc3339(u.created_at),
            updated_at: u.updated_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1–128 characters of `A-Z a-z 0-9 . _ @ -`, not starting with `-`; not `root`.
    pub username: String,
    /// At least `users.password_min_length` characters, at most 1024. Without one, the
    /// user cannot use the password grant.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    pub role: Role,
    /// Groups to put the user in; each must exist, and the caller must hold every grant
    /// a group carries.
    pub groups: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// A new password; revokes the user's sessions.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// Required to change your own password without the right to manage your account
    /// (keygate extension). Checked like a login, lockout included.
    #[schema(value_type = Option<String>, format = Password)]
    pub current_password: Option<SecretString>,
    /// A new role; revokes the user's sessions when it differs.
    pub role: Option<Role>,
    /// Replaces the user's group memberships.
    pub groups: Option<Vec<String>>,
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = UserView),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 409, description = "Username taken", body = Problem),
              (status = 413, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let rt = state.rt.clone();
    let (user, groups) = detached(async move {
        let req = NewUser {
            username: req.username,
            password: req.password,
            role: req.role,
            groups: req.groups.unwrap_or_default(),
        };
        crate::app::users::create(&rt, &caller, req, now()).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(UserView::new(user, groups))))
}

/// Lists users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [UserView]), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = crate::app::users::list(&state.rt, &caller).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|(u, g)| UserView::new(u, g))
            .collect(),
    ))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path, description = "Username")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(username): ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    let (user, groups) = crate::app::users::get(&state.rt, &caller, &username).await?;
    Ok(Json(UserView::new(user, groups)))
}

/// Changes password, role and/or groups; a new password or role revokes the user's
/// sessions. A role that approves operations, once its approver set holds its quorum, is
/// a `change-approvers` request: 202 with the pending approval (docs/lifecycle.md).
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users", request_body = UpdateUser,
    params(("username" = String, Path, description = "Username")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = UserView),
              (status = 202, description = "Waiting for approvals (change-approvers)", body = crate::services::approvals::Approval),
              (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, description = "Changed concurrently, or an approver set would fall below its quorum", body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateUser>,
) -> Result<Response, ApiError> {
    let rt = state.rt.clone();
    let change = detached(async move {
        let actor = actor_of(&caller, rid);
        let patch = UserPatch {
            password: req.password,
            current_password: req.current_password,
            role: req.role,
            groups: req.groups,
        };
        crate::app::users::update(&rt, &caller, &actor, &username, patch, now()).await
    })
    .await?;
    Ok(match change {
        UserChange::Done(user, groups) => Json(UserView::new(user, groups)).into_response(),
        UserChange::Pending(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
    })
}

/// Deletes a user, revokes their sessions and deletes the API keys they own.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path, description = "Username")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "Users cannot delete themselves", body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::users::delete(&rt, &caller, &username, now()).await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Clears the login lockouts of a user (the one for every source and those per source
/// address), so its owner can log in at once (`docs/users.md`, "Login throttling").
#[utoipa::path(delete, path = "/api/v1/users/{username}/lockout", tag = "users",
    params(("username" = String, Path, description = "Username")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "No lockout applies to the user any more"),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn clear_lockout(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(username): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::users::clear_lockout(&rt, &caller, &username).await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
