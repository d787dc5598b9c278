//! CA profiles managed through the API, and TLS reloads, for administrators.
//!
//! A profile is checked before it is stored: its CA bundle must hold only certificates
//! that parse and can be trust anchors (never a private key), and its CRL sources must be
//! well-formed. Profiles from the configuration file are listed but cannot be changed
//! here. Every change reloads the running TLS configuration, so it applies to the next
//! handshake.

use crate::config::Dur;
use crate::services::authz::{require, Permission};
use crate::services::{Principal, ServiceError};
use crate::store::ca_profiles::CaProfileRow;
use crate::tls::profiles::{check_ca_pem, CaProfile, CaSource};
use crate::tls::settings::{validate_profile_rules, PrincipalMatch, RevocationCheck, StaleCrl};
use crate::tls::state::{TlsReport, TlsState};
use crate::tls::TlsError;

/// A profile as the API shows it.
#[derive(Debug, Clone)]
pub struct ProfileInfo {
    pub profile: CaProfile,
    pub created_by: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// The fields of a new profile, or of a profile after a change.
#[derive(Debug, Clone)]
pub struct ProfileFields {
    pub ca_pem: String,
    pub revocation_check: RevocationCheck,
    pub crl_files: Vec<String>,
    pub crl_urls: Vec<String>,
    pub crl_refresh: Dur,
    pub stale_crl: StaleCrl,
    pub principal_match: PrincipalMatch,
}

fn spelling<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn check(name: &str, f: &ProfileFields) -> Result<(), ServiceError> {
    validate_profile_rules(
        name,
        f.revocation_check,
        f.crl_files.len(),
        &f.crl_urls,
        f.crl_refresh,
    )
    .map_err(ServiceError::Invalid)?;
    check_ca_pem(&f.ca_pem)?;
    Ok(())
}

fn row(name: &str, f: &ProfileFields, by: &str, created_at: i64, now: i64) -> CaProfileRow {
    CaProfileRow {
        name: name.to_string(),
        ca_pem: f.ca_pem.clone(),
        revocation_check: spelling(&f.revocation_check),
        crl_files: f.crl_files.clone(),
        crl_urls: f.crl_urls.clone(),
        crl_refresh_secs: f.crl_refresh.secs(),
        stale_crl: spelling(&f.stale_crl),
        principal_match: spelling(&f.principal_match),
        created_by: by.to_string(),
        created_at,
        updated_at: now,
    }
}

fn info(r: CaProfileRow) -> Result<ProfileInfo, ServiceError> {
    let (by, created, updated) = (r.created_by.clone(), r.created_at, r.updated_at);
    Ok(ProfileInfo {
        profile: CaProfile::from_row(r)?,
        created_by: Some(by),
        created_at: Some(created),
        updated_at: Some(updated),
    })
}

/// The fields of a stored profile, for a partial update.
pub fn fields_of(p: &CaProfile) -> Option<ProfileFields> {
    let CaSource::Pem(ca_pem) = &p.cas else {
        return None;
    };
    Some(ProfileFields {
        ca_pem: ca_pem.clone(),
        revocation_check: p.revocation_check,
        crl_files: p
            .crl_files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        crl_urls: p.crl_urls.clone(),
        crl_refresh: Dur(p.crl_refresh),
        stale_crl: p.stale_crl,
        principal_match: p.principal_match,
    })
}

/// Reloads the running TLS configuration after a change; a server without TLS has
/// nothing to reload. A failed reload is logged: the stored change stands and applies
/// once the problem is fixed.
async fn apply(tls: &TlsState) {
    if tls.active().is_none() {
        return;
    }
    if let Err(e) = tls.reload().await {
        tracing::error!(error = %e, "TLS reload after a CA-profile change failed");
    }
}

fn is_configured(tls: &TlsState, name: &str) -> bool {
    tls.config().ca_profiles.iter().any(|p| p.name == name)
}

pub async fn list(tls: &TlsState, caller: &Principal) -> Result<Vec<ProfileInfo>, ServiceError> {
    require(caller.role, Permission::KeysRead, "read CA profiles")?;
    let mut out: Vec<ProfileInfo> = tls
        .config()
        .ca_profiles
        .iter()
        .map(|c| ProfileInfo {
            profile: CaProfile::from(c),
            created_by: None,
            created_at: None,
            updated_at: None,
        })
        .collect();
    for r in tls.store().list_ca_profiles().await? {
        if !is_configured(tls, &r.name) {
            out.push(info(r)?);
        }
    }
    Ok(out)
}

pub async fn get(
    tls: &TlsState,
    caller: &Principal,
    name: &str,
) -> Result<ProfileInfo, ServiceError> {
    list(tls, caller)
        .await?
        .into_iter()
        .find(|p| p.profile.name == name)
        .ok_or_else(|| ServiceError::NotFound(format!("no CA profile {name:?}")))
}

pub async fn create(
    tls: &TlsState,
    caller: &Principal,
    name: &str,
    fields: ProfileFields,
    now: i64,
) -> Result<ProfileInfo, ServiceError> {
    require(caller.role, Permission::TlsAdmin, "manage CA profiles")?;
    check(name, &fields)?;
    if is_configured(tls, name) {
        return Err(ServiceError::Conflict(format!(
            "CA profile {name:?} exists in the configuration file"
        )));
    }
    let r = row(name, &fields, &caller.name, now, now);
    tls.store()
        .insert_ca_profile(&r)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ServiceError::Conflict(format!("CA profile {name:?} exists"))
            }
            other => other.into(),
        })?;
    tracing::info!(profile = %name, by = %caller.name, "created CA profile");
    apply(tls).await;
    info(r)
}

pub async fn update(
    tls: &TlsState,
    caller: &Principal,
    name: &str,
    change: impl FnOnce(ProfileFields) -> ProfileFields,
    now: i64,
) -> Result<ProfileInfo, ServiceError> {
    require(caller.role, Permission::TlsAdmin, "manage CA profiles")?;
    if is_configured(tls, name) {
        return Err(ServiceError::Conflict(format!(
            "CA profile {name:?} comes from the configuration file; change it there"
        )));
    }
    let current = tls
        .store()
        .get_ca_profile(name)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                ServiceError::NotFound(format!("no CA profile {name:?}"))
            }
            other => other.into(),
        })?;
    let created = (current.created_by.clone(), current.created_at);
    let fields = fields_of(&CaProfile::from_row(current)?)
        .ok_or_else(|| ServiceError::Internal("stored CA profile without PEM".into()))?;
    let fields = change(fields);
    check(name, &fields)?;
    let r = row(name, &fields, &created.0, created.1, now);
    tls.store().update_ca_profile(&r).await?;
    tracing::info!(profile = %name, by = %caller.name, "changed CA profile");
    apply(tls).await;
    info(r)
}

pub async fn delete(tls: &TlsState, caller: &Principal, name: &str) -> Result<(), ServiceError> {
    require(caller.role, Permission::TlsAdmin, "manage CA profiles")?;
    if is_configured(tls, name) {
        return Err(ServiceError::Conflict(format!(
            "CA profile {name:?} comes from the configuration file; remove it there"
        )));
    }
    tls.store()
        .delete_ca_profile(name)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => {
                ServiceError::NotFound(format!("no CA profile {name:?}"))
            }
            other => other.into(),
        })?;
    tracing::info!(profile = %name, by = %caller.name, "deleted CA profile");
    apply(tls).await;
    Ok(())
}

/// Reloads the certificate chain, the CA profiles and their CRLs.
pub async fn reload(tls: &TlsState, caller: &Principal) -> Result<TlsReport, ServiceError> {
    require(
        caller.role,
        Permission::KeysCreate,
        "reload the TLS configuration",
    )?;
    if tls.active().is_none() {
        return Err(TlsError::NotServing.into());
    }
    tracing::info!(by = %caller.name, "TLS reload requested");
    Ok(tls.reload().await?)
}

/// The TLS configuration in force.
pub fn status(tls: &TlsState, caller: &Principal) -> Result<TlsReport, ServiceError> {
    require(caller.role, Permission::KeysRead, "read the TLS status")?;
    tls.report().ok_or_else(|| TlsError::NotServing.into())
}
