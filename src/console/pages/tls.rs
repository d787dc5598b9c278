//! The TLS & CA profiles page: the serving certificate's summary and the mTLS mode as
//! `GET /api/v1/tls` reports them ([`crate::app::ca_profiles::status`]); the CA profiles
//! (list with filter and pagination: CA source, revocation check, CRL sources, and the
//! result of the last load of their CRLs); and, for a role with `tls:admin`, adding a
//! profile (CA bundle pasted or uploaded as a PEM file) and deleting one added through
//! the API, as `POST` and `DELETE /api/v1/ca-profiles` do (docs/tls.md). Profiles from
//! the configuration file are shown, and changed in the file only.

use crate::app::ca_profiles::{ProfileFields, ProfileInfo};
use crate::console::error::ConsoleError;
use crate::console::layout::{
    csrf, done, filter_form, form_urlencoded_component, notice, page, pager, paginate, time,
    ListQuery, NoFields,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::authz::Permission;
use crate::tls::profiles::{CaSource, ProfileStatus};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

const PATH: &str = "/console/tls";

/// A JSON value as text: strings bare, lists one per line, objects as `key: value`.
fn show(v: &Value) -> Markup {
    html! {
        @match v {
            Value::String(s) => (s),
            Value::Null => span.muted { "none" },
            Value::Array(items) => { @for i in items { (show(i)) br; } },
            Value::Object(m) => { @for (k, x) in m { strong { (k) ": " } (show(x)) br; } },
            other => (other.to_string()),
        }
    }
}

/// An enum's configuration spelling (`crl`, `fail-closed`, `san-dns`, ...).
fn spelling<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The configuration value `s` of field `what`.
fn parse<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, ConsoleError> {
    serde_json::from_value(Value::String(s.trim().to_string()))
        .map_err(|_| ConsoleError::bad_request(format!("{what}: {s:?} is not one of the choices")))
}

fn select(id: &str, name: &str, choices: &[&str]) -> Markup {
    html! {
        select id=(id) name=(name) {
            @for (i, v) in choices.iter().enumerate() { option value=(v) selected[i == 0] { (v) } }
        }
    }
}

/// The profile's CRL sources and the result of their last load.
fn crl_cell(p: &ProfileInfo, status: Option<&ProfileStatus>) -> Markup {
    let pr = &p.profile;
    html! {
        @for f in &pr.crl_files { "file " code { (f.display().to_string()) } br; }
        @for u in &pr.crl_urls { "URL " code { (u) } br; }
        @if pr.crl_files.is_empty() && pr.crl_urls.is_empty() { span.muted { "no CRL source" } br; }
        "refresh every " (humantime::format_duration(pr.crl_refresh).to_string()) br;
        @match status {
            Some(s) => {
                @if s.problems.is_empty() {
                    "Last load: " (s.state) ", " (s.crls) " CRLs in force"
                } @else {
                    span.warn { "Last load: " (s.state) ", " (s.crls) " CRLs in force; " (s.problems.join("; ")) }
                }
            }
            None => span.muted { "not loaded (mTLS off, or not serving TLS)" },
        }
    }
}

/// `GET /console/tls`.
pub async fn status(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let report = match crate::app::ca_profiles::status(&state.rt.tls, &c.principal) {
        Ok(r) => Some(r),
        Err(crate::services::ServiceError::Forbidden(m)) => return Err(ConsoleError::forbidden(m)),
        Err(_) => None,
    };
    let profiles = crate::app::ca_profiles::list(&state.rt.tls, &c.principal).await?;
    let (rows, total) = paginate(profiles, &q, |p: &ProfileInfo| {
        format!(
            "{} {} {}",
            p.profile.name,
            p.profile.source,
            p.profile.crl_urls.join(" ")
        )
    });
    let statuses: Vec<ProfileStatus> = report
        .as_ref()
        .map(|r| r.profiles.clone())
        .unwrap_or_default();
    let write = c.can(Permission::TlsAdmin);
    let head = match &report {
        Some(r) => {
            let v = serde_json::to_value(r)
                .map_err(|_| ConsoleError::internal("the TLS report did not serialize"))?;
            html! {
                p { "mTLS mode: " strong { (show(&v["mtls"])) } ". Loaded " (show(&v["loaded_at"])) "." }
                h2 { "Certificate" }
                div.table-wrap { table { tbody {
                    @if let Some(m) = v["certificate"].as_object() {
                        @for (k, x) in m { tr { th scope="row" { (k) } td { (show(x)) } } }
                    }
                } } }
            }
        }
        None => html! { p.muted { "Not serving TLS: no certificate, and mTLS is off." } },
    };
    Ok(page(
        &c,
        "tls",
        "TLS & CA profiles",
        html! {
            (notice(q.done.as_deref()))
            (head)
            h2 { "CA profiles" }
            p.muted { "A CA profile admits client certificates (mTLS) issued by its CAs, checked against its CRLs." }
            @if write {
                details {
                    summary { "Add a CA profile" }
                    form.stack method="post" action=(PATH) enctype="multipart/form-data" {
                        (csrf(&c))
                        label { "Name" input name="name" required maxlength="64"; }
                        fieldset {
                            legend { "CA certificates (PEM)" }
                            label { "Paste the bundle" textarea name="ca_pem" rows="6" {} }
                            label { "or upload the PEM file" input name="ca_file" type="file" accept=".pem,.crt,text/plain"; }
                        }
                        label for="revocation-check" { "Revocation check" }
                        (select("revocation-check", "revocation_check", &["crl", "none"]))
                        label { "CRL URLs, one per line" textarea name="crl_urls" rows="2" {} }
                        label { "CRL refresh (e.g. 5m, 1h)" input name="crl_refresh" value="5m"; }
                        label for="stale-crl" { "When a CRL is stale or unreachable" }
                        (select("stale-crl", "stale_crl", &["fail-closed", "fail-open"]))
                        label for="principal-match" { "Certificate name that must equal the principal" }
                        (select("principal-match", "principal_match", &["none", "cn", "san-dns", "san-email", "san-uri"]))
                        button.primary type="submit" { "Add" }
                    }
                }
            }
            (filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Source" } th scope="col" { "CAs" }
                    th scope="col" { "Revocation" } th scope="col" { "CRL sources and last fetch" }
                    th scope="col" { "Principal match" } th scope="col" { "Created" }
                    @if write { th scope="col" { "Action" } }
                } }
                tbody { @for p in &rows { tr {
                    td { (p.profile.name) }
                    td { (p.profile.source) }
                    td { @match &p.profile.cas {
                        CaSource::Files(fs) => { @for f in fs { code { (f.display().to_string()) } br; } },
                        CaSource::Pem(pem) => { (pem.matches("-----BEGIN CERTIFICATE-----").count()) " certificates (PEM)" },
                    } }
                    td { (spelling(&p.profile.revocation_check)) br; span.muted { "stale CRL: " (spelling(&p.profile.stale_crl)) } }
                    td { (crl_cell(p, statuses.iter().find(|s| s.name == p.profile.name))) }
                    td { (spelling(&p.profile.principal_match)) }
                    td {
                        @if let Some(t) = p.created_at { (time(t)) br; }
                        (p.created_by.as_deref().unwrap_or("configuration file"))
                    }
                    @if write { td { @if p.profile.source == "api" {
                        a href={ (PATH) "/ca-profiles/" (form_urlencoded_component(&p.profile.name)) "/delete" }
                          aria-label={ "Delete CA profile " (p.profile.name) } { "Delete" }
                    } } }
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
    ca_pem: String,
    #[serde(default)]
    ca_file: String,
    revocation_check: String,
    #[serde(default)]
    crl_urls: String,
    #[serde(default)]
    crl_refresh: String,
    stale_crl: String,
    principal_match: String,
}

/// `POST /console/tls`: adds a CA profile.
pub async fn create(
    State(state): State<AppState>,
    ConsoleForm {
        console: c,
        form: f,
    }: ConsoleForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    let ca_pem = match (f.ca_pem.trim(), f.ca_file.trim()) {
        ("", "") => return Err(ConsoleError::bad_request("give the CA certificates (PEM)")),
        (p, "") | ("", p) => p.to_string(),
        _ => {
            return Err(ConsoleError::bad_request(
                "give the CA bundle once: pasted or as a file, not both",
            ))
        }
    };
    let crl_refresh = match f.crl_refresh.trim() {
        "" => crate::tls::settings::default_crl_refresh(),
        s => humantime::parse_duration(s)
            .map(crate::config::Dur)
            .map_err(|e| ConsoleError::bad_request(format!("CRL refresh {s:?}: {e}")))?,
    };
    let fields = ProfileFields {
        ca_pem,
        revocation_check: parse("revocation check", &f.revocation_check)?,
        crl_files: Vec::new(),
        crl_urls: f
            .crl_urls
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        crl_refresh,
        stale_crl: parse("stale CRL", &f.stale_crl)?,
        principal_match: parse("principal match", &f.principal_match)?,
    };
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let name = f.name.trim().to_string();
    detached(async move {
        crate::app::ca_profiles::create(&rt.tls, &caller, &name, fields, now()).await
    })
    .await?;
    Ok(done(PATH, "updated"))
}

/// `GET /console/tls/ca-profiles/{name}/delete`: the confirmation.
pub async fn confirm_delete(
    State(state): State<AppState>,
    c: Console,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    let p = crate::app::ca_profiles::get(&state.rt.tls, &c.principal, &name).await?;
    Ok(page(
        &c,
        "tls",
        "Delete the CA profile",
        html! {
            p { "Delete CA profile " strong { (p.profile.name) } "? Client certificates it admits are refused from the next handshake." }
            form method="post" action={ (PATH) "/ca-profiles/" (form_urlencoded_component(&p.profile.name)) "/delete" } {
                (csrf(&c))
                button.danger type="submit" { "Delete the CA profile" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    ))
}

/// `POST /console/tls/ca-profiles/{name}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConsoleForm { console: c, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move { crate::app::ca_profiles::delete(&rt.tls, &caller, &name).await }).await?;
    Ok(done(PATH, "deleted"))
}
