//! The Groups page: groups with their members and ring grants (list with filter and
//! pagination, create, delete with confirmation), and one group's page (description,
//! members added and removed, grants set and removed). Membership changes go through
//! [`crate::app::groups`], so a change to an approver group becomes an approval request
//! as in the API (`change-approvers`); everything else through the same use cases with
//! the API's rules (nobody hands out what they lack).

use crate::app::groups::MemberChange;
use crate::console::error::ConsoleError;
use crate::console::layout::{
    csrf, done, field, fields, filter_form, notice, page, pager, paginate, time, ListQuery,
    NoFields, Pairs,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::audit_log::RequestId;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::approvals::actor_of;
use crate::services::authz::Permission;
use crate::services::groups::{Group, RingPermission};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

const PATH: &str = "/console/groups";

fn group_path(name: &str) -> String {
    format!(
        "{PATH}/{}",
        crate::console::layout::form_urlencoded_component(name)
    )
}

/// `GET /console/groups`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let groups = crate::app::groups::list(&state.rt, &c.principal).await?;
    let (rows, total) = paginate(groups, &q, |g: &Group| {
        let members: Vec<&str> = g.members.iter().map(|m| m.principal.as_str()).collect();
        let grants: Vec<&str> = g.grants.iter().map(|r| r.resource.as_str()).collect();
        format!(
            "{} {} {} {}",
            g.group.name,
            g.group.description,
            members.join(" "),
            grants.join(" ")
        )
    });
    let write = c.can(Permission::GroupsWrite);
    Ok(page(
        &c,
        "groups",
        "Groups",
        html! {
            (notice(q.done.as_deref()))
            p.muted { "A group holds principals (user names, API key owners, key file accessIDs, <oauth_id>:<sub>) and grants on key rings: view, sign, rotate, admin." }
            @if write {
                details open[total == 0] {
                    summary { "Add a group" }
                    form.stack method="post" action=(PATH) {
                        (csrf(&c))
                        label { "Name (a-z, 0-9, - and _)" input name="name" required maxlength="64"; }
                        label { "Description" input name="description" maxlength="1024"; }
                        button.primary type="submit" { "Add" }
                    }
                }
            }
            (filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Description" }
                    th scope="col" { "Members" } th scope="col" { "Grants" }
                    th scope="col" { "Created by" } th scope="col" { "Created" }
                    th scope="col" { "Action" }
                } }
                tbody { @for g in &rows { tr {
                    td { (g.group.name) } td { (g.group.description) }
                    td { (g.members.len()) }
                    td { @for r in &g.grants { code { (r.resource) } " " (r.permissions.join(", ")) br; } }
                    td { (g.group.created_by) } td { (time(g.group.created_at)) }
                    td.actions {
                        a href=(group_path(&g.group.name)) aria-label={ "Open group " (g.group.name) } {
                            @if write { "Manage" } @else { "Open" }
                        }
                        @if write {
                            a href={ (group_path(&g.group.name)) "/delete" } aria-label={ "Delete group " (g.group.name) } { "Delete" }
                        }
                    }
                } } }
            } }
            (pager(PATH, &q, total))
        },
    ))
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: String,
    #[serde(default)]
    description: String,
}

/// `POST /console/groups`.
pub async fn create(
    State(state): State<AppState>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let name = f.name.trim().to_string();
    let g = detached(async move {
        crate::app::groups::create(
            &rt,
            &caller,
            &name,
            Some(f.description.trim().to_string()),
            now(),
        )
        .await
    })
    .await?;
    Ok(done(&group_path(&g.group.name), "updated"))
}

/// `GET /console/groups/{name}`: the group, its members (filtered and paginated) and
/// grants.
pub async fn show(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let g = crate::app::groups::get(&state.rt, &c.principal, &name).await?;
    let path = group_path(&g.group.name);
    let (members, total) = paginate(g.members.clone(), &q, |m| {
        format!("{} {}", m.principal, m.added_by)
    });
    let write = c.can(Permission::GroupsWrite);
    Ok(page(
        &c,
        "groups",
        &format!("Group {}", g.group.name),
        html! {
            (notice(q.done.as_deref()))
            p { a href=(PATH) { "All groups" } }
            @if write {
                form.stack method="post" action={ (path) "/edit" } {
                    (csrf(&c))
                    label { "Description" input name="description" maxlength="1024" value=(g.group.description); }
                    button type="submit" { "Save the description" }
                }
            } @else {
                p { (g.group.description) }
            }
            h2 { "Members" }
            @if write {
                form.filter method="post" action={ (path) "/members" } {
                    (csrf(&c))
                    label for="add-member" { "Principal to add" }
                    input id="add-member" name="principal" required maxlength="256";
                    button.primary type="submit" { "Add the member" }
                }
            }
            (filter_form(&path, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Principal" } th scope="col" { "Added by" } th scope="col" { "Added" }
                    @if write { th scope="col" { "Action" } }
                } }
                tbody { @for m in &members { tr {
                    td { (m.principal) } td { (m.added_by) } td { (time(m.added_at)) }
                    @if write { td {
                        form.inline method="post" action={ (path) "/members/remove" } {
                            (csrf(&c))
                            input type="hidden" name="principal" value=(m.principal);
                            button type="submit" aria-label={ "Remove member " (m.principal) } { "Remove" }
                        }
                    } }
                } } }
            } }
            (pager(&path, &q, total))
            h2 { "Grants" }
            @if write {
                form.stack method="post" action={ (path) "/grants" } {
                    (csrf(&c))
                    label { "Key ring" input name="ring" required maxlength="128"; }
                    fieldset {
                        legend { "Permissions on the ring" }
                        @for p in RingPermission::ALL {
                            label.check { input type="checkbox" name="permissions" value=(p.name()); (p.name()) }
                        }
                    }
                    button.primary type="submit" { "Set the grant" }
                }
            }
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Resource" } th scope="col" { "Permissions" }
                    th scope="col" { "Granted by" } th scope="col" { "Granted" }
                    @if write { th scope="col" { "Action" } }
                } }
                tbody { @for r in &g.grants { tr {
                    td { code { (r.resource) } } td { (r.permissions.join(", ")) }
                    td { (r.granted_by) } td { (time(r.granted_at)) }
                    @if write { td {
                        form.inline method="post" action={ (path) "/grants/remove" } {
                            (csrf(&c))
                            input type="hidden" name="resource" value=(r.resource);
                            button type="submit" aria-label={ "Remove the grant on " (r.resource) } { "Remove" }
                        }
                    } }
                } } }
            } }
        },
    ))
}

#[derive(Deserialize)]
pub struct EditForm {
    #[serde(default)]
    description: String,
}

/// `POST /console/groups/{name}/edit`.
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<EditForm>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let target = name.clone();
    detached(async move {
        crate::app::groups::update(
            &rt,
            &caller,
            &target,
            f.description.trim().to_string(),
            now(),
        )
        .await
    })
    .await?;
    Ok(done(&group_path(&name), "updated"))
}

#[derive(Deserialize)]
pub struct MemberForm {
    principal: String,
}

async fn member_change(
    state: AppState,
    rid: Option<String>,
    c: Console,
    name: String,
    principal: String,
    add: bool,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let group = name.clone();
    let change = detached(async move {
        let actor = actor_of(&caller, rid);
        let p = principal.trim();
        if add {
            crate::app::groups::add_member(&rt, &caller, &actor, &group, p, now()).await
        } else {
            crate::app::groups::remove_member(&rt, &caller, &actor, &group, p, now()).await
        }
    })
    .await?;
    Ok(match change {
        MemberChange::Pending(_) => done(&group_path(&name), "requested"),
        MemberChange::Done(_) => done(&group_path(&name), "updated"),
    })
}

/// `POST /console/groups/{name}/members`.
pub async fn add_member(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(name): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<MemberForm>,
) -> Result<Response, ConsoleError> {
    member_change(state, rid, c, name, f.principal, true).await
}

/// `POST /console/groups/{name}/members/remove`.
pub async fn remove_member(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(name): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<MemberForm>,
) -> Result<Response, ConsoleError> {
    member_change(state, rid, c, name, f.principal, false).await
}

/// `POST /console/groups/{name}/grants`: sets the grant on a ring (replacing one).
pub async fn put_grant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<Pairs>,
) -> Result<Response, ConsoleError> {
    let ring = field(&f, "ring");
    let resource = if ring.starts_with("ring:") {
        ring
    } else {
        format!("ring:{ring}")
    };
    let perms = fields(&f, "permissions");
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let group = name.clone();
    detached(async move {
        crate::app::groups::add_grant(&rt, &caller, &group, &resource, &perms, now()).await
    })
    .await?;
    Ok(done(&group_path(&name), "updated"))
}

#[derive(Deserialize)]
pub struct GrantForm {
    resource: String,
}

/// `POST /console/groups/{name}/grants/remove`.
pub async fn delete_grant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<GrantForm>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let group = name.clone();
    detached(
        async move { crate::app::groups::delete_grant(&rt, &caller, &group, &f.resource).await },
    )
    .await?;
    Ok(done(&group_path(&name), "updated"))
}

/// `GET /console/groups/{name}/delete`: the confirmation.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    let g = crate::app::groups::get(&state.rt, &c.principal, &name).await?;
    Ok(page(
        &c,
        "groups",
        "Delete the group",
        html! {
            p { "Delete group " strong { (g.group.name) } " with its " (g.members.len()) " members and " (g.grants.len()) " grants? Its members lose what the grants gave them." }
            form method="post" action={ (group_path(&g.group.name)) "/delete" } {
                (csrf(&c))
                button.danger type="submit" { "Delete the group" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `POST /console/groups/{name}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::groups::delete(&rt, &caller, &name).await }).await?;
    Ok(done(PATH, "deleted"))
}
