//! The Roles page: built-in and custom roles with their permissions (list with filter
//! and pagination); create, edit the permissions and description of, and delete custom
//! roles, through [`crate::app::roles`] with the API's rules (a role may grant only
//! permissions its creator holds; a role still held or mapped cannot be deleted).

use crate::console::error::ConsoleError;
use crate::console::layout::{
    csrf, done, field, fields, filter_form, form_urlencoded_component, notice, page, pager,
    paginate, time, ListQuery, NoFields, Pairs,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::authz::Permission;
use crate::services::roles::{NewRole, RoleInfo, RolePatch};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};

const PATH: &str = "/console/roles";

fn role_path(name: &str) -> String {
    format!("{PATH}/{}", form_urlencoded_component(name))
}

/// One checkbox per permission the caller holds (it may grant no other), `checked`
/// ticked. `id` keeps the labels of two forms on one page apart.
fn permission_boxes(c: &Console, checked: &[&str], id: &str) -> Markup {
    html! {
        fieldset {
            legend { "Permissions" }
            @for p in Permission::ALL.into_iter().filter(|p| c.principal.role.has(*p)) {
                @let box_id = format!("{id}-{}", p.name().replace(':', "-"));
                div {
                    input id=(box_id) type="checkbox" name="permissions" value=(p.name())
                        checked[checked.contains(&p.name())];
                    " "
                    label for=(box_id) { (p.name()) }
                }
            }
        }
    }
}

/// `GET /console/roles`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let roles = crate::app::roles::list(&state.rt, &c.principal).await?;
    let (rows, total) = paginate(roles, &q, |r: &RoleInfo| {
        format!("{} {} {}", r.name, r.description, r.permissions.join(" "))
    });
    let write = c.can(Permission::RolesWrite);
    Ok(page(
        &c,
        "roles",
        "Roles",
        html! {
            (notice(q.done.as_deref()))
            p.muted { "Built-in roles are fixed. A custom role grants exactly the permissions ticked; a change applies at once to everyone holding it." }
            @if write {
                details {
                    summary { "Add a custom role" }
                    form.stack method="post" action=(PATH) {
                        (csrf(&c))
                        label { "Name (a-z, 0-9, - and _, starting with a letter)" input name="name" required maxlength="64"; }
                        label { "Description" input name="description" maxlength="1024"; }
                        (permission_boxes(&c, &[], "new"))
                        button.primary type="submit" { "Add" }
                    }
                }
            }
            (filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Kind" }
                    th scope="col" { "Description" } th scope="col" { "Permissions" }
                    th scope="col" { "Created by" } th scope="col" { "Updated" }
                    @if write { th scope="col" { "Action" } }
                } }
                tbody { @for r in &rows { tr {
                    td { (r.name) }
                    td { @if r.builtin { "built-in" } @else { "custom" } }
                    td { (r.description) }
                    td { (r.permissions.join(", ")) }
                    td { (r.created_by.as_deref().unwrap_or("")) }
                    td { @if let Some(t) = r.updated_at { (time(t)) } }
                    @if write { td.actions { @if !r.builtin {
                        a href={ (role_path(&r.name)) "/edit" } aria-label={ "Edit role " (r.name) } { "Edit" }
                        a href={ (role_path(&r.name)) "/delete" } aria-label={ "Delete role " (r.name) } { "Delete" }
                    } } }
                } } }
            } }
            (pager(PATH, &q, total))
        },
    ))
}

fn description(f: &Pairs) -> String {
    field(f, "description")
}

/// `POST /console/roles`.
pub async fn create(
    State(state): State<AppState>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<Pairs>,
) -> Result<Response, ConsoleError> {
    let req = NewRole {
        name: field(&f, "name"),
        description: Some(description(&f)),
        permissions: fields(&f, "permissions"),
    };
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::roles::create(&rt, &caller, req, now()).await }).await?;
    Ok(done(PATH, "updated"))
}

/// `GET /console/roles/{name}/edit`.
pub async fn edit(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    let r = crate::app::roles::get(&state.rt, &c.principal, &name).await?;
    if !c.can(Permission::RolesWrite) {
        return Err(ConsoleError::forbidden(format!(
            "role {} may not manage roles",
            c.principal.role
        )));
    }
    if r.builtin {
        return Err(ConsoleError::bad_request(format!(
            "{} is a built-in role and cannot be changed",
            r.name
        )));
    }
    Ok(page(
        &c,
        "roles",
        &format!("Edit role {}", r.name),
        html! {
            form.stack method="post" action={ (role_path(&r.name)) "/edit" } {
                (csrf(&c))
                label { "Description" input name="description" maxlength="1024" value=(r.description); }
                (permission_boxes(&c, &r.permissions, "edit"))
                p.muted { "The new permissions apply at once to every user, key and token holding this role." }
                button.primary type="submit" { "Save" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `POST /console/roles/{name}/edit`: description and permissions (the ticked boxes).
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<Pairs>,
) -> Result<Response, ConsoleError> {
    let patch = RolePatch {
        description: Some(description(&f)),
        permissions: Some(fields(&f, "permissions")),
    };
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::roles::update(&rt, &caller, &name, patch, now()).await })
        .await?;
    Ok(done(PATH, "updated"))
}

/// `GET /console/roles/{name}/delete`: the confirmation.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    let r = crate::app::roles::get(&state.rt, &c.principal, &name).await?;
    Ok(page(
        &c,
        "roles",
        "Delete the role",
        html! {
            p { "Delete custom role " strong { (r.name) } "? Refused while a user, API key, key file or OAuth server mapping still uses it." }
            form method="post" action={ (role_path(&r.name)) "/delete" } {
                (csrf(&c))
                button.danger type="submit" { "Delete the role" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `POST /console/roles/{name}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::roles::delete(&rt, &caller, &name).await }).await?;
    Ok(done(PATH, "deleted"))
}
