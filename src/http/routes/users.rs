//! Local users (`/api/v1/users`): the HTTP shape of [`crate::services::users`].
//!
//! Requests are strict (`deny_unknown_fields`), so a misspelt field is a 400 instead of
//! being silently ignored. Responses never carry the password hash, only
//! `has_password`. `groups` sets the user's group memberships (see
//! [`crate::services::groups`]); the groups are checked before the user is stored.

use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::authz::Role;
use crate::services::users::{NewUser, User, UserPatch};
use axum::extract::State;
use axum::http::StatusCode;
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
        let groups = req.groups.unwrap_or_default();
        // Checked before the user exists, so a bad group stores nothing. A name that
        // groups already list would inherit their grants: the creator must hold them.
        if !groups.is_empty() {
            rt.groups.check_assignable(&caller, &groups).await?;
        }
        rt.groups.require_can_act_as(&caller, &req.username).await?;
        let at = now();
        let user = rt
            .users
            .create(
                &caller,
                NewUser {
                    username: req.username,
                    password: req.password,
                    role: req.role,
                    groups: groups.clone(),
                },
                at,
            )
            .await?;
        if !groups.is_empty() {
            rt.groups
                .set_groups_of(&caller, &user.username, &groups, at)
                .await?;
        }
        Ok((user, groups))
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
    let users = state.rt.users.list(&caller).await?;
    let mut groups: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (principal, group) in state.rt.groups.all_memberships().await? {
        groups.entry(principal).or_default().push(group);
    }
    Ok(Json(
        users
            .into_iter()
            .map(|u| {
                let g = groups.remove(&u.username).unwrap_or_default();
                UserView::new(u, g)
            })
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
    let user = state.rt.users.get(&caller, &username).await?;
    let groups = state.rt.groups.groups_of(&user.username).await?;
    Ok(Json(UserView::new(user, groups)))
}

/// Changes password and/or role; either revokes the user's sessions.
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users", request_body = UpdateUser,
    params(("username" = String, Path, description = "Username")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = UserView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, description = "Changed concurrently", body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let rt = state.rt.clone();
    let user = detached(async move {
        let at = now();
        if let Some(groups) = &req.groups {
            rt.groups.check_assignable(&caller, groups).await?;
        }
        // Setting someone else's password lets the caller act as them.
        if req.password.is_some() && caller.name != username {
            rt.groups.require_can_act_as(&caller, &username).await?;
        }
        let groups = req.groups.clone();
        let (user, revoked) = rt
            .users
            .update(
                &caller,
                &username,
                UserPatch {
                    password: req.password,
                    current_password: req.current_password,
                    role: req.role,
                    groups: req.groups,
                },
                at,
            )
            .await?;
        // Their access tokens carry the old role or predate the new password: end them
        // with their sessions.
        rt.tokens.sessions_ended(&revoked, at);
        if let Some(groups) = groups {
            rt.groups
                .set_groups_of(&caller, &user.username, &groups, at)
                .await?;
        }
        let groups = rt.groups.groups_of(&user.username).await?;
        Ok(UserView::new(user, groups))
    })
    .await?;
    Ok(Json(user))
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
    detached(async move {
        let at = now();
        let revoked = rt.users.delete(&caller, &username, at).await?;
        rt.tokens.sessions_ended(&revoked, at);
        // The user's API keys are gone from the store; drop them from the in-memory
        // index before answering, so they stop authenticating at once.
        if let Err(e) = rt.api_keys.refresh_if_changed().await {
            tracing::warn!(error = %e, "API key index reload after deleting a user failed; retrying on the next poll");
        }
        Ok(())
    })
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
    detached(async move { rt.users.clear_lockout(&caller, &username).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
