//! The `[tls]` configuration: the HTTPS identity's certificate file, the mTLS mode of the
//! main listener, and the CA profiles that client certificates are checked against.
//!
//! Kept beside the TLS code rather than in `config.rs` so the TLS rules (what a profile
//! must name, which combinations make sense) live with the code that applies them.

use crate::dur::Dur;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Whether the main listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// No client certificate is requested.
    #[default]
    Off,
    /// A certificate is requested and checked if the client presents one.
    Optional,
    /// Every client must present a certificate that validates against a CA profile.
    Required,
}

/// How a profile checks revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RevocationCheck {
    #[default]
    Crl,
    None,
}

/// What a profile does when a CRL is stale (past its nextUpdate), unreadable or
/// unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StaleCrl {
    /// Refuse the profile's clients until a fresh CRL loads.
    #[default]
    FailClosed,
    /// Log, and accept certificates whose revocation status is unknown.
    FailOpen,
}

/// Which certificate names must equal the authenticated principal, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PrincipalMatch {
    /// The certificate and the credentials are checked independently.
    #[default]
    None,
    /// The subject's common name must equal the principal.
    Cn,
    /// One of the certificate's DNS subject alternative names must equal the principal.
    SanDns,
    /// One of the certificate's email (rfc822Name) SANs must equal the principal.
    SanEmail,
    /// One of the certificate's URI SANs must equal the principal.
    SanUri,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mtls: MtlsMode,
    /// The certificate chain of the HTTPS identity, leaf first (written by `keygate tls
    /// init` or `keygate tls install-cert`).
    pub cert_file: PathBuf,
    /// Longest a client may take to complete its handshake.
    pub handshake_timeout: Dur,
    /// Largest CRL accepted from a file or URL, in bytes.
    pub crl_max_bytes: usize,
    /// Longest a CRL URL fetch may take.
    pub crl_fetch_timeout: Dur,
    pub ca_profiles: Vec<CaProfileConfig>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mtls: MtlsMode::Off,
            cert_file: PathBuf::from("var/tls/cert.pem"),
            handshake_timeout: Dur(Duration::from_secs(10)),
            crl_max_bytes: 10 * 1024 * 1024,
            crl_fetch_timeout: Dur(Duration::from_secs(10)),
            ca_profiles: Vec::new(),
        }
    }
}

/// One CA profile from the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaProfileConfig {
    pub name: String,
    pub ca_files: Vec<PathBuf>,
    #[serde(default)]
    pub revocation_check: RevocationCheck,
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    #[serde(default)]
    pub crl_urls: Vec<String>,
    #[serde(default = "default_crl_refresh")]
    pub crl_refresh: Dur,
    #[serde(default)]
    pub stale_crl: StaleCrl,
    #[serde(default)]
    pub principal_match: PrincipalMatch,
}

pub fn default_crl_refresh() -> Dur {
    Dur(Duration::from_secs(300))
}

/// Profile names appear in URLs and logs: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn validate_profile_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "CA profile name {name:?} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        ))
    }
}

/// Checks a CRL URL's shape: http or https only.
pub fn validate_crl_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(format!("CRL URL {url:?} must be http:// or https://")),
        Err(e) => Err(format!("CRL URL {url:?}: {e}")),
    }
}

/// Rules that hold for a profile from any source.
pub fn validate_profile_rules(
    name: &str,
    revocation: RevocationCheck,
    crl_files: usize,
    crl_urls: &[String],
    crl_refresh: Dur,
) -> Result<(), String> {
    validate_profile_name(name)?;
    for u in crl_urls {
        validate_crl_url(u)?;
    }
    if revocation == RevocationCheck::Crl && crl_files == 0 && crl_urls.is_empty() {
        return Err(format!(
            "CA profile {name:?}: revocation_check = \"crl\" needs crl_files or crl_urls (or set revocation_check = \"none\")"
        ));
    }
    if crl_refresh.0 < Duration::from_secs(1) {
        return Err(format!(
            "CA profile {name:?}: crl_refresh must be at least 1s"
        ));
    }
    Ok(())
}

impl TlsConfig {
    /// Checks what can be checked without reading files.
    pub fn validate(&self) -> Result<(), String> {
        if self.handshake_timeout.0.is_zero() || self.crl_fetch_timeout.0.is_zero() {
            return Err("tls.handshake_timeout and tls.crl_fetch_timeout must be positive".into());
        }
        if self.crl_max_bytes == 0 {
            return Err("tls.crl_max_bytes must be positive".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.ca_profiles {
            validate_profile_rules(
                &p.name,
                p.revocation_check,
                p.crl_files.len(),
                &p.crl_urls,
                p.crl_refresh,
            )
            .map_err(|e| format!("tls.ca_profiles: {e}"))?;
            if p.ca_files.is_empty() {
                return Err(format!(
                    "tls.ca_profiles {:?}: ca_files names no CA certificate",
                    p.name
                ));
            }
            if !seen.insert(p.name.clone()) {
                return Err(format!("tls.ca_profiles: {:?} appears twice", p.name));
            }
        }
        if self.mtls != MtlsMode::Off && self.ca_profiles.is_empty() {
            tracing::warn!(
                "tls.mtls is on but no [[tls.ca_profiles]] is configured; only profiles added through /api/v1/ca-profiles can admit clients"
            );
        }
        Ok(())
    }
}
