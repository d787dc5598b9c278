//! The Users page: list (with groups), create with a password and role, delete with
//! confirmation. Through [`crate::app::users`], so the role rules (who may manage whom,
//! approvals for approver roles) are the API's.

use crate::console::error::ConsoleError;
use crate::console::layout::{
    csrf, done, filter_form, notice, page, pager, paginate, time, ListQuery, NoFields,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::authz::{Permission, Role};
use crate::services::users::NewUser;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use secrecy::SecretString;
use serde::Deserialize;

const PATH: &str = "/console/users";

/// `GET /console/users`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let users = crate::app::users::list(&state.rt, &c.principal).await?;
    let (rows, total) = paginate(users, &q, |(u, g)| {
        format!("{} {} {}", u.username, u.role, g.join(" "))
    });
    let write = c.can(Permission::UsersWrite);
    Ok(page(
        &c,
        "users",
        "Users",
        html! {
            (notice(q.done.as_deref()))
            @if write {
                details {
                    summary { "Add a user" }
                    form.stack method="post" action=(PATH) {
                        (csrf(&c))
                        label { "Username" input name="username" required maxlength="256" autocomplete="off"; }
                        label { "Password" input name="password" type="password" required autocomplete="new-password"; }
                        label for="user-role" { "Role" }
                        select id="user-role" name="role" required {
                            @for r in Role::ALL.into_iter().filter(|r| c.principal.role.manages(*r)) {
                                option value=(r.name()) selected[r == Role::ReadOnly] { (r.name()) }
                            }
                        }
                        button.primary type="submit" { "Add" }
                    }
                }
            }
            (filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Username" } th scope="col" { "Role" }
                    th scope="col" { "Groups" } th scope="col" { "Password" }
                    th scope="col" { "Created" }
                    @if write { th scope="col" { "Action" } }
                } }
                tbody { @for (u, groups) in &rows { tr {
                    td { (u.username) } td { (u.role.name()) } td { (groups.join(", ")) }
                    td { @if u.has_password { "set" } @else { span.muted { "none" } } }
                    td { (time(u.created_at)) }
                    @if write { td {
                        a href={ (PATH) "/" (u.username) "/delete" } aria-label={ "Delete user " (u.username) } { "Delete" }
                    } }
                } } }
            } }
            (pager(PATH, &q, total))
        },
    ))
}

#[derive(Deserialize)]
pub struct CreateForm {
    username: String,
    password: SecretString,
    role: String,
}

/// `POST /console/users`.
pub async fn create(
    State(state): State<AppState>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    let role = f
        .role
        .parse::<Role>()
        .map_err(|_| ConsoleError::bad_request("no such role"))?;
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move {
        crate::app::users::create(
            &rt,
            &caller,
            NewUser {
                username: f.username.trim().to_string(),
                password: Some(f.password),
                role,
                groups: Vec::new(),
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(done(PATH, "updated"))
}

/// `GET /console/users/{name}/delete`: the confirmation.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    let (u, _) = crate::app::users::get(&state.rt, &c.principal, &name).await?;
    Ok(page(
        &c,
        "users",
        "Delete the user",
        html! {
            p { "Delete user " strong { (u.username) } " (" (u.role.name()) ")? Their sessions end and the API keys they own are deleted." }
            form method="post" action={ (PATH) "/" (u.username) "/delete" } {
                (csrf(&c))
                button.danger type="submit" { "Delete" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `POST /console/users/{name}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::users::delete(&rt, &caller, &name, now()).await }).await?;
    Ok(done(PATH, "deleted"))
}
