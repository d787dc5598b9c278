//! The TLS configuration in force, swapped whole on reload.
//!
//! A reload (SIGHUP, `POST /api/v1/tls/reload`, a CA-profile change, or the CRL refresh
//! timer) reads the certificate chain and every CA profile again, builds a new rustls
//! `ServerConfig`, and swaps it in atomically. New handshakes use the new one; open
//! connections keep the one they started with, so nothing is dropped. A reload whose
//! certificate does not fit the hardware key changes nothing and reports why.

use super::identity::{self, CertSummary};
use super::profiles::{self, CaProfile, LoadContext, ProfileStatus};
use super::settings::MtlsMode;
use super::settings::TlsConfig;
use super::verifier::ProfileSet;
use super::TlsError;
use crate::clock::now;
use crate::keys::KeyRegistry;
use crate::store::Store;
use arc_swap::ArcSwapOption;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What a handshake needs: the rustls config and the profiles behind its verifier.
#[derive(Debug)]
pub struct Active {
    pub config: Arc<ServerConfig>,
    pub profiles: Option<Arc<ProfileSet>>,
}

/// The outcome of the last reload, for the admin endpoint and the logs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TlsReport {
    pub certificate: CertSummary,
    pub mtls: MtlsMode,
    pub profiles: Vec<ProfileStatus>,
    /// When this configuration was loaded (RFC 3339).
    pub loaded_at: String,
}

/// The TLS state of a running server: a service of its own, holding what a reload
/// reads (the store's CA profiles, the key registry's identity key, the `[tls]`
/// configuration). Empty until `serve` loads it (plain-HTTP servers and CLI commands
/// never do).
pub struct TlsState {
    active: ArcSwapOption<Active>,
    report: RwLock<Option<TlsReport>>,
    reload_lock: tokio::sync::Mutex<()>,
    /// The one outbound client (CRL URLs), under the `[outbound]` network policy.
    http: crate::outbound::Outbound,
    store: Store,
    keys: Arc<KeyRegistry>,
    config: TlsConfig,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("serving", &self.active.load().is_some())
            .finish()
    }
}

/// The crypto provider of every TLS config keygate builds: aws-lc-rs, whose TLS 1.2
/// suites are all ECDHE (forward secret) and whose TLS 1.3 suites are forward secret by
/// design.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsState {
    pub fn new(
        store: Store,
        keys: Arc<KeyRegistry>,
        config: TlsConfig,
        http: crate::outbound::Outbound,
    ) -> TlsState {
        TlsState {
            active: ArcSwapOption::empty(),
            report: RwLock::new(None),
            reload_lock: tokio::sync::Mutex::new(()),
            http,
            store,
            keys,
            config,
        }
    }

    /// The store holding the CA profiles made through the API.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The `[tls]` configuration this state serves.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// The configuration for the next handshake, if this server serves TLS.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.active.load_full()
    }

    pub fn report(&self) -> Option<TlsReport> {
        self.report.read().ok().and_then(|r| r.clone())
    }

    /// Every CA profile: the configuration's, then the store's.
    pub async fn profiles(&self) -> Result<Vec<CaProfile>, TlsError> {
        let mut out: Vec<CaProfile> = self
            .config
            .ca_profiles
            .iter()
            .map(CaProfile::from)
            .collect();
        for row in self.store.list_ca_profiles().await? {
            if out.iter().any(|p| p.name == row.name) {
                tracing::warn!(profile = %row.name, "a stored CA profile has the name of a configured one; the configured one wins");
                continue;
            }
            out.push(CaProfile::from_row(row)?);
        }
        Ok(out)
    }

    /// Builds the configuration from the certificate file and the CA profiles and swaps
    /// it in. On error nothing changes.
    pub async fn reload(&self) -> Result<TlsReport, TlsError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let cfg = &self.config;
        let (certified, certificate) = identity::certified_key(&self.keys, &cfg.cert_file)?;
        let provider = provider();
        let mut statuses = Vec::new();
        let profiles = if cfg.mtls == MtlsMode::Off {
            None
        } else {
            let ctx = LoadContext {
                provider: provider.clone(),
                http: self.http.clone(),
                crl_max_bytes: cfg.crl_max_bytes,
                crl_fetch_timeout: cfg.crl_fetch_timeout.0,
                now: now(),
            };
            let mut loaded = Vec::new();
            for p in self.profiles().await? {
                let l = profiles::load(&p, &ctx).await;
                statuses.push(l.status.clone());
                loaded.push(l);
            }
            Some(Arc::new(ProfileSet::new(
                loaded,
                cfg.mtls,
                provider.clone(),
            )))
        };
        let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match &profiles {
            Some(set) => set.clone(),
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Invalid(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.active.store(Some(Arc::new(Active {
            config: Arc::new(config),
            profiles,
        })));
        let report = TlsReport {
            certificate,
            mtls: cfg.mtls,
            profiles: statuses,
            loaded_at: crate::clock::rfc3339(now()),
        };
        if let Ok(mut r) = self.report.write() {
            *r = Some(report.clone());
        }
        tracing::info!(subject = %report.certificate.subject, serial = %report.certificate.serial,
            not_after = %report.certificate.not_after, mtls = ?report.mtls,
            profiles = report.profiles.len(), "TLS configuration loaded");
        Ok(report)
    }

    /// Reloads every `interval` (the shortest `crl_refresh` of the profiles), so CRLs
    /// stay fresh without a restart.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let interval = tls
                    .active()
                    .and_then(|a| a.profiles.clone())
                    .and_then(|p| p.profiles().iter().map(|l| l.refresh).min())
                    .unwrap_or(Duration::from_secs(300))
                    .max(Duration::from_secs(1));
                tokio::time::sleep(interval).await;
                if let Err(e) = tls.reload().await {
                    tracing::error!(error = %e, "scheduled TLS reload failed; the previous configuration stays in force");
                }
            }
        });
    }
}
