//! The OAuth Servers page: Name, Issuer, Public Key (PEM or JWKS URI), User Account Name
//! (who registered it), OAuth ID and the role mapping; add (PEM pasted or uploaded into
//! the text box, or a JWKS URI), and delete through approvals when configured
//! (`approvals.delete-oauth-server`). Registration goes through the same service call as
//! `POST /api/v1/oauth-servers`.

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
use crate::services::oauth_servers::{NewOAuthServer, OAuthServer};
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
    let servers = state.rt.oauth.list(&c.principal).await?;
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
                    form.stack method="post" action=(PATH) {
                        (csrf(&c))
                        label { "Name" input name="name" required maxlength="128"; }
                        label { "Issuer (the tokens' iss, exactly)" input name="issuer" type="url" required; }
                        label { "Audience (the tokens' aud must contain it)" input name="audience" required; }
                        label { "Public Key: PEM (paste the file's contents)"
                            textarea name="public_key_pem" rows="6" {} }
                        label { "or JWKS URI" input name="jwks_uri" type="url"; }
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
                    td { (time(s.created_at)) }
                    @if write { td {
                        a href={ (PATH) "/" (s.oauth_id) "/delete" } aria-label={ "Delete " (s.name) } { "Delete" }
                    } }
                } } }
            } }
            (pager(PATH, &q, total))
        },
    ))
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
        form: f,
    }: ConsoleForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    let role_mapping = mapping(&f.role_mapping)?;
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move {
        rt.oauth
            .create(
                &caller,
                NewOAuthServer {
                    name: f.name,
                    issuer: f.issuer.trim().to_string(),
                    public_key_pem: some(f.public_key_pem),
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

/// `GET /console/oauth-servers/{id}/delete`: the confirmation.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let s = state.rt.oauth.get(&c.principal, &id).await?;
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
