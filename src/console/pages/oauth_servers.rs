//! The OAuth Servers page: Name, Issuer, Public Key (PEM or JWKS URI), User Account Name
//! (who registered it), OAuth ID, the role mapping and the JWKS cache state (last fetch
//! and its result, the `kid`s held, with a "fetch now" button); add and edit (PEM pasted
//! or uploaded as a file, a multipart form, or a JWKS URI), and delete through approvals
//! when configured (`approvals.delete-oauth-server`). Registration and changes go through
//! the same calls as `POST` and `PATCH /api/v1/oauth-servers`.

use crate::console::error::ConsoleError;
use crate::console::layout::{
    csrf, done, filter_form, notice, page, pager, paginate, time, ListQuery, NoFields,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::audit_log::RequestId;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::approvals::Submitted;
use crate::services::authz::Permission;
use crate::services::oauth_servers::jwks::CacheState;
use crate::services::oauth_servers::{NewOAuthServer, OAuthServer, OAuthServerPatch};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::BTreeMap;

const PATH: &str = "/console/oauth-servers";

/// `GET /console/oauth-servers`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let servers = crate::app::oauth_servers::list(&state.rt, &c.principal).await?;
    let caches = crate::app::oauth_servers::jwks_states(&state.rt, &c.principal)?;
    let (rows, total) = paginate(servers, &q, |s: &OAuthServer| {
        format!("{} {} {} {}", s.name, s.issuer, s.oauth_id, s.created_by)
    });
    let write = c.can(Permission::OAuthServersWrite);
    Ok(page(
        &c,
        "oauth-servers",
        "OAuth Servers",
        html! {
            (notice(q.done.as_deref()))
            @if write {
                details open[total == 0] {
                    summary { "Add an OAuth server" }
                    form.stack method="post" action=(PATH) enctype="multipart/form-data" {
                        (csrf(&c))
                        label { "Name" input name="name" required maxlength="128"; }
                        label { "Issuer (the tokens' iss, exactly)" input name="issuer" type="url" required; }
                        label { "Audience (the tokens' aud must contain it)" input name="audience" required; }
                        (key_fields(None))
                        label { "Role claim (default roles)" input name="role_claim"; }
                        label { "Role mapping, one IdP-value=role per line"
                            textarea name="role_mapping" rows="3" {} }
                        button.primary type="submit" { "Add" }
                    }
                }
            }
            (filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Issuer" }
                    th scope="col" { "Public Key" } th scope="col" { "User Account Name" }
                    th scope="col" { "OAuth ID" } th scope="col" { "Role mapping" }
                    th scope="col" { "JWKS cache" }
                    th scope="col" { "Created" }
                    @if write { th scope="col" { "Action" } }
                } }
                tbody { @for s in &rows { tr {
                    td { (s.name) } td { (s.issuer) }
                    td { @match (&s.public_key_pem, &s.jwks_uri) {
                        (Some(_), _) => "PEM",
                        (None, Some(u)) => { "JWKS " code { (u) } },
                        (None, None) => "",
                    } }
                    td { (s.created_by) }
                    td { code { (s.oauth_id) } }
                    td { @for (k, v) in &s.role_mapping { (k) " → " (v) br; } }
                    td { (cache_cell(caches.get(&s.oauth_id))) }
                    td { (time(s.created_at)) }
                    @if write { td.actions {
                        a href={ (PATH) "/" (s.oauth_id) "/edit" } aria-label={ "Edit " (s.name) } { "Edit" }
                        @if caches.contains_key(&s.oauth_id) {
                            form.inline method="post" action={ (PATH) "/" (s.oauth_id) "/fetch-jwks" } {
                                (csrf(&c))
                                button type="submit" aria-label={ "Fetch the JWKS of " (s.name) " now" } { "Fetch JWKS" }
                            }
                        }
                        a href={ (PATH) "/" (s.oauth_id) "/delete" } aria-label={ "Delete " (s.name) } { "Delete" }
                    } }
                } } }
            } }
            (pager(PATH, &q, total))
        },
    ))
}

/// The key-source fields of the add and edit forms: a PEM pasted or uploaded as a file,
/// or a JWKS URI (`current`: the server's URI, on the edit form).
fn key_fields(current: Option<&OAuthServer>) -> Markup {
    let uri = current.and_then(|s| s.jwks_uri.as_deref());
    let has_pem = current.is_some_and(|s| s.public_key_pem.is_some());
    html! {
        fieldset {
            legend { "Public Key: a PEM or a JWKS URI" }
            @if has_pem { p.muted { "Now: a PEM key. Leave the PEM fields empty to keep it." } }
            label { "PEM (paste the file's contents)"
                textarea name="public_key_pem" rows="6" {} }
            label { "or upload the PEM file"
                input name="public_key_file" type="file" accept=".pem,.crt,.pub,.key,text/plain"; }
            label { "or JWKS URI" input name="jwks_uri" type="url" value=[uri]; }
        }
    }
}

/// The JWKS cache column: when the keys held were fetched, their `kid`s, and the last
/// attempt when it failed (a failed fetch keeps the keys held).
fn cache_cell(state: Option<&CacheState>) -> Markup {
    html! {
        @match state {
            None => span.muted { "PEM: no cache" },
            Some(st) => {
                @match st.fetched_at {
                    Some(t) => { "Fetched " (time(t)) br; }
                    None => { span.muted { "Not fetched yet (at the first token, or Fetch JWKS)" } br; }
                }
                @if !st.kids.is_empty() {
                    "kids: "
                    @for (i, k) in st.kids.iter().enumerate() {
                        @if i > 0 { ", " }
                        @match k {
                            Some(k) => { code { (k) } }
                            None => { span.muted { "(no kid)" } }
                        }
                    }
                    br;
                } @else if st.fetched_at.is_some() {
                    span.warn { "no usable key" } br;
                }
                @if let Some(last) = &st.last_attempt {
                    @match &last.outcome {
                        Ok(n) => { "Last fetch " (time(last.at)) ": ok, " (n) " keys" }
                        Err(e) => { span.warn { "Last fetch " (time(last.at)) " failed: " (e) } }
                    }
                }
            }
        }
    }
}

/// The PEM of a form: pasted or uploaded, not both.
fn pem_of(pasted: String, uploaded: String) -> Result<Option<String>, ConsoleError> {
    match (some(pasted), some(uploaded)) {
        (Some(_), Some(_)) => Err(ConsoleError::bad_request(
            "give the PEM once: pasted or as a file, not both",
        )),
        (p, u) => Ok(p.or(u)),
    }
}

#[derive(Deserialize)]
pub struct CreateForm {
    name: String,
    issuer: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    public_key_pem: String,
    #[serde(default)]
    public_key_file: String,
    #[serde(default)]
    jwks_uri: String,
    #[serde(default)]
    role_claim: String,
    #[serde(default)]
    role_mapping: String,
}

fn some(s: String) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

fn mapping(text: &str) -> Result<BTreeMap<String, String>, ConsoleError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    ConsoleError::bad_request(format!("role mapping line {l:?} is not value=role"))
                })
        })
        .collect()
}

/// `POST /console/oauth-servers`.
pub async fn create(
    State(state): State<AppState>,
    ConsoleForm {
        console: c,
        form: mut f,
    }: ConsoleForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    let role_mapping = mapping(&f.role_mapping)?;
    let pem = pem_of(
        std::mem::take(&mut f.public_key_pem),
        std::mem::take(&mut f.public_key_file),
    )?;
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move {
        crate::app::oauth_servers::create(
            &rt,
            &caller,
            NewOAuthServer {
                name: f.name,
                issuer: f.issuer.trim().to_string(),
                public_key_pem: pem,
                jwks_uri: some(f.jwks_uri),
                audience: some(f.audience),
                audience_check: None,
                role_claim: some(f.role_claim),
                role_mapping,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(done(PATH, "updated"))
}

/// `GET /console/oauth-servers/{id}/edit`.
pub async fn edit(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let s = crate::app::oauth_servers::get(&state.rt, &c.principal, &id).await?;
    if !c.can(Permission::OAuthServersWrite) {
        return Err(ConsoleError::forbidden(format!(
            "role {} may not manage OAuth servers",
            c.principal.role
        )));
    }
    let mapping_text: String = s
        .role_mapping
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    Ok(page(
        &c,
        "oauth-servers",
        "Edit the OAuth server",
        html! {
            form.stack method="post" action={ (PATH) "/" (s.oauth_id) "/edit" } enctype="multipart/form-data" {
                (csrf(&c))
                label { "Name" input name="name" required maxlength="128" value=(s.name); }
                label { "Issuer (the tokens' iss, exactly)" input name="issuer" type="url" required value=(s.issuer); }
                label { "Audience (the tokens' aud must contain it)"
                    input name="audience" required[s.audience_check] value=[s.audience.as_deref()]; }
                (key_fields(Some(&s)))
                label { "Role claim" input name="role_claim" required value=(s.role_claim); }
                label { "Role mapping, one IdP-value=role per line"
                    textarea name="role_mapping" rows="3" { (mapping_text) } }
                p.muted { "A new issuer or key needs the right to act as every principal of this server; a changed key or mapping ends the tokens minted from its tokens." }
                button.primary type="submit" { "Save" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

#[derive(Deserialize)]
pub struct EditForm {
    name: String,
    issuer: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    public_key_pem: String,
    #[serde(default)]
    public_key_file: String,
    #[serde(default)]
    jwks_uri: String,
    #[serde(default)]
    role_claim: String,
    #[serde(default)]
    role_mapping: String,
}

/// `POST /console/oauth-servers/{id}/edit`: only the fields that changed are sent on, so
/// an unchanged issuer or key needs no more rights than a name change.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm {
        console: c,
        form: mut f,
    }: ConsoleForm<EditForm>,
) -> Result<Response, ConsoleError> {
    let role_mapping = mapping(&f.role_mapping)?;
    let pem = pem_of(
        std::mem::take(&mut f.public_key_pem),
        std::mem::take(&mut f.public_key_file),
    )?;
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move {
        let cur = crate::app::oauth_servers::get(&rt, &caller, &id).await?;
        let changed = |new: String, old: &str| Some(new).filter(|n| n != old);
        let jwks_uri = some(f.jwks_uri);
        let patch = OAuthServerPatch {
            name: changed(f.name.trim().to_string(), &cur.name),
            issuer: changed(f.issuer.trim().to_string(), &cur.issuer),
            jwks_uri: match (&pem, jwks_uri) {
                (None, Some(u)) if cur.jwks_uri.as_deref() != Some(u.as_str()) => Some(u),
                _ => None,
            },
            public_key_pem: pem,
            audience: match some(f.audience) {
                a if a == cur.audience => None,
                None if cur.audience_check => None,
                a => Some(a),
            },
            audience_check: None,
            role_claim: some(f.role_claim).filter(|r| *r != cur.role_claim),
            role_mapping: Some(role_mapping).filter(|m| *m != cur.role_mapping),
        };
        crate::app::oauth_servers::update(&rt, &caller, &id, patch, now()).await
    })
    .await?;
    Ok(done(PATH, "updated"))
}

/// `POST /console/oauth-servers/{id}/fetch-jwks`: fetch the JWKS now.
pub async fn fetch_jwks(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::oauth_servers::refresh_jwks(&rt, &caller, &id).await })
        .await?;
    Ok(done(PATH, "fetched"))
}

/// `GET /console/oauth-servers/{id}/delete`: the confirmation.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let s = crate::app::oauth_servers::get(&state.rt, &c.principal, &id).await?;
    Ok(page(
        &c,
        "oauth-servers",
        "Delete the OAuth server",
        html! {
            p { "Delete " strong { (s.name) } " (" (s.issuer) ")? Its tokens stop working; with approvals configured this becomes a request." }
            form method="post" action={ (PATH) "/" (s.oauth_id) "/delete" } {
                (csrf(&c))
                button.danger type="submit" { "Delete" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `POST /console/oauth-servers/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(id): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let submitted = detached(async move {
        let actor = crate::services::approvals::actor_of(&caller, rid);
        crate::app::oauth_servers::delete(&rt, &caller, &actor, &id, now()).await
    })
    .await?;
    Ok(match submitted {
        Submitted::Pending(_) => done(PATH, "requested"),
        Submitted::Done(_) => done(PATH, "deleted"),
    })
}
