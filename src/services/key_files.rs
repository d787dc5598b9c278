//! API key files: a client holds a private key and proves itself with short signed
//! assertions, so no shared secret ever crosses the wire twice.
//!
//! Why it exists: regulated clients often may not hold a bearer secret, but may hold a
//! key file. keygate keeps only the public key. The file (`{customerName, accessID,
//! description, accessKey, adminRestApiUrl}`) is returned once by create and regenerate;
//! the private key is generated in memory, encrypted under the caller's passphrase when
//! one is given, written into the response and zeroized with it.
//!
//! - **Permissions**: reading needs `key-files:read`; creating, changing, regenerating
//!   and deleting need `key-files:write` and a role that manages the file's role (current
//!   and new), the rule API keys follow.
//! - **Keys**: ES256 (P-256) by default, RS256 (RSA-2048) on request. Bring-your-own-key
//!   takes an SPKI `public_key_pem` (P-256, or RSA of 2048 to 4096 bits) and returns no
//!   `accessKey`.
//! - **Assertions** (`docs/key-files.md`, RFC 7523): a JWT signed by the file's key
//!   with `iss` = `sub` = accessID, `aud` = the file's `adminRestApiUrl` or the token
//!   endpoint URL, `exp` at most [`MAX_ASSERTION_LIFETIME`] after `iat`, and a `jti` that
//!   is spent on first use and remembered until the assertion expires.
//! - **Invalidation**: regenerate replaces the key and bumps the file's generation; every
//!   token minted with the file carries `kgk = kf:<accessID>:<generation>`, so deleting
//!   or regenerating the file ends those tokens at once.

use crate::cluster::snapshot::Snapshot;
use crate::hardware::{Algorithm, PublicKey};
use crate::services::authz::{self, Permission, Role};
use crate::services::tokens::jws;
use crate::services::{validate_text, AuthMethod, Principal, ServiceError};
use crate::store::key_files::KeyFileRow;
use crate::store::{Store, StoreError};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Longest accepted assertion lifetime (`exp - iat`), per `docs/key-files.md`.
pub const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// PBKDF2-HMAC-SHA256 iterations for encrypted `accessKey`s (OWASP 2023).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Shortest accepted passphrase, in characters.
pub const MIN_PASSPHRASE_LEN: usize = 12;
const MAX_PASSPHRASE_LEN: usize = 1024;
/// Longest accepted `jti`.
const MAX_JTI_LEN: usize = 256;

/// A key file's metadata, as list and get show it: never key material.
#[derive(Debug, Clone)]
pub struct KeyFile {
    pub access_id: String,
    pub customer_name: String,
    pub description: String,
    pub role: Role,
    pub algorithm: Algorithm,
    /// `generated` or `client`.
    pub key_source: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    generation: i64,
    public_key: Vec<u8>,
}

/// The file handed to the client by create and regenerate. `access_key` is the private
/// key PEM, zeroized on drop; `None` for bring-your-own-key files.
pub struct KeyFileDocument {
    pub file: KeyFile,
    pub access_key: Option<Zeroizing<String>>,
    pub admin_rest_api_url: String,
}

impl std::fmt::Debug for KeyFileDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFileDocument")
            .field("file", &self.file)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// A create request (already parsed from JSON).
#[derive(Debug, Default)]
pub struct NewKeyFile {
    pub description: String,
    pub role: Option<Role>,
    pub customer_name: Option<String>,
    pub passphrase: Option<SecretString>,
    pub public_key_pem: Option<String>,
    pub algorithm: Option<Algorithm>,
}

/// What regenerate takes: a new passphrase or a new client key, else a fresh pair.
#[derive(Debug, Default)]
pub struct Rekey {
    pub passphrase: Option<SecretString>,
    pub public_key_pem: Option<String>,
    pub algorithm: Option<Algorithm>,
}

#[derive(Debug, Default)]
pub struct KeyFilePatch {
    pub description: Option<String>,
    pub role: Option<Role>,
}

/// Why an assertion was refused (logged and counted; callers see one 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionRefusal {
    Malformed,
    UnknownFile,
    Algorithm,
    Signature,
    Claims,
    Lifetime,
    Audience,
    Expired,
    Replayed,
    /// Too many refused assertions for this accessID lately (`limits.credential_failures`).
    Locked,
}

impl AssertionRefusal {
    pub fn label(self) -> &'static str {
        match self {
            AssertionRefusal::Malformed => "malformed",
            AssertionRefusal::UnknownFile => "unknown_file",
            AssertionRefusal::Algorithm => "algorithm",
            AssertionRefusal::Signature => "signature",
            AssertionRefusal::Claims => "claims",
            AssertionRefusal::Lifetime => "lifetime",
            AssertionRefusal::Audience => "audience",
            AssertionRefusal::Expired => "expired",
            AssertionRefusal::Replayed => "replayed",
            AssertionRefusal::Locked => "locked",
        }
    }
}

pub struct KeyFileService {
    store: Store,
    max: u32,
    leeway: i64,
    admin_rest_api_url: String,
    token_endpoint: String,
    /// accessID → generation of every live file: what `kf:` token bindings are checked
    /// against, without a store read per request.
    live: Snapshot<HashMap<String, i64>>,
    /// Refused assertions per accessID of a live file (docs/key-files.md).
    failures: crate::limits::FailureLimiter<String>,
}

impl std::fmt::Debug for KeyFileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFileService").finish_non_exhaustive()
    }
}

impl TryFrom<KeyFileRow> for KeyFile {
    type Error = ServiceError;
    fn try_from(r: KeyFileRow) -> Result<Self, ServiceError> {
        let bad = |what: &str, e: String| {
            ServiceError::Internal(format!("key file {}: stored {what}: {e}", r.access_id))
        };
        let role = r.role.parse::<Role>().map_err(|e| bad("role", e))?;
        let algorithm = r
            .algorithm
            .parse::<Algorithm>()
            .map_err(|e| bad("algorithm", e))?;
        Ok(KeyFile {
            access_id: r.access_id,
            customer_name: r.customer_name,
            description: r.description,
            role,
            algorithm,
            key_source: r.key_source,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_used_at: r.last_used_at,
            generation: r.generation,
            public_key: r.public_key,
        })
    }
}

/// A fresh key pair: the private key as PKCS#8 DER (zeroized on drop) and the public key.
fn generate_pair(algorithm: Algorithm) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), ServiceError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let fail = |e: &dyn std::fmt::Display| ServiceError::Internal(format!("key generation: {e}"));
    match algorithm {
        Algorithm::ES256 => {
            let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            )
            .map_err(|e| fail(&e))?;
            let der = pair.to_pkcs8v1().map_err(|e| fail(&e))?;
            let public = PublicKey::ec(Algorithm::ES256, pair.public_key().as_ref().to_vec())
                .and_then(|k| k.spki_der())
                .map_err(|e| fail(&e))?;
            Ok((Zeroizing::new(der.as_ref().to_vec()), public))
        }
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|e| fail(&e))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(|e| fail(&e))?;
            let public: aws_lc_rs::encoding::PublicKeyX509Der =
                pair.public_key().as_der().map_err(|e| fail(&e))?;
            Ok((
                Zeroizing::new(der.as_ref().to_vec()),
                public.as_ref().to_vec(),
            ))
        }
        other => Err(ServiceError::Invalid(format!(
            "key files use ES256 or RS256, not {other}"
        ))),
    }
}

/// The PKCS#8 PEM of `der`, encrypted (PBES2: PBKDF2-HMAC-SHA256 and AES-256-CBC) when a
/// passphrase is given. CPU-heavy with a passphrase: call off the async workers.
fn private_pem(
    der: &[u8],
    passphrase: Option<&SecretString>,
) -> Result<Zeroizing<String>, ServiceError> {
    use pkcs8::der::pem::LineEnding;
    let fail = |e: &dyn std::fmt::Display| ServiceError::Internal(format!("PKCS#8: {e}"));
    let doc = match passphrase {
        None => pkcs8::SecretDocument::try_from(der).map_err(|e| fail(&e))?,
        Some(pass) => {
            let mut salt = [0u8; 16];
            let mut iv = [0u8; 16];
            aws_lc_rs::rand::fill(&mut salt).map_err(|e| fail(&e))?;
            aws_lc_rs::rand::fill(&mut iv).map_err(|e| fail(&e))?;
            let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(
                PBKDF2_ITERATIONS,
                &salt,
                &iv,
            )
            .map_err(|e| fail(&e))?;
            pkcs8::PrivateKeyInfo::try_from(der)
                .map_err(|e| fail(&e))?
                .encrypt_with_params(params, pass.expose_secret().as_bytes())
                .map_err(|e| fail(&e))?
        }
    };
    let label = if passphrase.is_some() {
        "ENCRYPTED PRIVATE KEY"
    } else {
        "PRIVATE KEY"
    };
    doc.to_pem(label, LineEnding::LF).map_err(|e| fail(&e))
}

/// Parses a client's public key PEM (SPKI) and picks its algorithm.
fn client_public_key(
    pem: &str,
    wanted: Option<Algorithm>,
) -> Result<(Algorithm, Vec<u8>), ServiceError> {
    let bad = |m: String| ServiceError::Invalid(format!("public_key_pem: {m}"));
    let pem = pem.trim();
    if pem.len() > 16 * 1024 {
        return Err(bad("longer than 16 KiB".into()));
    }
    let (label, der) = pkcs8::der::pem::decode_vec(pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM document ({e})")))?;
    let der = Zeroizing::new(der);
    if label.contains("PRIVATE KEY") {
        return Err(bad(
            "this is a private key; send only the public key (-----BEGIN PUBLIC KEY-----)".into(),
        ));
    }
    if label != "PUBLIC KEY" {
        return Err(bad(format!(
            "expected a PUBLIC KEY (SubjectPublicKeyInfo) PEM, got {label}"
        )));
    }
    let candidates: Vec<Algorithm> = match wanted {
        Some(a @ (Algorithm::ES256 | Algorithm::RS256)) => vec![a],
        Some(other) => {
            return Err(ServiceError::Invalid(format!(
                "key files use ES256 or RS256, not {other}"
            )))
        }
        None => vec![Algorithm::ES256, Algorithm::RS256],
    };
    for alg in &candidates {
        if let Ok(key) = PublicKey::from_spki_der(*alg, &der) {
            if let crate::hardware::public_key::PublicKeyMaterial::Rsa { n, .. } = &key.material {
                let bits = n
                    .first()
                    .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
                if !(2048..=4096).contains(&bits) {
                    return Err(bad(format!(
                        "RSA keys must have 2048 to 4096 bits, not {bits}"
                    )));
                }
            }
            return Ok((*alg, der.to_vec()));
        }
    }
    Err(bad(
        "not a P-256 (ES256) or RSA (RS256) SubjectPublicKeyInfo".into(),
    ))
}

fn validate_passphrase(p: &SecretString) -> Result<(), ServiceError> {
    let n = p.expose_secret().chars().count();
    if !(MIN_PASSPHRASE_LEN..=MAX_PASSPHRASE_LEN).contains(&n) {
        return Err(ServiceError::Invalid(format!(
            "passphrase must be {MIN_PASSPHRASE_LEN} to {MAX_PASSPHRASE_LEN} characters"
        )));
    }
    Ok(())
}

/// The key material of a create or regenerate: generated (with its PEM) or the client's.
struct Material {
    algorithm: Algorithm,
    public_key: Vec<u8>,
    access_key: Option<Zeroizing<String>>,
    source: &'static str,
}

async fn material(
    pem: Option<String>,
    passphrase: Option<SecretString>,
    algorithm: Option<Algorithm>,
) -> Result<Material, ServiceError> {
    if let Some(pem) = pem {
        if passphrase.is_some() {
            return Err(ServiceError::Invalid(
                "passphrase protects a generated accessKey; with public_key_pem there is none"
                    .into(),
            ));
        }
        let (algorithm, public_key) = client_public_key(&pem, algorithm)?;
        return Ok(Material {
            algorithm,
            public_key,
            access_key: None,
            source: "client",
        });
    }
    if let Some(p) = &passphrase {
        validate_passphrase(p)?;
    }
    let algorithm = algorithm.unwrap_or(Algorithm::ES256);
    // Key generation and PBKDF2 are CPU work: keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let (der, public_key) = generate_pair(algorithm)?;
        let pem = private_pem(&der, passphrase.as_ref())?;
        Ok(Material {
            algorithm,
            public_key,
            access_key: Some(pem),
            source: "generated",
        })
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("key generation task: {e}")))?
}

/// The `aud` claim as a list (a string or an array of strings).
fn audiences(v: Option<&Value>) -> Option<Vec<&str>> {
    match v? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(a) => a.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn int(m: &Map<String, Value>, k: &str) -> Result<Option<i64>, AssertionRefusal> {
    match m.get(k) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(AssertionRefusal::Claims),
    }
}

/// The binding carried by tokens minted with a key file at `generation`.
pub fn binding_of(access_id: &str, generation: i64) -> String {
    format!("kf:{access_id}:{generation}")
}

impl KeyFileService {
    /// `issuer` is keygate's `tokens.issuer`: files point clients at `<issuer>/api/v1`,
    /// and assertions for the token endpoint name `<issuer>/api/v1/auth/token`.
    pub async fn new(
        store: Store,
        max: u32,
        issuer: &str,
        leeway: i64,
    ) -> Result<KeyFileService, ServiceError> {
        let base = issuer.trim_end_matches('/');
        let svc = KeyFileService {
            store,
            max,
            leeway,
            admin_rest_api_url: format!("{base}/api/v1"),
            token_endpoint: format!("{base}/api/v1/auth/token"),
            live: Snapshot::default(),
            failures: crate::limits::FailureLimiter::new(
                crate::limits::LimitsConfig::default().credential_failures,
            ),
        };
        svc.reload().await?;
        Ok(svc)
    }

    /// Sets the failure limiter of each accessID (`limits.credential_failures`).
    pub fn with_failure_quota(mut self, rate: crate::limits::Rate) -> Self {
        self.failures = crate::limits::FailureLimiter::new(rate);
        self
    }

    /// Whether `access_id` names a live key file (in memory, no store read).
    fn is_live(&self, access_id: &str) -> bool {
        self.live.get().contains_key(access_id)
    }

    pub fn admin_rest_api_url(&self) -> &str {
        &self.admin_rest_api_url
    }

    /// Re-reads the live files from the store (at start, after a local change, and when
    /// the change feed reports a change made elsewhere).
    pub async fn reload(&self) -> Result<(), ServiceError> {
        self.live
            .reload(|_| async {
                let gens: HashMap<String, i64> = self
                    .store
                    .key_file_generations()
                    .await?
                    .into_iter()
                    .collect();
                Ok::<_, ServiceError>(gens)
            })
            .await
    }

    /// Applies a local change at once, then reloads (see the API key index).
    /// `generation`: the file's new generation, or `None` when it is gone.
    async fn after_change(&self, access_id: &str, generation: Option<i64>) {
        self.live
            .patch(|live| {
                let mut live = live.clone();
                match generation {
                    // Never move a file back to an older generation than one already seen.
                    Some(g) => {
                        let e = live.entry(access_id.to_string()).or_insert(g);
                        *e = (*e).max(g);
                    }
                    None => {
                        live.remove(access_id);
                    }
                };
                live
            })
            .await;
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "key file reload failed; the change feed retries");
        }
    }

    /// Whether a `kf:` binding names a live file at the same generation.
    pub fn binding_live(&self, binding: &str) -> bool {
        let Some((id, generation)) = binding
            .strip_prefix("kf:")
            .and_then(|rest| rest.rsplit_once(':'))
        else {
            return false;
        };
        let Ok(generation) = generation.parse::<i64>() else {
            return false;
        };
        self.live.get().get(id) == Some(&generation)
    }

    fn check_manage(caller: &Principal, role: Role) -> Result<(), ServiceError> {
        authz::require(caller.role, Permission::KeyFilesWrite, "manage key files")?;
        if !caller.role.manages(role) {
            return Err(ServiceError::Forbidden(format!(
                "role {} may not manage key files with role {role}",
                caller.role
            )));
        }
        Ok(())
    }

    async fn load(&self, access_id: &str) -> Result<KeyFile, ServiceError> {
        match self.store.get_key_file(access_id).await {
            Ok(r) => r.try_into(),
            Err(StoreError::NotFound) => {
                Err(ServiceError::NotFound(format!("no key file {access_id:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create(
        &self,
        caller: &Principal,
        req: NewKeyFile,
        now: i64,
    ) -> Result<KeyFileDocument, ServiceError> {
        let role = req.role.unwrap_or(Role::ReadOnly);
        Self::check_manage(caller, role)?;
        validate_text("description", &req.description, 1024, true)?;
        let customer_name = req.customer_name.unwrap_or_default();
        validate_text("customer_name", &customer_name, 256, false)?;
        let m = material(req.public_key_pem, req.passphrase, req.algorithm).await?;
        let row = KeyFileRow {
            access_id: uuid::Uuid::new_v4().to_string(),
            customer_name,
            description: req.description,
            role: role.name().to_string(),
            algorithm: m.algorithm.name().to_string(),
            public_key: m.public_key,
            key_source: m.source.to_string(),
            generation: 1,
            created_by: caller.name.clone(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        };
        self.store.insert_key_file(&row, self.max).await?;
        self.after_change(&row.access_id, Some(row.generation))
            .await;
        tracing::info!(key_file = %row.access_id, role = %row.role, algorithm = %row.algorithm,
            source = %row.key_source, by = %caller.name, "created key file");
        Ok(KeyFileDocument {
            file: row.try_into()?,
            access_key: m.access_key,
            admin_rest_api_url: self.admin_rest_api_url.clone(),
        })
    }

    pub async fn list(&self, caller: &Principal) -> Result<Vec<KeyFile>, ServiceError> {
        authz::require(caller.role, Permission::KeyFilesRead, "read key files")?;
        // One unreadable record must not hide the others.
        Ok(self
            .store
            .list_key_files()
            .await?
            .into_iter()
            .filter_map(|r| {
                KeyFile::try_from(r)
                    .map_err(
                        |e| tracing::error!(error = %e, "skipping an unreadable key file record"),
                    )
                    .ok()
            })
            .collect())
    }

    pub async fn get(&self, caller: &Principal, access_id: &str) -> Result<KeyFile, ServiceError> {
        authz::require(caller.role, Permission::KeyFilesRead, "read key files")?;
        self.load(access_id).await
    }

    pub async fn update(
        &self,
        caller: &Principal,
        access_id: &str,
        patch: KeyFilePatch,
        now: i64,
    ) -> Result<KeyFile, ServiceError> {
        authz::require(caller.role, Permission::KeyFilesWrite, "manage key files")?;
        let current = self.load(access_id).await?;
        Self::check_manage(caller, current.role)?;
        if let Some(r) = patch.role {
            Self::check_manage(caller, r)?;
        }
        if let Some(d) = &patch.description {
            validate_text("description", d, 1024, true)?;
        }
        self.store
            .update_key_file(
                access_id,
                patch.description.as_deref(),
                patch.role.map(Role::name),
                now,
            )
            .await?;
        // A new role bumps the generation in the store (tokens minted under the old role
        // end); a description change leaves it.
        let generation = match patch.role {
            Some(r) if r != current.role => current.generation + 1,
            _ => current.generation,
        };
        self.after_change(access_id, Some(generation)).await;
        tracing::info!(key_file = %access_id, role = ?patch.role.map(Role::name), by = %caller.name,
            "changed key file");
        self.load(access_id).await
    }

    /// Replaces the file's key: the previous file, and every token minted with it, stop
    /// working at once.
    pub async fn regenerate(
        &self,
        caller: &Principal,
        access_id: &str,
        req: Rekey,
        now: i64,
    ) -> Result<KeyFileDocument, ServiceError> {
        authz::require(caller.role, Permission::KeyFilesWrite, "manage key files")?;
        let current = self.load(access_id).await?;
        Self::check_manage(caller, current.role)?;
        let algorithm = req.algorithm.or(Some(current.algorithm));
        let m = material(req.public_key_pem, req.passphrase, algorithm).await?;
        self.store
            .rekey_key_file(
                access_id,
                current.generation,
                m.algorithm.name(),
                &m.public_key,
                m.source,
                now,
            )
            .await?;
        self.after_change(access_id, Some(current.generation + 1))
            .await;
        tracing::info!(key_file = %access_id, algorithm = %m.algorithm, source = m.source,
            by = %caller.name, "regenerated key file");
        // Built from what is known, not read back: the old key is already dead, so a
        // failed read here must not lose the only copy of the new private key.
        Ok(KeyFileDocument {
            file: KeyFile {
                algorithm: m.algorithm,
                key_source: m.source.to_string(),
                generation: current.generation + 1,
                updated_at: now,
                public_key: m.public_key,
                ..current
            },
            access_key: m.access_key,
            admin_rest_api_url: self.admin_rest_api_url.clone(),
        })
    }

    pub async fn delete(&self, caller: &Principal, access_id: &str) -> Result<(), ServiceError> {
        authz::require(caller.role, Permission::KeyFilesWrite, "manage key files")?;
        let current = self.load(access_id).await?;
        Self::check_manage(caller, current.role)?;
        self.store
            .delete_key_file(access_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    ServiceError::NotFound(format!("no key file {access_id:?}"))
                }
                e => e.into(),
            })?;
        self.after_change(access_id, None).await;
        tracing::info!(key_file = %access_id, by = %caller.name, "deleted key file");
        Ok(())
    }

    /// Verifies a key-file assertion and spends its `jti`. Every refusal reads the same
    /// to the caller; the reason is logged and counted.
    pub async fn authenticate(&self, token: &str, now: i64) -> Result<Principal, ServiceError> {
        match self.verify(token, now).await {
            Ok(p) => Ok(p),
            Err(Ok(reason)) => {
                // Refusals for a live file count toward its accessID's failure limiter
                // (like a user's login lockout, in memory): once it runs dry, the
                // accessID's assertions are refused before any store read.
                if !matches!(
                    reason,
                    AssertionRefusal::Locked | AssertionRefusal::UnknownFile
                ) {
                    if let Some(iss) = jws::unverified_issuer(token).filter(|i| self.is_live(i)) {
                        if self.failures.failed(&iss).is_some() {
                            tracing::info!(key_file = %iss, "key file locked after repeated refused assertions");
                        }
                    }
                }
                tracing::debug!(reason = reason.label(), "key-file assertion refused");
                metrics::counter!("keygate_key_file_assertion_refusals_total", "reason" => reason.label())
                    .increment(1);
                Err(ServiceError::Unauthenticated(
                    "invalid, expired or replayed key-file assertion (or unknown token issuer)"
                        .into(),
                ))
            }
            Err(Err(e)) => Err(e),
        }
    }

    async fn verify(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Principal, Result<AssertionRefusal, ServiceError>> {
        use AssertionRefusal as R;
        let parsed = jws::parse(token).map_err(|_| Ok(R::Malformed))?;
        let claims = jws::claims(&parsed.payload).map_err(|_| Ok(R::Malformed))?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(Ok(R::Claims))?;
        if claims.get("sub").and_then(Value::as_str) != Some(iss) {
            return Err(Ok(R::Claims));
        }
        // accessIDs are UUIDs: anything else is not a key file, so no store read.
        if uuid::Uuid::parse_str(iss).is_err() {
            return Err(Ok(R::UnknownFile));
        }
        if self.failures.locked(&iss.to_string()).is_some() {
            return Err(Ok(R::Locked));
        }
        let file = match self.store.get_key_file(iss).await {
            Ok(r) => match KeyFile::try_from(r) {
                Ok(f) => f,
                // A role deleted meanwhile, say: the file cannot act until it is fixed.
                Err(e) => {
                    tracing::error!(error = %e, "unusable key file record");
                    return Err(Ok(R::UnknownFile));
                }
            },
            Err(StoreError::NotFound) => return Err(Ok(R::UnknownFile)),
            Err(e) => return Err(Err(e.into())),
        };
        // The algorithm comes from the file, never from the token.
        if parsed.header.alg != file.algorithm.jws_alg() {
            return Err(Ok(R::Algorithm));
        }
        if parsed
            .header
            .typ
            .as_deref()
            .is_some_and(crate::services::tokens::claims::is_access_typ)
        {
            return Err(Ok(R::Claims));
        }
        let key = PublicKey::from_spki_der(file.algorithm, &file.public_key).map_err(|e| {
            Err(ServiceError::Internal(format!(
                "key file {}: stored public key: {e}",
                file.access_id
            )))
        })?;
        if !crate::keys::verify::verify_signature(
            &key,
            file.algorithm,
            parsed.signing_input,
            &parsed.signature,
        ) {
            return Err(Ok(R::Signature));
        }
        let aud = audiences(claims.get("aud")).ok_or(Ok(R::Audience))?;
        if !aud
            .iter()
            .any(|a| *a == self.admin_rest_api_url || *a == self.token_endpoint)
        {
            return Err(Ok(R::Audience));
        }
        let exp = int(&claims, "exp").map_err(Ok)?.ok_or(Ok(R::Claims))?;
        let iat = int(&claims, "iat").map_err(Ok)?.ok_or(Ok(R::Claims))?;
        let nbf = int(&claims, "nbf").map_err(Ok)?;
        if exp
            .checked_sub(iat)
            .is_none_or(|life| life <= 0 || life > MAX_ASSERTION_LIFETIME)
        {
            return Err(Ok(R::Lifetime));
        }
        crate::services::tokens::claims::TimeRules {
            now,
            leeway: self.leeway,
        }
        .check(exp, nbf, Some(iat))
        .map_err(|_| Ok(R::Expired))?;
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
            .ok_or(Ok(R::Claims))?;
        let fresh = self
            .store
            .spend_assertion(
                &file.access_id,
                file.generation,
                jti,
                exp.saturating_add(self.leeway),
                now,
            )
            .await
            .map_err(|e| Err(e.into()))?;
        if !fresh {
            return Err(Ok(R::Replayed));
        }
        Ok(Principal {
            name: file.access_id.clone(),
            role: file.role,
            method: AuthMethod::KeyFile {
                access_id: file.access_id.clone(),
                binding: binding_of(&file.access_id, file.generation),
                created_by: file.created_by.clone(),
            },
        })
    }

    /// Deletes expired assertion ids in batches of `batch`; returns how many.
    pub async fn purge(&self, now: i64, batch: u32) -> Result<u64, ServiceError> {
        let mut total = 0;
        loop {
            let n = self.store.purge_assertion_jtis(now, batch).await?;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}
