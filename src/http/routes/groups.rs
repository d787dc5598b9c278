//! Groups, members and grants (`/api/v1/groups`): the HTTP shape of
//! [`crate::services::groups`].

use crate::app::groups::MemberChange;
use crate::http::audit_log::RequestId;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::approvals::actor_of;
use crate::services::groups::Group;
use crate::store::groups::{GrantRow, MemberRow};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    /// A user name, an API key's owner, a key file's accessID or `<oauth_id>:<sub>`.
    pub principal: String,
    pub added_by: String,
    pub added_at: String,
}

impl From<MemberRow> for MemberView {
    fn from(m: MemberRow) -> Self {
        MemberView {
            principal: m.principal,
            added_by: m.added_by,
            added_at: rfc3339(m.added_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct GrantView {
    /// `ring:<name>`.
    pub resource: String,
    /// Some of `view`, `sign`, `rotate`, `admin` (which implies the others).
    pub permissions: Vec<String>,
    pub granted_by: String,
    pub granted_at: String,
}

impl From<GrantRow> for GrantView {
    fn from(g: GrantRow) -> Self {
        GrantView {
            resource: g.resource,
            permissions: g.permissions,
            granted_by: g.granted_by,
            granted_at: rfc3339(g.granted_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct GroupView {
    pub name: String,
    pub description: String,
    pub members: Vec<MemberView>,
    pub grants: Vec<GrantView>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Group> for GroupView {
    fn from(g: Group) -> Self {
        GroupView {
            name: g.group.name,
            description: g.group.description,
            members: g.members.into_iter().map(MemberView::from).collect(),
            grants: g.grants.into_iter().map(GrantView::from).collect(),
            created_by: g.group.created_by,
            created_at: rfc3339(g.group.created_at),
            updated_at: rfc3339(g.group.updated_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    pub description: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub principal: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutGrant {
    /// `ring:<name>` of an existing ring.
    pub resource: String,
    /// Some of `view`, `sign`, `rotate`, `admin`; replaces the group's grant on it.
    pub permissions: Vec<String>,
}

/// Creates a group.
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = CreateGroup,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = GroupView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let rt = state.rt.clone();
    let g = detached(async move {
        crate::app::groups::create(&rt, &caller, &req.name, req.description, now()).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(g.into())))
}

/// Every group with its members and grants.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [GroupView]), (status = 401, body = Problem),
              (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let groups = crate::app::groups::list(&state.rt, &caller).await?;
    Ok(Json(groups.into_iter().map(GroupView::from).collect()))
}

/// One group.
#[utoipa::path(get, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = GroupView), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(
        crate::app::groups::get(&state.rt, &caller, &name)
            .await?
            .into(),
    ))
}

/// Changes a group's description.
#[utoipa::path(patch, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path)), request_body = UpdateGroup,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = GroupView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateGroup>,
) -> Result<Json<GroupView>, ApiError> {
    let rt = state.rt.clone();
    let g = detached(async move {
        crate::app::groups::update(&rt, &caller, &name, req.description, now()).await
    })
    .await?;
    Ok(Json(g.into()))
}

/// Deletes a group with its memberships and grants.
#[utoipa::path(delete, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::groups::delete(&rt, &caller, &name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The group's members.
#[utoipa::path(get, path = "/api/v1/groups/{name}/members", tag = "groups",
    params(("name" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [MemberView]), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn members(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    let m = crate::app::groups::members(&state.rt, &caller, &name).await?;
    Ok(Json(m.into_iter().map(MemberView::from).collect()))
}

/// Adds a member: 201 when added, 200 when it already was one. The caller must hold
/// every grant the group carries.
#[utoipa::path(post, path = "/api/v1/groups/{name}/members", tag = "groups",
    params(("name" = String, Path)), request_body = AddMember,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = [MemberView]), (status = 200, body = [MemberView]),
              (status = 202, description = "An approver group holding its quorum: waiting for approvals (change-approvers)", body = crate::services::approvals::Approval),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn add_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<AddMember>,
) -> Result<Response, ApiError> {
    let rt = state.rt.clone();
    let (change, members) = detached(async move {
        let actor = actor_of(&caller, rid);
        let change = crate::app::groups::add_member(
            &rt,
            &caller,
            &actor,
            &name,
            req.principal.trim(),
            now(),
        )
        .await?;
        Ok((
            change,
            crate::app::groups::members(&rt, &caller, &name).await?,
        ))
    })
    .await?;
    let members: Vec<MemberView> = members.into_iter().map(MemberView::from).collect();
    Ok(match change {
        MemberChange::Done(true) => (StatusCode::CREATED, Json(members)).into_response(),
        MemberChange::Done(false) => (StatusCode::OK, Json(members)).into_response(),
        MemberChange::Pending(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
    })
}

/// Removes a member.
#[utoipa::path(delete, path = "/api/v1/groups/{name}/members/{principal}", tag = "groups",
    params(("name" = String, Path), ("principal" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Removed"),
              (status = 202, description = "An approver group holding its quorum: waiting for approvals (change-approvers)", body = crate::services::approvals::Approval),
              (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "The group would fall below its approvers' quorum", body = Problem)))]
pub async fn remove_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(rid): RequestId,
    ApiPath((name, principal)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let rt = state.rt.clone();
    let change = detached(async move {
        let actor = actor_of(&caller, rid);
        crate::app::groups::remove_member(&rt, &caller, &actor, &name, &principal, now()).await
    })
    .await?;
    Ok(match change {
        MemberChange::Pending(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
        MemberChange::Done(_) => StatusCode::NO_CONTENT.into_response(),
    })
}

/// The group's grants.
#[utoipa::path(get, path = "/api/v1/groups/{name}/grants", tag = "groups",
    params(("name" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [GrantView]), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn grants(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    let g = crate::app::groups::grants(&state.rt, &caller, &name).await?;
    Ok(Json(g.into_iter().map(GrantView::from).collect()))
}

/// Sets the group's grant on a resource (replacing an earlier one). The caller must
/// hold every permission it hands out.
#[utoipa::path(post, path = "/api/v1/groups/{name}/grants", tag = "groups",
    params(("name" = String, Path)), request_body = PutGrant,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = GrantView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn put_grant(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PutGrant>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let rt = state.rt.clone();
    let g = detached(async move {
        crate::app::groups::add_grant(&rt, &caller, &name, &req.resource, &req.permissions, now())
            .await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(g.into())))
}

/// Removes the group's grant on a resource.
#[utoipa::path(delete, path = "/api/v1/groups/{name}/grants/{resource}", tag = "groups",
    params(("name" = String, Path), ("resource" = String, Path, description = "ring:<name>")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Removed"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_grant(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((name, resource)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::groups::delete_grant(&rt, &caller, &name, &resource).await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
