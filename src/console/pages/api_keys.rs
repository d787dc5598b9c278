//! The API Keys page: list (Name, API Key hint, Description, User Account Name, role,
//! Created Date, Expiry Date), create (the secret shown once, with a copy button), edit
//! of description and role (a role change asks for confirmation), regenerate and delete
//! (each asks for confirmation). Every change goes through [`crate::app::api_keys`].

use crate::console::error::ConsoleError;
use crate::console::layout::{
    self, csrf, done, filter_form, notice, page, pager, paginate, time, ListQuery,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::audit_log::RequestId;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::api_keys::{ApiKey, ApiKeyPatch, NewApiKey};
use crate::services::authz::{Permission, Role};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const PATH: &str = "/console/api-keys";

/// The roles `c` may give a key (the server checks again).
fn assignable(c: &Console) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| c.principal.role.manages(*r))
        .collect()
}

fn role_select(c: &Console, id: &str, current: Option<Role>) -> Markup {
    html! {
        select id=(id) name="role" required {
            @for r in assignable(c) {
                option value=(r.name()) selected[current == Some(r)] { (r.name()) }
            }
        }
    }
}

/// `GET /console/api-keys`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let keys = crate::app::api_keys::list(&state.rt, &c.principal).await?;
    let (rows, total) = paginate(keys, &q, |k: &ApiKey| {
        format!(
            "{} {} {} {} {}",
            k.name, k.description, k.owner, k.role, k.hint
        )
    });
    let write = c.can(Permission::ApiKeysWrite);
    Ok(page(
        &c,
        "api-keys",
        "API Keys",
        html! {
            (notice(q.done.as_deref()))
            @if write {
                details open[total == 0] {
                    summary { "Add an API key" }
                    form.stack method="post" action=(PATH) {
                        (csrf(&c))
                        label { "Name" input name="name" required maxlength="128"; }
                        label { "Description" input name="description" maxlength="1024"; }
                        label for="new-role" { "Role" }
                        (role_select(&c, "new-role", Some(Role::ReadOnly)))
                        label { "User Account Name (empty: you)" input name="owner" maxlength="256"; }
                        label { "Expiry Date (empty: one year)" input name="expires" type="date"; }
                        button.primary type="submit" { "Add" }
                    }
                }
            }
            (filter_form(PATH, &q))
            div.table-wrap {
                table {
                    caption.muted { "API keys you may see" }
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "API Key" }
                        th scope="col" { "Description" }
                        th scope="col" { "User Account Name" }
                        th scope="col" { "Role" }
                        th scope="col" { "Created Date" }
                        th scope="col" { "Expiry Date" }
                        @if write { th scope="col" { "Actions" } }
                    } }
                    tbody {
                        @for k in &rows {
                            tr {
                                td { (k.name) }
                                td { code title="Only the last characters are kept in view" { "••••" (k.hint) } }
                                td { (k.description) }
                                td { (k.owner) }
                                td { (k.role.name()) }
                                td { (time(k.created_at)) }
                                td { (time(k.expires_at)) }
                                @if write {
                                    td.actions {
                                        a href={ (PATH) "/" (k.id) "/edit" } aria-label={ "Edit " (k.name) } { "Edit" }
                                        a href={ (PATH) "/" (k.id) "/regenerate" } aria-label={ "Regenerate " (k.name) } { "Regenerate" }
                                        a href={ (PATH) "/" (k.id) "/delete" } aria-label={ "Delete " (k.name) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (pager(PATH, &q, total))
        },
    ))
}

/// The page that shows a secret, once.
fn secret_page(c: &Console, title: &str, key: &ApiKey, secret: &SecretString) -> Markup {
    page(
        c,
        "api-keys",
        title,
        html! {
            div.secret-box role="status" {
                p { "The secret of " strong { (key.name) } " is shown this once; keygate keeps only its MAC. Store it now." }
                p { code.secret id="new-secret" { (secret.expose_secret()) } }
                button type="button" data-copy="new-secret" hidden { "Copy" }
            }
            p { a href=(PATH) { "Back to API Keys" } }
        },
    )
}

fn parse_date(s: &str) -> Result<i64, ConsoleError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), &fmt)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| ConsoleError::bad_request("the expiry date must be YYYY-MM-DD"))
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: String,
    #[serde(default)]
    description: String,
    role: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    expires: String,
}

fn role_of(name: &str) -> Result<Role, ConsoleError> {
    name.parse::<Role>()
        .map_err(|_| ConsoleError::bad_request(format!("no role {name:?}")))
}

/// `POST /console/api-keys`.
pub async fn create(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    let role = role_of(&f.role)?;
    let expires_at = match f.expires.trim() {
        "" => None,
        d => Some(parse_date(d)?),
    };
    let owner = Some(f.owner.trim().to_string()).filter(|o| !o.is_empty());
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let created = detached(async move {
        let actor = crate::services::approvals::actor_of(&caller, rid);
        crate::app::api_keys::create(
            &rt,
            &caller,
            &actor,
            NewApiKey {
                name: f.name,
                description: Some(f.description).filter(|d| !d.is_empty()),
                role,
                owner,
                expires_at,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(match created {
        crate::app::api_keys::KeyCreation::Created(key, secret) => {
            secret_page(&c, "API key created", &key, &secret).into_response()
        }
        crate::app::api_keys::KeyCreation::Pending(_) => done(PATH, "requested"),
    })
}

/// `GET /console/api-keys/{id}/edit`.
pub async fn edit(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let k = crate::app::api_keys::get(&state.rt, &c.principal, &id).await?;
    Ok(page(
        &c,
        "api-keys",
        "Edit API key",
        html! {
            p { "Key " strong { (k.name) } " of " (k.owner) "." }
            form.stack method="post" action={ (PATH) "/" (k.id) "/edit" } {
                (csrf(&c))
                label { "Description" input name="description" value=(k.description) maxlength="1024"; }
                label for="edit-role" { "Role" }
                (role_select(&c, "edit-role", Some(k.role)))
                button.primary type="submit" { "Save" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

#[derive(Deserialize)]
pub struct EditForm {
    description: String,
    role: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /console/api-keys/{id}/edit`: a role change is shown for confirmation first.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<EditForm>,
) -> Result<Response, ConsoleError> {
    let role = role_of(&f.role)?;
    let current = crate::app::api_keys::get(&state.rt, &c.principal, &id).await?;
    if role != current.role && f.confirm != "yes" {
        return Ok(page(
            &c,
            "api-keys",
            "Confirm the role change",
            html! {
                p { "Change the role of " strong { (current.name) } " from "
                    strong { (current.role.name()) } " to " strong { (role.name()) } "?" }
                form.stack method="post" action={ (PATH) "/" (current.id) "/edit" } {
                    (csrf(&c))
                    input type="hidden" name="description" value=(f.description);
                    input type="hidden" name="role" value=(role.name());
                    input type="hidden" name="confirm" value="yes";
                    button.primary type="submit" { "Change the role" }
                }
                p { a href=(PATH) { "Cancel" } }
            },
        )
        .into_response());
    }
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move {
        crate::app::api_keys::update(
            &rt,
            &caller,
            &id,
            ApiKeyPatch {
                name: None,
                description: Some(f.description),
                role: (role != current.role).then_some(role),
            },
        )
        .await
    })
    .await?;
    Ok(done(PATH, "updated"))
}

/// A confirmation page for `action` (regenerate, delete) of key `id`.
async fn confirm(
    state: &AppState,
    c: &Console,
    id: &str,
    action: &str,
    text: &str,
    danger: bool,
) -> Result<Markup, ConsoleError> {
    let k = crate::app::api_keys::get(&state.rt, &c.principal, id).await?;
    Ok(page(
        c,
        "api-keys",
        text,
        html! {
            p { (text) ": " strong { (k.name) } " (" (k.owner) ", " (k.role.name()) ")?" }
            @if action == "regenerate" { p { "The current secret stops working at once." } }
            @if action == "delete" { p { "The key stops working at once." } }
            form method="post" action={ (PATH) "/" (k.id) "/" (action) } {
                (csrf(c))
                button type="submit" class=(if danger { "danger" } else { "primary" }) { (text) }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `GET /console/api-keys/{id}/regenerate`.
pub async fn confirm_regenerate(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    confirm(
        &state,
        &c,
        &id,
        "regenerate",
        "Regenerate the API key",
        false,
    )
    .await
}

/// `GET /console/api-keys/{id}/delete`.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    confirm(&state, &c, &id, "delete", "Delete the API key", true).await
}

/// `POST /console/api-keys/{id}/regenerate`.
pub async fn regenerate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<layout::NoFields>,
) -> Result<Markup, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let (key, secret) =
        detached(async move { crate::app::api_keys::regenerate(&rt, &caller, &id).await }).await?;
    Ok(secret_page(&c, "API key regenerated", &key, &secret))
}

/// `POST /console/api-keys/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<layout::NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::api_keys::delete(&rt, &caller, &id).await }).await?;
    Ok(done(PATH, "deleted"))
}
