//! CA profiles: which CAs may issue client certificates, and how their revocation is
//! checked. A profile comes from the configuration (`[[tls.ca_profiles]]`) or from the
//! store (`/api/v1/ca-profiles`); both load the same way into a rustls-webpki client
//! verifier with the profile's CRLs.
//!
//! Failures never stop the server. A profile whose CA certificates do not load refuses
//! every client. A CRL that is missing, unreadable, malformed, unreachable or stale makes
//! a `fail-closed` profile refuse its clients, and a `fail-open` profile accept
//! certificates whose revocation status is unknown. Every failure is logged with the
//! profile's name.

use super::pem;
use super::settings::{CaProfileConfig, PrincipalMatch, RevocationCheck, StaleCrl};
use super::TlsError;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DistinguishedName, RootCertStore};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a profile's CA certificates come from.
#[derive(Debug, Clone)]
pub enum CaSource {
    Files(Vec<PathBuf>),
    Pem(String),
}

/// A CA profile from either source, before loading.
#[derive(Debug, Clone)]
pub struct CaProfile {
    pub name: String,
    /// `config` or `api`.
    pub source: &'static str,
    pub cas: CaSource,
    pub revocation_check: RevocationCheck,
    pub crl_files: Vec<PathBuf>,
    pub crl_urls: Vec<String>,
    pub crl_refresh: Duration,
    pub stale_crl: StaleCrl,
    pub principal_match: PrincipalMatch,
}

impl From<&CaProfileConfig> for CaProfile {
    fn from(c: &CaProfileConfig) -> Self {
        CaProfile {
            name: c.name.clone(),
            source: "config",
            cas: CaSource::Files(c.ca_files.clone()),
            revocation_check: c.revocation_check,
            crl_files: c.crl_files.clone(),
            crl_urls: c.crl_urls.clone(),
            crl_refresh: c.crl_refresh.0,
            stale_crl: c.stale_crl,
            principal_match: c.principal_match,
        }
    }
}

/// How a profile loaded, for the reload report and the logs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProfileStatus {
    pub name: String,
    /// `config` or `api`.
    pub source: String,
    /// `active`, or `refusing` when it admits no client until the problem is fixed.
    pub state: String,
    /// CRLs in force.
    pub crls: usize,
    /// What went wrong while loading, if anything.
    pub problems: Vec<String>,
}

/// A profile ready to verify client certificates.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub name: String,
    pub principal_match: PrincipalMatch,
    pub refresh: Duration,
    pub verifier: Arc<dyn ClientCertVerifier>,
    pub hints: Vec<DistinguishedName>,
    pub status: ProfileStatus,
}

/// What loading needs besides the profile.
#[derive(Debug, Clone)]
pub struct LoadContext {
    pub provider: Arc<rustls::crypto::CryptoProvider>,
    /// The outbound client (its network policy applies to CRL URLs).
    pub http: crate::outbound::Outbound,
    pub crl_max_bytes: usize,
    pub crl_fetch_timeout: std::time::Duration,
    pub now: i64,
}

/// Why a refusing profile refused. rustls prints it with `Debug`, so both forms are the
/// plain message.
struct ProfileRefuses(String);

impl std::fmt::Debug for ProfileRefuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for ProfileRefuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProfileRefuses {}

/// A verifier that admits nobody: a profile in this state logs why and refuses.
#[derive(Debug)]
struct Refusing {
    name: String,
    reason: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for Refusing {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // A certificate error (alert access_denied), carrying the reason for the log.
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(ProfileRefuses(format!(
                "CA profile {:?} refuses clients: {}",
                self.name, self.reason
            ))))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Reads at most `max` bytes of a file.
fn read_capped(path: &std::path::Path, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(buf)
}

/// Fetches a CRL over http(s) through the outbound client: its network policy, the
/// timeout, a size cap, up to 3 redirects.
pub async fn fetch_crl(
    http: &crate::outbound::Outbound,
    url: &str,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let limits = crate::outbound::Limits {
        timeout,
        max_bytes: max,
        follow_redirects: true,
    };
    http.get(url, "application/pkix-crl, */*", limits)
        .await
        .map_err(|e| e.to_string())
}

/// The CA certificates of a profile.
async fn ca_certificates(
    p: &CaProfile,
    max: usize,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    match &p.cas {
        CaSource::Pem(text) => pem::certificates(text.as_bytes(), "ca_pem"),
        CaSource::Files(files) => {
            let mut out = Vec::new();
            for f in files {
                let what = format!("CA file {}", f.display());
                let path = f.clone();
                let bytes = tokio::task::spawn_blocking(move || read_capped(&path, max))
                    .await
                    .map_err(|e| TlsError::Invalid(format!("{what}: {e}")))?
                    .map_err(|e| TlsError::Invalid(format!("{what}: {e}")))?;
                out.extend(pem::certificates(&bytes, &what)?);
            }
            Ok(out)
        }
    }
}

/// Parses CA certificates from a PEM bundle the way a profile will: at least one
/// certificate, every one parses and is usable as a trust anchor, no private key.
pub fn check_ca_pem(text: &str) -> Result<usize, TlsError> {
    let certs = pem::certificates(text.as_bytes(), "ca_pem")?;
    let mut roots = RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        roots.add(c.clone()).map_err(|e| {
            TlsError::Invalid(format!(
                "ca_pem: certificate {} is not usable as a trust anchor: {e}",
                i + 1
            ))
        })?;
    }
    Ok(certs.len())
}

/// Loads one profile. Never fails: problems are logged and recorded in the status, and
/// the profile refuses clients when its rules say it must.
pub async fn load(p: &CaProfile, ctx: &LoadContext) -> LoadedProfile {
    let mut problems = Vec::new();
    let refusing = |reason: String, mut problems: Vec<String>| {
        tracing::error!(profile = %p.name, reason = %reason, "CA profile refuses clients");
        problems.push(reason.clone());
        LoadedProfile {
            name: p.name.clone(),
            principal_match: p.principal_match,
            refresh: p.crl_refresh,
            verifier: Arc::new(Refusing {
                name: p.name.clone(),
                reason: reason.clone(),
                provider: ctx.provider.clone(),
            }),
            hints: Vec::new(),
            status: ProfileStatus {
                name: p.name.clone(),
                source: p.source.into(),
                state: "refusing".into(),
                crls: 0,
                problems,
            },
        }
    };
    let certs = match ca_certificates(p, ctx.crl_max_bytes).await {
        Ok(c) => c,
        Err(e) => return refusing(e.to_string(), problems),
    };
    let mut roots = RootCertStore::empty();
    for c in certs {
        if let Err(e) = roots.add(c) {
            return refusing(
                format!("a CA certificate is not usable as a trust anchor: {e}"),
                problems,
            );
        }
    }
    let hints = roots.subjects();
    let mut crls: Vec<CertificateRevocationListDer<'static>> = Vec::new();
    if p.revocation_check == RevocationCheck::Crl {
        let mut sources: Vec<(String, Result<Vec<u8>, String>)> = Vec::new();
        for f in &p.crl_files {
            let (path, max) = (f.clone(), ctx.crl_max_bytes);
            let read = tokio::task::spawn_blocking(move || read_capped(&path, max))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            sources.push((format!("CRL file {}", f.display()), read));
        }
        for u in &p.crl_urls {
            sources.push((
                format!("CRL URL {u}"),
                fetch_crl(&ctx.http, u, ctx.crl_max_bytes, ctx.crl_fetch_timeout).await,
            ));
        }
        for (what, bytes) in sources {
            let parsed = bytes
                .map_err(|e| format!("{what}: {e}"))
                .and_then(|b| pem::crl(&b, &what).map_err(|e| e.to_string()));
            match parsed {
                Ok(crl) => {
                    if let Some(next) = crl.next_update.filter(|n| *n <= ctx.now) {
                        let stale = format!(
                            "{what} (issuer {}) is stale: its nextUpdate passed {}s ago",
                            crl.issuer,
                            ctx.now - next
                        );
                        if p.stale_crl == StaleCrl::FailClosed {
                            return refusing(format!("{stale} (fail-closed)"), problems);
                        }
                        tracing::warn!(profile = %p.name, problem = %stale, "stale CRL; fail-open, still using it");
                        problems.push(stale);
                    }
                    crls.push(crl.der);
                }
                Err(e) if p.stale_crl == StaleCrl::FailClosed => {
                    return refusing(format!("{e} (fail-closed)"), problems)
                }
                Err(e) => {
                    tracing::warn!(profile = %p.name, problem = %e,
                        "CRL not loaded; fail-open, certificates it would cover have unknown revocation status and are accepted");
                    problems.push(e);
                }
            }
        }
    }
    let count = crls.len();
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ctx.provider.clone())
            .with_crls(crls);
    if p.revocation_check == RevocationCheck::Crl {
        builder = match p.stale_crl {
            // A CRL that goes stale between refreshes refuses from that moment on.
            StaleCrl::FailClosed => builder.enforce_revocation_expiration(),
            StaleCrl::FailOpen => builder.allow_unknown_revocation_status(),
        };
    }
    match builder.build() {
        Ok(verifier) => {
            for pr in &problems {
                tracing::warn!(profile = %p.name, problem = %pr, "CA profile loaded with a problem");
            }
            LoadedProfile {
                name: p.name.clone(),
                principal_match: p.principal_match,
                refresh: p.crl_refresh,
                verifier,
                hints,
                status: ProfileStatus {
                    name: p.name.clone(),
                    source: p.source.into(),
                    state: "active".into(),
                    crls: count,
                    problems,
                },
            }
        }
        Err(e) => refusing(format!("building the verifier: {e}"), problems),
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T, TlsError> {
    serde_json::from_value(serde_json::Value::String(v.to_string())).map_err(|_| {
        TlsError::Invalid(format!(
            "stored CA profile field {field} = {v:?} is invalid"
        ))
    })
}

impl CaProfile {
    /// A profile from its store row.
    pub fn from_row(r: crate::store::ca_profiles::CaProfileRow) -> Result<CaProfile, TlsError> {
        Ok(CaProfile {
            revocation_check: parse_enum("revocation_check", &r.revocation_check)?,
            stale_crl: parse_enum("stale_crl", &r.stale_crl)?,
            principal_match: parse_enum("principal_match", &r.principal_match)?,
            name: r.name,
            source: "api",
            cas: CaSource::Pem(r.ca_pem),
            crl_files: r.crl_files.into_iter().map(PathBuf::from).collect(),
            crl_urls: r.crl_urls,
            crl_refresh: Duration::from_secs(u64::try_from(r.crl_refresh_secs).unwrap_or(300)),
        })
    }
}
