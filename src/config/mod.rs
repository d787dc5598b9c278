//! Configuration: one TOML file, overridable by environment variables.
//!
//! Keys and defaults are those of `docs/configuration.md`. Any key can be
//! overridden with `KEYGATE__<SECTION>__<KEY>=<value>` (double underscores separate the
//! path; the value is read as TOML if it parses, else as a string), e.g.
//! `KEYGATE__SERVER__LISTEN=0.0.0.0:8443`. `--dev` fills in dev defaults for whatever the
//! file leaves out.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A duration written as `"90s"`; defined in [`crate::dur`] so that `tls::settings`
/// can use it without importing the configuration that imports it.
pub use crate::dur::Dur;

pub mod errors;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub backends: BTreeMap<String, BackendConfig>,
    pub rings: BTreeMap<String, RingConfig>,
    pub tokens: TokensConfig,
    pub sessions: SessionsConfig,
    pub users: UsersConfig,
    pub signing: SigningConfig,
    pub api_keys: ApiKeysConfig,
    pub key_files: KeyFilesConfig,
    pub jwks: JwksConfig,
    pub rotation: RotationConfig,
    pub log: LogConfig,
    /// HTTPS identity, mTLS mode and CA profiles (`src/tls/settings.rs`).
    pub tls: crate::tls::settings::TlsConfig,
    pub oauth: OAuthConfig,
    pub approvals: ApprovalsConfig,
    pub audit: AuditConfig,
    /// Which networks outbound fetches (JWKS, CRLs) may reach (`src/outbound.rs`).
    pub outbound: crate::outbound::OutboundConfig,
    /// Rate limits, hardware lanes, HTTP timeouts and connection caps (`src/limits/`).
    pub limits: crate::limits::LimitsConfig,
    /// Replicas and the change feed (`src/cluster/`).
    pub cluster: crate::cluster::ClusterConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub ops_listen: Option<String>,
    pub insecure_http: bool,
    /// Largest accepted request body in bytes (413 above it).
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8443".into(),
            ops_listen: None,
            insecure_http: false,
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: String,
    /// Connections in this process's shared pool. The change-feed applier (and, on
    /// PostgreSQL, its `LISTEN`) hold one more each (docs/deployment.md, "Connection
    /// budget").
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://var/keygate.db".into(),
            max_connections: crate::store::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_STORE_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!(
                "store.max_connections must be between 1 and {MAX_STORE_CONNECTIONS}"
            ));
        }
        Ok(())
    }
}

/// The largest `store.max_connections`: more than PostgreSQL's default server limit
/// (100) is a configuration mistake, not a tuning.
pub const MAX_STORE_CONNECTIONS: u32 = 100;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    Pkcs11(Pkcs11BackendConfig),
    Tpm(TpmBackendConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11BackendConfig {
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Overrides the profile's module path.
    pub module: Option<PathBuf>,
    pub token_label: String,
    pub pin_file: Option<PathBuf>,
    pub pin_env: Option<String>,
    /// Directory of profiles; default `hsm-profiles` beside the working directory, then
    /// the profiles built into the binary.
    pub profiles_dir: Option<PathBuf>,
    /// Overrides the profile's pool size.
    pub pool_size: Option<usize>,
}

fn default_profile() -> String {
    "softhsm2".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmBackendConfig {
    /// TCTI configuration: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, ...
    pub tcti: String,
    /// File holding the owner hierarchy's authorization value (trailing newline ignored).
    /// Without this and `owner_auth_env`, the owner auth is empty, as on most TPMs.
    pub owner_auth_file: Option<PathBuf>,
    /// Environment variable holding the owner authorization value.
    pub owner_auth_env: Option<String>,
    /// Child keys kept loaded in the TPM at once (default 2, which fits swtpm without a
    /// resource manager: 3 transient objects, one of them the storage primary).
    pub max_loaded: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    pub backend: String,
    pub algorithm: String,
    /// Who holds the `sign` grant on this ring for the signing service: principal names,
    /// or `role:<role>` for every principal with that role. super-admin and admin may
    /// always sign.
    #[serde(default)]
    pub signers: Vec<String>,
    /// Scheduled rotation of this ring; overrides `rotation.period`.
    pub rotation_period: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub access_ttl: Dur,
    pub refresh_ttl: Dur,
    pub max_custom_ttl: Dur,
    pub leeway: Dur,
    /// The ring whose active version signs access tokens.
    pub ring: String,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            issuer: None,
            audience: None,
            access_ttl: Dur(Duration::from_secs(15 * 60)),
            refresh_ttl: Dur(Duration::from_secs(24 * 3600)),
            max_custom_ttl: Dur(Duration::from_secs(24 * 3600)),
            leeway: Dur(Duration::from_secs(60)),
            ring: crate::keys::JWT_DEFAULT_RING.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    pub max_per_user: u32,
    /// How often expired sessions, refresh tokens, denylist entries and login-failure
    /// records are purged.
    pub purge_interval: Dur,
    /// Most rows one purge statement deletes, so a purge never holds the store for long.
    pub purge_batch: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            max_per_user: 5,
            purge_interval: Dur(Duration::from_secs(300)),
            purge_batch: 1000,
        }
    }
}

/// Local accounts: password hashing and login throttling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersConfig {
    /// Shortest accepted password, in characters.
    pub password_min_length: usize,
    /// argon2id memory cost in KiB (OWASP: 19456 with 2 iterations).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Most password checks hashing at once; further logins queue. 0 = number of CPUs.
    pub argon2_max_concurrent: usize,
    /// Failed logins of one name from one source address within `failed_login_window`
    /// that lock that name for that source (`docs/users.md`, "Login throttling").
    pub max_failed_logins: u32,
    /// Failed logins from one source address, whatever the names, that lock the source.
    pub max_failed_logins_per_source: u32,
    /// Failed logins of one name from all sources that lock the name for everyone.
    pub max_failed_logins_per_name: u32,
    pub failed_login_window: Dur,
    /// How long a first lockout refuses every password; each further one in a row lasts
    /// twice as long, up to `max_lockout`.
    pub lockout: Dur,
    /// The longest lockout.
    pub max_lockout: Dur,
}

impl Default for UsersConfig {
    fn default() -> Self {
        UsersConfig {
            password_min_length: 12,
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            argon2_max_concurrent: 0,
            max_failed_logins: 5,
            max_failed_logins_per_source: 20,
            max_failed_logins_per_name: 50,
            failed_login_window: Dur(Duration::from_secs(15 * 60)),
            lockout: Dur(Duration::from_secs(15 * 60)),
            max_lockout: Dur(Duration::from_secs(60 * 60)),
        }
    }
}

/// The signing service (`POST /api/v1/keys/{ring}/sign`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Lifetime of a signed token when the request gives no `expires_in`.
    pub default_ttl: Dur,
    /// Longest `expires_in` accepted.
    pub max_ttl: Dur,
    /// Lets callers put `iat`, `nbf`, `exp` and `jti` in `claims`.
    pub allow_caller_times: bool,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            default_ttl: Dur(Duration::from_secs(300)),
            max_ttl: Dur(Duration::from_secs(3600)),
            allow_caller_times: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    pub max_per_owner: u32,
    /// How often the server checks for API-key changes made by other processes (the CLI,
    /// other replicas). Changes made through the server itself apply at once.
    pub refresh_interval: Dur,
    /// How long the hardware MAC of a secret that authenticated is remembered, so repeat
    /// requests skip the hardware. `"0s"` computes the MAC in hardware on every request.
    /// Deletion and regeneration still apply at once (the stored MAC is checked each time).
    pub verify_cache_ttl: Dur,
    /// Most remembered secrets; the cache is emptied when it fills.
    pub verify_cache_max: usize,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        ApiKeysConfig {
            max_per_owner: 10,
            refresh_interval: Dur(Duration::from_millis(250)),
            verify_cache_ttl: Dur(Duration::from_secs(60)),
            verify_cache_max: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyFilesConfig {
    pub max: u32,
}

impl Default for KeyFilesConfig {
    fn default() -> Self {
        KeyFilesConfig { max: 10 }
    }
}

/// External OAuth 2.0 / OIDC servers (`[oauth]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// How long a fetched JWKS is used before it is fetched again.
    pub jwks_cache_ttl: Dur,
    /// Minimum time between refetches triggered by an unknown `kid`.
    pub jwks_refetch_interval: Dur,
    /// Allow `http://` JWKS URIs on loopback addresses. For tests only.
    pub allow_insecure_loopback_jwks: bool,
    /// Whole-request timeout of a JWKS fetch.
    pub jwks_fetch_timeout: Dur,
    /// Largest JWKS document accepted, in bytes.
    pub jwks_max_bytes: usize,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            jwks_cache_ttl: Dur(Duration::from_secs(600)),
            jwks_refetch_interval: Dur(Duration::from_secs(10)),
            allow_insecure_loopback_jwks: false,
            jwks_fetch_timeout: Dur(Duration::from_secs(5)),
            jwks_max_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    pub max_age: Dur,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            max_age: Dur(Duration::from_secs(300)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationConfig {
    pub publish_delay: Dur,
    /// Scheduled rotation of every JWT-signing ring: a new version is created once the
    /// active one has been active this long. Unset: rotation only on request.
    pub period: Option<Dur>,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            publish_delay: Dur(Duration::from_secs(600)),
            period: None,
        }
    }
}

/// Operations gated by M-of-N approvals; see [`crate::approval_rules`].
pub use crate::approval_rules::{ApprovalOperation, ApproverRule};

/// `[approvals]`: a default expiry, and `[approvals.<operation>]` per operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApprovalsConfig {
    /// How long a pending approval waits for its approvals before it expires.
    pub expire_after: Dur,
    #[serde(flatten)]
    pub operations: BTreeMap<String, ApprovalRuleConfig>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            expire_after: Dur(Duration::from_secs(24 * 3600)),
            operations: BTreeMap::new(),
        }
    }
}

/// `[approvals.<operation>]`; unset fields take the operation's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRuleConfig {
    /// Approvals needed from principals other than the requester; 0 runs at once.
    pub required: Option<u32>,
    /// Who may approve: `role:<name>` or `group:<name>`, one string or a list.
    pub approvers: Option<Approvers>,
    /// Overrides `approvals.expire_after` for this operation.
    pub ttl: Option<Dur>,
}

/// One approver rule or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Approvers {
    One(ApproverRule),
    Many(Vec<ApproverRule>),
}

/// An operation's effective approval rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    pub required: u32,
    pub approvers: Vec<ApproverRule>,
    pub ttl_secs: i64,
}

impl ApprovalsConfig {
    /// The effective rule for `op` (approver rules were parsed when the file loaded).
    pub fn rule(&self, op: ApprovalOperation) -> ApprovalRule {
        let c = self.operations.get(op.name()).cloned().unwrap_or_default();
        ApprovalRule {
            required: c.required.unwrap_or_else(|| op.default_required()),
            approvers: match c.approvers {
                None => vec![ApproverRule::Role("super-admin".into())],
                Some(Approvers::One(s)) => vec![s],
                Some(Approvers::Many(v)) => v,
            },
            ttl_secs: c.ttl.unwrap_or(self.expire_after).secs(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.expire_after.0.is_zero() {
            return Err("approvals.expire_after must be positive".into());
        }
        for (op, c) in &self.operations {
            op.parse::<ApprovalOperation>()
                .map_err(|e| format!("approvals.{op}: {e}"))?;
            if c.ttl.is_some_and(|t| t.0.is_zero()) {
                return Err(format!("approvals.{op}.ttl must be positive"));
            }
            // Each entry parsed as it loaded; whether a named role exists is checked once
            // custom roles are loaded (`Runtime::open`).
            if matches!(&c.approvers, Some(Approvers::Many(v)) if v.is_empty()) {
                return Err(format!("approvals.{op}.approvers is empty"));
            }
        }
        Ok(())
    }
}

/// `[audit]`: the hash-chained audit log and its signed checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A checkpoint (the chain head signed by the `audit` ring) every this many entries.
    pub checkpoint_every: u64,
    /// ... and at least this often while entries are being added.
    pub checkpoint_interval: Dur,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: 100,
            checkpoint_interval: Dur(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `keygate=debug`. `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Config {
    /// Reads `path` (if any), applies `KEYGATE__*` overrides, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_layered(path, None)
    }

    /// Parses and validates a configuration file's text, without environment overrides.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: "(text)".into(),
            reason,
        };
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| invalid(e.to_string()))?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Like [`load`](Self::load), with `base` underneath the file: the file wins where it
    /// sets a key, `base` fills the rest (`--dev` uses this).
    pub fn load_layered(
        path: Option<&Path>,
        base: Option<toml::Table>,
    ) -> Result<Config, ConfigError> {
        let shown = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(defaults)".into());
        let mut value = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid {
                        path: shown.clone(),
                        reason: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        if let Some(mut base) = base {
            merge(&mut base, value);
            value = base;
        }
        apply_env_overrides(&mut value, std::env::vars());
        // Every unknown key and bad value at once, each by its path (`docs/configuration.md`).
        let config = errors::deserialize(value).map_err(|problems| ConfigError::Invalid {
            path: shown.clone(),
            reason: problems.join("; "),
        })?;
        config.validate().map_err(|reason| ConfigError::Invalid {
            path: shown,
            reason,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, ring) in &self.rings {
            ring.algorithm
                .parse::<crate::hardware::Algorithm>()
                .map_err(|e| format!("rings.{name}.algorithm: {e}"))?;
            if !self.backends.contains_key(&ring.backend) {
                return Err(format!(
                    "rings.{name}.backend = {:?}, but no [backends.{}] is configured",
                    ring.backend, ring.backend
                ));
            }
        }
        for (name, b) in &self.backends {
            if let BackendConfig::Pkcs11(p) = b {
                if p.pin_file.is_none() && p.pin_env.is_none() {
                    return Err(format!("backends.{name}: set pin_file or pin_env"));
                }
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(format!(
                "log.level {:?} is not a valid filter",
                self.log.level
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(format!(
                "log.format {:?}: expected \"text\" or \"json\"",
                self.log.format
            ));
        }
        if self.api_keys.refresh_interval.0.is_zero() {
            return Err("api_keys.refresh_interval must be positive".into());
        }
        self.cluster.validate(self.api_keys.refresh_interval.0)?;
        self.store.validate()?;
        if self.server.max_body_bytes == 0 {
            return Err("server.max_body_bytes must be positive".into());
        }
        self.approvals.validate()?;
        if self.audit.checkpoint_every == 0 || self.audit.checkpoint_interval.0.is_zero() {
            return Err(
                "audit.checkpoint_every and audit.checkpoint_interval must be positive".into(),
            );
        }
        for (name, period) in self
            .rings
            .iter()
            .filter_map(|(n, r)| {
                r.rotation_period
                    .map(|p| (format!("rings.{n}.rotation_period"), p))
            })
            .chain(
                self.rotation
                    .period
                    .map(|p| ("rotation.period".to_string(), p)),
            )
        {
            if period <= self.rotation.publish_delay {
                return Err(format!("{name} must be longer than rotation.publish_delay"));
            }
        }
        self.tls.validate()?;
        self.limits.validate()?;
        self.validate_tokens()
    }

    fn validate_tokens(&self) -> Result<(), String> {
        let t = &self.tokens;
        for (name, d) in [
            ("tokens.access_ttl", t.access_ttl),
            ("tokens.refresh_ttl", t.refresh_ttl),
            ("tokens.max_custom_ttl", t.max_custom_ttl),
            ("signing.default_ttl", self.signing.default_ttl),
            ("signing.max_ttl", self.signing.max_ttl),
            ("users.failed_login_window", self.users.failed_login_window),
            ("sessions.purge_interval", self.sessions.purge_interval),
        ] {
            if d.0.is_zero() {
                return Err(format!("{name} must be positive"));
            }
        }
        if t.leeway.secs() > 300 {
            return Err(
                "tokens.leeway is at most 5m; a larger skew needs fixing at the clock".into(),
            );
        }
        for (name, v) in [
            ("tokens.issuer", &t.issuer),
            ("tokens.audience", &t.audience),
        ] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(format!("{name} must not be empty"));
            }
        }
        if self.signing.default_ttl > self.signing.max_ttl {
            return Err("signing.default_ttl exceeds signing.max_ttl".into());
        }
        // A cache may hold the JWKS for max_age; a new key must reach every cache before it
        // signs, so it stays pending at least that long.
        if self.jwks.max_age > self.rotation.publish_delay {
            return Err(format!(
                "jwks.max_age ({}) exceeds rotation.publish_delay ({}): verifiers could meet a token signed by a key their cached JWKS does not hold yet",
                humantime::format_duration(self.jwks.max_age.0),
                humantime::format_duration(self.rotation.publish_delay.0)
            ));
        }
        if self.sessions.max_per_user == 0 {
            return Err("sessions.max_per_user must be at least 1".into());
        }
        if self.sessions.purge_batch == 0 {
            return Err("sessions.purge_batch must be at least 1".into());
        }
        crate::outbound::Policy::new(&self.outbound.allow, &self.outbound.deny, false)?;
        let u = &self.users;
        if u.password_min_length == 0 || u.password_min_length > 1024 {
            return Err("users.password_min_length must be between 1 and 1024".into());
        }
        if u.max_failed_logins == 0
            || u.max_failed_logins_per_source == 0
            || u.max_failed_logins_per_name == 0
        {
            return Err("users.max_failed_logins, max_failed_logins_per_source and max_failed_logins_per_name must be at least 1".into());
        }
        if u.max_lockout.0 < u.lockout.0 {
            return Err("users.max_lockout must be at least users.lockout".into());
        }
        if u.argon2_iterations == 0
            || u.argon2_parallelism == 0
            || u.argon2_memory_kib < 8 * u.argon2_parallelism
        {
            return Err("users.argon2_*: iterations and parallelism must be at least 1, and memory at least 8 KiB per lane".into());
        }
        for (name, ring) in &self.rings {
            for s in &ring.signers {
                // Whether a `role:` entry names an existing role is checked once custom
                // roles are loaded (`Runtime::open`).
                if s.strip_prefix("role:").is_some_and(|r| r.trim().is_empty())
                    || s.trim().is_empty()
                {
                    return Err(format!("rings.{name}.signers holds an empty name"));
                }
            }
        }
        Ok(())
    }
}

/// Applies `KEYGATE__A__B=v` as `a.b = v`.
pub fn apply_env_overrides(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) {
    for (k, v) in vars {
        let Some(path) = k.strip_prefix("KEYGATE__") else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let value = format!("v = {v}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(v));
        set_path(table, &parts, value);
    }
}

/// Deep-merges `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) {
    match parts {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_md_example_configuration_parses() {
        let text = r#"
[server]
listen = "127.0.0.1:8443"
ops_listen = "127.0.0.1:9090"
insecure_http = false
[store]
url = "sqlite://var/keygate.db"
[backends.hsm]
type = "pkcs11"
profile = "softhsm2"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "keygate"
pin_file = "var/pin"
[backends.tpm]
type = "tpm"
tcti = "swtpm:host=127.0.0.1,port=2321"
[rings.jwt-default]
backend = "hsm"
algorithm = "ES256"
[tokens]
issuer = "https://keygate.example"
access_ttl = "15m"
max_custom_ttl = "24h"
leeway = "60s"
[sessions]
max_per_user = 5
[api_keys]
max_per_owner = 10
[jwks]
max_age = "5m"
[rotation]
publish_delay = "10m"
"#;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, text).unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.jwks.max_age.secs(), 300);
        assert_eq!(c.tokens.access_ttl.secs(), 900);
        assert!(matches!(c.backends.get("tpm"), Some(BackendConfig::Tpm(_))));
    }

    #[test]
    fn env_overrides_reach_nested_keys_and_keep_types() {
        let mut t = toml::Table::new();
        apply_env_overrides(
            &mut t,
            vec![
                (
                    "KEYGATE__SERVER__LISTEN".to_string(),
                    "0.0.0.0:1".to_string(),
                ),
                (
                    "KEYGATE__API_KEYS__MAX_PER_OWNER".to_string(),
                    "3".to_string(),
                ),
                ("OTHER".to_string(), "x".to_string()),
            ]
            .into_iter(),
        );
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:1");
        assert_eq!(c.api_keys.max_per_owner, 3);
    }

    #[test]
    fn a_ring_naming_a_missing_backend_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[rings.x]\nbackend = \"nope\"\nalgorithm = \"ES256\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("no [backends.nope]"), "{e}");
    }
}
