//! Assembling a running keygate from its configuration: store, hardware backends, key
//! rings, services. `serve` and every admin command start here, so they all see the same
//! state and fail the same way on a wrong PIN, a missing token or an unreadable store.

use crate::config::{BackendConfig, Config};
use crate::hardware::executor::HardwareExecutor;
use crate::hardware::pkcs11::{Pkcs11Backend, Pkcs11Settings};
use crate::hardware::profile::HsmProfile;
use crate::hardware::tpm::{TpmBackend, TpmSettings};
use crate::hardware::{Algorithm, Backend};
use crate::keys::{KeyRegistry, KeysError, API_KEY_MAC_RING, JWT_DEFAULT_RING};
use crate::services::api_keys::ApiKeyService;
use crate::services::groups::GroupService;
use crate::services::key_files::KeyFileService;
use crate::services::oauth_servers::OAuthServerService;
use crate::services::roles::RoleService;
use crate::services::tokens::{TokenService, TokenSettings};
use crate::services::users::UserService;
use crate::store::Store;
use secrecy::SecretString;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("store: {0}")]
    Store(String),
    #[error("backend {name:?}: {reason}")]
    Backend { name: String, reason: String },
    #[error("key rings: {0}")]
    Keys(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Everything a request or command needs.
pub struct Runtime {
    pub config: Config,
    pub store: Store,
    pub keys: Arc<KeyRegistry>,
    pub api_keys: Arc<ApiKeyService>,
    pub tokens: Arc<TokenService>,
    pub users: Arc<UserService>,
    pub roles: Arc<RoleService>,
    pub key_files: Arc<KeyFileService>,
    pub oauth: Arc<OAuthServerService>,
    pub groups: Arc<GroupService>,
    pub audit: Arc<crate::services::audit::AuditService>,
    /// This process's name as a lease holder (scheduled rotation).
    pub instance_id: String,
    /// The TLS configuration in force; empty unless `serve` serves HTTPS.
    pub tls: Arc<crate::tls::state::TlsState>,
    /// Rate limits (`[limits]`).
    pub limits: Arc<crate::limits::Limits>,
    /// This replica's position in the change feed (`crate::cluster`).
    pub feed: Arc<crate::cluster::feed::Feed>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// Seconds since the epoch; see [`crate::clock`]. Services take `now` as a parameter.
pub use crate::clock::now;

fn read_pin(
    name: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<SecretString, StartupError> {
    let err = |reason: String| StartupError::Backend {
        name: name.to_string(),
        reason,
    };
    if let Some(var) = env {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return Ok(SecretString::from(v));
            }
        }
        if file.is_none() {
            return Err(err(format!("pin_env {var} is unset or empty")));
        }
    }
    match file {
        Some(f) => crate::dev::read_pin_file(f)
            .map_err(|e| err(format!("cannot read pin_file {}: {e}", f.display()))),
        None => Err(err("no pin_file or pin_env".into())),
    }
}

/// Connects one configured backend: module load, token, login (`keygate config check`
/// and `keygate restore` use it too).
pub(crate) fn connect_backend(
    name: &str,
    cfg: &BackendConfig,
) -> Result<(Arc<dyn Backend>, usize), StartupError> {
    let err = |reason: String| StartupError::Backend {
        name: name.to_string(),
        reason,
    };
    match cfg {
        BackendConfig::Pkcs11(p) => {
            // Only an explicitly configured directory may override the built-in profiles:
            // a profile names the module keygate loads, so it must not come from whatever
            // directory keygate happens to be started in.
            let mut profile = HsmProfile::load(p.profiles_dir.as_deref(), &p.profile)
                .map_err(|e| err(e.to_string()))?;
            if let Some(size) = p.pool_size {
                if size == 0
                    || size > crate::hardware::profile::MAX_POOL_SIZE
                    || (profile.quirks.max_sessions != 0 && size > profile.quirks.max_sessions)
                {
                    return Err(err(format!(
                        "pool_size {size} must be between 1 and {} (the profile's max_sessions, or {} when it states none)",
                        if profile.quirks.max_sessions == 0 { crate::hardware::profile::MAX_POOL_SIZE } else { profile.quirks.max_sessions },
                        crate::hardware::profile::MAX_POOL_SIZE
                    )));
                }
                profile.pool_size = size;
            }
            let module = p
                .module
                .clone()
                .or_else(|| profile.module.clone())
                .ok_or_else(|| {
                    err(format!(
                        "profile {} names no module; set `module`",
                        profile.name
                    ))
                })?;
            let pin = read_pin(name, p.pin_file.as_deref(), p.pin_env.as_deref())?;
            // Replicas starting together on one token (docs/deployment.md).
            let backend = crate::cluster::startup::retry_unavailable(|| {
                Pkcs11Backend::connect(Pkcs11Settings {
                    module: module.clone(),
                    token_label: p.token_label.clone(),
                    pin: pin.clone(),
                    profile: profile.clone(),
                })
            })
            .map_err(|e| err(e.to_string()))?;
            let size = backend.pool_size();
            Ok((Arc::new(backend), size))
        }
        BackendConfig::Tpm(t) => {
            let owner_auth = if t.owner_auth_file.is_some() || t.owner_auth_env.is_some() {
                let auth = read_pin(
                    name,
                    t.owner_auth_file.as_deref(),
                    t.owner_auth_env.as_deref(),
                )?;
                Some(zeroize::Zeroizing::new(
                    secrecy::ExposeSecret::expose_secret(&auth)
                        .as_bytes()
                        .to_vec(),
                ))
            } else {
                None
            };
            let max_loaded = t
                .max_loaded
                .unwrap_or(crate::hardware::tpm::DEFAULT_MAX_LOADED);
            if max_loaded == 0 {
                return Err(err("max_loaded must be at least 1".into()));
            }
            let backend = TpmBackend::new(TpmSettings {
                tcti: t.tcti.clone(),
                owner_auth,
                max_loaded,
            });
            // A TPM that is down must not stop the rings on other backends: report it and
            // go on; readyz shows it, and every call on its keys fails with 503 until it
            // answers.
            if let Err(e) = backend.connect() {
                tracing::error!(backend = %name, error = %e, "TPM backend is not reachable; its rings are unavailable until it is");
            }
            // One ESAPI context, one command stream: one pool thread.
            Ok((Arc::new(backend), 1))
        }
    }
}

/// Roles named by configuration (`role:<name>` approvers and signers) must exist, built-in
/// or custom; checked once the custom roles are loaded. An approval gate that is not
/// wired to its endpoint must not look configured.
fn check_role_names(config: &Config) -> Result<(), StartupError> {
    let mut named: Vec<(String, String)> = Vec::new();
    for op in crate::config::ApprovalOperation::ALL {
        for a in config.approvals.rule(op).approvers {
            if let crate::config::ApproverRule::Role(r) = a {
                named.push((format!("approvals.{op}.approvers"), r));
            }
        }
    }
    for (ring, rc) in &config.rings {
        for s in &rc.signers {
            if let Some(r) = s.strip_prefix("role:") {
                named.push((format!("rings.{ring}.signers"), r.to_string()));
            }
        }
    }
    for (key, role) in named {
        role.parse::<crate::services::authz::Role>()
            .map_err(|e| StartupError::Config(format!("{key}: {e}")))?;
    }
    Ok(())
}

impl Runtime {
    /// Opens the store and every backend, loads the key rings, and makes sure the rings
    /// keygate cannot work without (`api-key-mac`, `jwt-default`) exist.
    pub async fn open(config: Config) -> Result<Runtime, StartupError> {
        // Replicas starting together on one empty store migrate it once.
        let store =
            crate::cluster::startup::open_store(&config.store.url, config.store.max_connections)
                .await
                .map_err(|e| StartupError::Store(e.to_string()))?;
        // Read before any cache loads: changes made while they load are applied again.
        let feed = Arc::new(crate::cluster::feed::Feed::new(
            store
                .change_head()
                .await
                .map_err(|e| StartupError::Store(format!("reading the change feed: {e}")))?,
            config.cluster.max_staleness.0,
        ));
        // Custom roles first: every record below names its role.
        let roles = Arc::new(
            RoleService::new(store.clone())
                .await
                .map_err(|e| StartupError::Store(format!("loading roles: {e}")))?,
        );
        check_role_names(&config)?;
        if config.backends.is_empty() {
            return Err(StartupError::Config(
                "no [backends.*] configured (use --dev for a SoftHSM dev token)".into(),
            ));
        }
        let mut executors = HashMap::new();
        for (name, cfg) in &config.backends {
            let (n, c) = (name.clone(), cfg.clone());
            // Connecting blocks (module load, login): keep it off the async workers.
            let (backend, size) = tokio::task::spawn_blocking(move || connect_backend(&n, &c))
                .await
                .map_err(|e| StartupError::Backend {
                    name: name.clone(),
                    reason: e.to_string(),
                })??;
            let exec = HardwareExecutor::with_lanes(
                name,
                backend,
                size,
                config.limits.lane_for(size),
                config.limits.unauthenticated_queue,
            )
            .map_err(|e| StartupError::Backend {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            executors.insert(name.clone(), exec);
        }
        // Built-in rings go to the backend named `hsm` (the dev layout's), else the first
        // configured one by name; `[rings.<name>]` overrides either.
        let default_backend = if config.backends.contains_key("hsm") {
            "hsm".to_string()
        } else {
            config.backends.keys().next().cloned().unwrap_or_default()
        };
        // Replicas starting together on one PostgreSQL create the built-in rings once:
        // the others wait here, then load the rings the first one made (docs/deployment.md).
        let startup = store
            .startup_lock()
            .await
            .map_err(|e| StartupError::Store(format!("taking the start-up lock: {e}")))?;
        let keys = KeyRegistry::load(store.clone(), executors)
            .await
            .map_err(|e| StartupError::Keys(e.to_string()))?;
        let mut wanted: Vec<(String, Algorithm, String)> = vec![
            (
                API_KEY_MAC_RING.into(),
                Algorithm::HS256,
                default_backend.clone(),
            ),
            (
                JWT_DEFAULT_RING.into(),
                Algorithm::ES256,
                default_backend.clone(),
            ),
            // Signs approvals and audit checkpoints; never in the JWKS.
            (
                crate::services::audit::AUDIT_RING.into(),
                Algorithm::ES256,
                default_backend,
            ),
        ];
        for (name, ring) in &config.rings {
            let alg: Algorithm = ring.algorithm.parse().map_err(StartupError::Config)?;
            match wanted.iter_mut().find(|w| &w.0 == name) {
                Some(w) => {
                    w.1 = alg;
                    w.2 = ring.backend.clone();
                }
                None => wanted.push((name.clone(), alg, ring.backend.clone())),
            }
        }
        for (name, alg, backend) in wanted {
            if let Ok(v) = keys.active(&name) {
                if v.algorithm != alg || v.backend != backend {
                    tracing::warn!(ring = %name, configured_algorithm = %alg, configured_backend = %backend,
                        actual_algorithm = %v.algorithm, actual_backend = %v.backend,
                        "ring exists with another algorithm or backend; configuration does not change existing rings");
                }
            }
            match keys.ensure_ring(&name, alg, &backend, now()).await {
                Ok(true) => tracing::info!(ring = %name, "created missing key ring"),
                Ok(false) => {}
                // A configured ring on a backend that is down right now: keygate still
                // serves everything else; the ring can be created once the device answers.
                Err(KeysError::Hardware(e @ crate::hardware::HardwareError::Unavailable(_)))
                    if name != API_KEY_MAC_RING && name != config.tokens.ring =>
                {
                    tracing::error!(ring = %name, backend = %backend, error = %e,
                        "could not create the configured ring: its backend is unavailable; restart keygate or POST /api/v1/keys once it answers");
                }
                Err(KeysError::Hardware(e)) => {
                    return Err(StartupError::Keys(format!("creating ring {name}: {e}")))
                }
                Err(e) => return Err(StartupError::Keys(format!("ring {name}: {e}"))),
            }
        }
        startup.release().await;
        let keys = Arc::new(keys);
        let api_keys = Arc::new(
            ApiKeyService::new(
                store.clone(),
                keys.clone(),
                config.api_keys.max_per_owner,
                config.api_keys.verify_cache_ttl.secs(),
                config.api_keys.verify_cache_max,
            )
            .await
            .map_err(|e| StartupError::Store(format!("loading API keys: {e}")))?
            .with_failure_quota(config.limits.credential_failures),
        );
        let settings = TokenSettings::from_config(&config);
        match keys.active(&settings.ring) {
            Ok(v) if v.purpose == crate::keys::Purpose::Jwt => {}
            Ok(v) => {
                return Err(StartupError::Config(format!(
                    "tokens.ring {:?} is a {} ring; access tokens need a JWT-signing ring",
                    settings.ring,
                    v.purpose.name()
                )))
            }
            Err(_) => {
                return Err(StartupError::Config(format!(
                    "tokens.ring {:?} does not exist; add [rings.{}] or create it first",
                    settings.ring, settings.ring
                )))
            }
        }
        let key_files = Arc::new(
            KeyFileService::new(
                store.clone(),
                config.key_files.max,
                &settings.issuer,
                settings.leeway,
            )
            .await
            .map_err(|e| StartupError::Store(format!("loading key files: {e}")))?
            .with_failure_quota(config.limits.credential_failures),
        );
        let oauth = Arc::new(
            OAuthServerService::new(store.clone(), &config)
                .await
                .map_err(|e| match e {
                    crate::services::ServiceError::Invalid(m) => StartupError::Config(m),
                    e => StartupError::Store(format!("loading OAuth servers: {e}")),
                })?,
        );
        let approvers = Arc::new(crate::services::approvers::ApproverSets::new(
            store.clone(),
            &config.approvals,
        ));
        let signers = config
            .rings
            .iter()
            .map(|(k, v)| (k.clone(), v.signers.clone()))
            .collect();
        let groups = Arc::new(GroupService::new(store.clone(), approvers, signers));
        let tokens = Arc::new(
            TokenService::new(
                store.clone(),
                keys.clone(),
                api_keys.clone(),
                key_files.clone(),
                settings,
                now(),
            )
            .await
            .map_err(|e| StartupError::Store(format!("loading the token denylist: {e}")))?
            .with_failure_quota(config.limits.credential_failures),
        );
        tokens.connect_idps(oauth.clone());
        let users = Arc::new(
            UserService::new(store.clone(), &config.users)
                .await
                .map_err(|e| StartupError::Config(format!("users: {e}")))?,
        );
        let audit = Arc::new(crate::services::audit::AuditService::new(
            store.clone(),
            keys.clone(),
            config.audit.clone(),
        ));
        let limits =
            Arc::new(crate::limits::Limits::new(&config.limits).map_err(StartupError::Config)?);
        let tls = Arc::new(crate::tls::state::TlsState::new(
            store.clone(),
            keys.clone(),
            config.tls.clone(),
            crate::outbound::Outbound::new(
                &config.outbound,
                config.oauth.allow_insecure_loopback_jwks,
            )
            .map_err(StartupError::Config)?,
        ));
        Ok(Runtime {
            feed,
            limits,
            audit,
            instance_id: uuid::Uuid::new_v4().to_string(),
            config,
            store,
            keys,
            api_keys,
            tokens,
            users,
            roles,
            key_files,
            oauth,
            groups,
            tls,
        })
    }
}
