//! keygate's TLS over HTTP: the configuration in force, reloads, and CA profiles
//! (`/api/v1/tls`, `/api/v1/tls/reload`, `/api/v1/ca-profiles`), over
//! [`crate::app::ca_profiles`].

use crate::app::ca_profiles::{self, ProfileFields, ProfileInfo};
use crate::config::Dur;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::tls::profiles::CaSource;
use crate::tls::settings::{PrincipalMatch, RevocationCheck, StaleCrl};
use crate::tls::state::TlsReport;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A CA profile.
#[derive(Serialize, ToSchema)]
pub struct CaProfileView {
    pub name: String,
    /// `config` (from the configuration file, read-only here) or `api`.
    pub source: String,
    /// The CA certificates (PEM) of an `api` profile.
    pub ca_pem: Option<String>,
    /// The CA files of a `config` profile.
    pub ca_files: Vec<String>,
    pub revocation_check: RevocationCheck,
    pub crl_files: Vec<String>,
    pub crl_urls: Vec<String>,
    /// How often CRLs are reloaded, e.g. `5m`.
    pub crl_refresh: String,
    pub stale_crl: StaleCrl,
    pub principal_match: PrincipalMatch,
    pub created_by: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<ProfileInfo> for CaProfileView {
    fn from(i: ProfileInfo) -> Self {
        let p = i.profile;
        let (ca_pem, ca_files) = match p.cas {
            CaSource::Pem(pem) => (Some(pem), Vec::new()),
            CaSource::Files(f) => (None, f.iter().map(|f| f.display().to_string()).collect()),
        };
        CaProfileView {
            name: p.name,
            source: p.source.into(),
            ca_pem,
            ca_files,
            revocation_check: p.revocation_check,
            crl_files: p
                .crl_files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            crl_urls: p.crl_urls,
            crl_refresh: humantime::format_duration(p.crl_refresh).to_string(),
            stale_crl: p.stale_crl,
            principal_match: p.principal_match,
            created_by: i.created_by,
            created_at: i.created_at.map(rfc3339),
            updated_at: i.updated_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCaProfile {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// One or more CA certificates (PEM). A private key anywhere in it is refused.
    pub ca_pem: String,
    /// `crl` (default) or `none`.
    pub revocation_check: Option<RevocationCheck>,
    /// CRL files on the server (PEM or DER).
    pub crl_files: Option<Vec<String>>,
    /// CRL URLs (http or https).
    pub crl_urls: Option<Vec<String>>,
    /// Default `5m`.
    #[schema(value_type = Option<String>)]
    pub crl_refresh: Option<String>,
    /// `fail-closed` (default) or `fail-open`.
    pub stale_crl: Option<StaleCrl>,
    /// `none` (default), `cn`, `san-dns`, `san-email` or `san-uri`.
    pub principal_match: Option<PrincipalMatch>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCaProfile {
    pub ca_pem: Option<String>,
    pub revocation_check: Option<RevocationCheck>,
    pub crl_files: Option<Vec<String>>,
    pub crl_urls: Option<Vec<String>>,
    #[schema(value_type = Option<String>)]
    pub crl_refresh: Option<String>,
    pub stale_crl: Option<StaleCrl>,
    pub principal_match: Option<PrincipalMatch>,
}

fn duration(s: Option<String>) -> Result<Option<Dur>, ApiError> {
    s.map(|s| {
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| ApiError::bad_request(format!("crl_refresh {s:?}: {e}")))
    })
    .transpose()
}

/// Adds a CA profile; it applies to the next handshake.
#[utoipa::path(post, path = "/api/v1/ca-profiles", tag = "tls", request_body = CreateCaProfile,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = CaProfileView),
              (status = 400, description = "Certificates that do not parse, a private key, bad CRL sources", body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, description = "Name taken", body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateCaProfile>,
) -> Result<(StatusCode, Json<CaProfileView>), ApiError> {
    let fields = ProfileFields {
        ca_pem: req.ca_pem,
        revocation_check: req.revocation_check.unwrap_or_default(),
        crl_files: req.crl_files.unwrap_or_default(),
        crl_urls: req.crl_urls.unwrap_or_default(),
        crl_refresh: duration(req.crl_refresh)?
            .unwrap_or_else(crate::tls::settings::default_crl_refresh),
        stale_crl: req.stale_crl.unwrap_or_default(),
        principal_match: req.principal_match.unwrap_or_default(),
    };
    let rt = state.rt.clone();
    let p =
        detached(
            async move { ca_profiles::create(&rt.tls, &caller, &req.name, fields, now()).await },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

/// Lists CA profiles, from the configuration file and from the API.
#[utoipa::path(get, path = "/api/v1/ca-profiles", tag = "tls",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [CaProfileView]), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<CaProfileView>>, ApiError> {
    let all = ca_profiles::list(&state.rt.tls, &caller).await?;
    Ok(Json(all.into_iter().map(CaProfileView::from).collect()))
}

/// One CA profile.
#[utoipa::path(get, path = "/api/v1/ca-profiles/{name}", tag = "tls",
    params(("name" = String, Path, description = "Profile name")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = CaProfileView), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<CaProfileView>, ApiError> {
    Ok(Json(
        ca_profiles::get(&state.rt.tls, &caller, &name)
            .await?
            .into(),
    ))
}

/// Changes a CA profile added through the API.
#[utoipa::path(patch, path = "/api/v1/ca-profiles/{name}", tag = "tls", request_body = UpdateCaProfile,
    params(("name" = String, Path, description = "Profile name")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = CaProfileView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem),
              (status = 409, description = "The profile comes from the configuration file", body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateCaProfile>,
) -> Result<Json<CaProfileView>, ApiError> {
    let refresh = duration(req.crl_refresh)?;
    let rt = state.rt.clone();
    let p = detached(async move {
        ca_profiles::update(
            &rt.tls,
            &caller,
            &name,
            move |mut f| {
                if let Some(v) = req.ca_pem {
                    f.ca_pem = v;
                }
                if let Some(v) = req.revocation_check {
                    f.revocation_check = v;
                }
                if let Some(v) = req.crl_files {
                    f.crl_files = v;
                }
                if let Some(v) = req.crl_urls {
                    f.crl_urls = v;
                }
                if let Some(v) = refresh {
                    f.crl_refresh = v;
                }
                if let Some(v) = req.stale_crl {
                    f.stale_crl = v;
                }
                if let Some(v) = req.principal_match {
                    f.principal_match = v;
                }
                f
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(Json(p.into()))
}

/// Deletes a CA profile added through the API.
#[utoipa::path(delete, path = "/api/v1/ca-profiles/{name}", tag = "tls",
    params(("name" = String, Path, description = "Profile name")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "The profile comes from the configuration file", body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { ca_profiles::delete(&rt.tls, &caller, &name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The TLS configuration in force: certificate, mTLS mode, CA profiles and their state.
#[utoipa::path(get, path = "/api/v1/tls", tag = "tls",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = TlsReport), (status = 401, body = Problem),
              (status = 403, body = Problem),
              (status = 409, description = "The server runs with --insecure-http", body = Problem)))]
pub async fn status(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<TlsReport>, ApiError> {
    Ok(Json(ca_profiles::status(&state.rt.tls, &caller)?))
}

/// Reloads the certificate chain, the CA profiles and their CRLs without a restart (like
/// SIGHUP). Open connections are not affected.
#[utoipa::path(post, path = "/api/v1/tls/reload", tag = "tls",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = TlsReport), (status = 401, body = Problem),
              (status = 403, body = Problem),
              (status = 409, description = "The certificate does not fit the hardware key, or the server runs with --insecure-http", body = Problem)))]
pub async fn reload(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<TlsReport>, ApiError> {
    let rt = state.rt.clone();
    Ok(Json(
        detached(async move { ca_profiles::reload(&rt.tls, &caller).await }).await?,
    ))
}
