//! The Administration API Key page (key files): role picker, Add with a description and
//! an optional passphrase, **Save and Download** of the key file, Regenerate (the old
//! file stops working), delete, and the count against `key_files.max`. The file is the
//! API's own (`docs/key-files.md`), sent as a download and never rendered in a page.

use crate::console::error::ConsoleError;
use crate::console::layout::{
    csrf, done, filter_form, notice, page, pager, paginate, time, ListQuery, NoFields,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::authz::{Permission, Role};
use crate::services::key_files::{KeyFile, KeyFileDocument, NewKeyFile, Rekey};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use secrecy::SecretString;
use serde::Deserialize;

const PATH: &str = "/console/key-files";

fn download(doc: KeyFileDocument) -> Result<Response, ConsoleError> {
    let name = format!("keygate-{}.json", doc.file.access_id);
    let mut resp = crate::http::routes::key_files::file_response(StatusCode::OK, doc)?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .map_err(|_| ConsoleError::internal("key file name is not a header value"))?;
    resp.headers_mut()
        .insert(header::CONTENT_DISPOSITION, disposition);
    Ok(resp)
}

fn passphrase(s: String) -> Option<SecretString> {
    Some(s).filter(|p| !p.is_empty()).map(SecretString::from)
}

/// `GET /console/key-files`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let files = crate::app::key_files::list(&state.rt, &c.principal).await?;
    let count = files.len();
    let max = state.rt.config.key_files.max;
    let (rows, total) = paginate(files, &q, |f: &KeyFile| {
        format!(
            "{} {} {} {}",
            f.access_id, f.customer_name, f.description, f.role
        )
    });
    let write = c.can(Permission::KeyFilesWrite);
    Ok(page(
        &c,
        "key-files",
        "Administration API Key",
        html! {
            (notice(q.done.as_deref()))
            p { strong { (count) " of " (max) } " key files in use (key_files.max)." }
            @if write && (count as u64) < u64::from(max) {
                details open[count == 0] {
                    summary { "Add a key file" }
                    form.stack method="post" action=(PATH) {
                        (csrf(&c))
                        label for="kf-role" { "Role" }
                        select id="kf-role" name="role" required {
                            @for r in Role::ALL.into_iter().filter(|r| c.principal.role.manages(*r)) {
                                option value=(r.name()) selected[r == Role::Admin] { (r.name()) }
                            }
                        }
                        label { "Description" input name="description" required maxlength="1024"; }
                        label { "Passphrase (optional, 12 characters or more; encrypts the private key in the file)"
                            input name="passphrase" type="password" autocomplete="new-password"; }
                        button.primary type="submit" { "Save and Download" }
                    }
                }
            }
            (filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "accessID" } th scope="col" { "Description" }
                    th scope="col" { "Role" } th scope="col" { "Algorithm" }
                    th scope="col" { "Created" } th scope="col" { "Last used" }
                    @if write { th scope="col" { "Actions" } }
                } }
                tbody { @for f in &rows { tr {
                    td { code { (f.access_id) } }
                    td { (f.description) }
                    td { (f.role.name()) }
                    td { (format!("{:?}", f.algorithm)) }
                    td { (time(f.created_at)) }
                    td { @match f.last_used_at { Some(t) => (time(t)), None => span.muted { "never" } } }
                    @if write { td.actions {
                        a href={ (PATH) "/" (f.access_id) "/regenerate" } aria-label={ "Regenerate " (f.access_id) } { "Regenerate" }
                        a href={ (PATH) "/" (f.access_id) "/delete" } aria-label={ "Delete " (f.access_id) } { "Delete" }
                    } }
                } } }
            } }
            (pager(PATH, &q, total))
        },
    ))
}

#[derive(Deserialize)]
pub struct CreateForm {
    role: String,
    description: String,
    #[serde(default)]
    passphrase: String,
}

/// `POST /console/key-files`: creates the file and downloads it.
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
    let doc = detached(async move {
        crate::app::key_files::create(
            &rt,
            &caller,
            NewKeyFile {
                description: f.description,
                role: Some(role),
                customer_name: None,
                passphrase: passphrase(f.passphrase),
                public_key_pem: None,
                algorithm: None,
            },
            now(),
        )
        .await
    })
    .await?;
    download(doc)
}

async fn confirm(
    state: &AppState,
    c: &Console,
    id: &str,
    action: &'static str,
) -> Result<Markup, ConsoleError> {
    let f = crate::app::key_files::get(&state.rt, &c.principal, id).await?;
    let regenerate = action == "regenerate";
    Ok(page(
        c,
        "key-files",
        if regenerate {
            "Regenerate the key file"
        } else {
            "Delete the key file"
        },
        html! {
            p { "Key file " code { (f.access_id) } " (" (f.description) ", " (f.role.name()) "): "
                "the current file and every token made with it stop working at once." }
            form.stack method="post" action={ (PATH) "/" (f.access_id) "/" (action) } {
                (csrf(c))
                @if regenerate {
                    label { "Passphrase for the new file (optional)"
                        input name="passphrase" type="password" autocomplete="new-password"; }
                    button.primary type="submit" { "Regenerate, Save and Download" }
                } @else {
                    button.danger type="submit" { "Delete" }
                }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `GET /console/key-files/{id}/regenerate`.
pub async fn confirm_regenerate(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    confirm(&state, &c, &id, "regenerate").await
}

/// `GET /console/key-files/{id}/delete`.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    confirm(&state, &c, &id, "delete").await
}

#[derive(Deserialize)]
pub struct RegenerateForm {
    #[serde(default)]
    passphrase: String,
}

/// `POST /console/key-files/{id}/regenerate`: the new file, downloaded.
pub async fn regenerate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<RegenerateForm>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let doc = detached(async move {
        crate::app::key_files::regenerate(
            &rt,
            &caller,
            &id,
            Rekey {
                passphrase: passphrase(f.passphrase),
                public_key_pem: None,
                algorithm: None,
            },
            now(),
        )
        .await
    })
    .await?;
    download(doc)
}

/// `POST /console/key-files/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::key_files::delete(&rt, &caller, &id).await }).await?;
    Ok(done(PATH, "deleted"))
}
