//! Key rings: logical keys, their versions and states, the public-key cache and the JWKS.
//!
//! A ring is a named purpose (`jwt-default`, `api-key-mac`, ...). Each has versions, of
//! which exactly one is active (the store enforces this with a unique index). Public keys
//! are cached here, so verification and JWKS never call the hardware; signing and MAC
//! always do, through each backend's [`HardwareExecutor`].

pub mod attestation;
pub mod lifecycle;
pub mod reconcile;
pub mod rotation;
pub mod verify;

use crate::cluster::snapshot::Snapshot;
use crate::hardware::executor::HardwareExecutor;
use crate::hardware::{Algorithm, HardwareError, KeyLocator, KeySpec, Mac, PublicKey};
pub use crate::key_state::{KeyMove, KeyState};
use crate::store::keys::{KeyVersionRow, NewRing};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The rings keygate itself uses, whose names mean something: their purpose follows from
/// the name, and some operations treat them specially (the MAC ring's regeneration needs
/// `force`, the TLS and audit rings are never regenerated or served in the JWKS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservedRing {
    /// The HMAC key protecting API-key secrets.
    ApiKeyMac,
    /// The default JWT signing ring.
    JwtDefault,
    /// keygate's own HTTPS identity (docs/tls.md).
    TlsIdentity,
    /// Signs approvals and audit checkpoints (docs/lifecycle.md).
    Audit,
}

impl ReservedRing {
    pub const ALL: [ReservedRing; 4] = [
        ReservedRing::ApiKeyMac,
        ReservedRing::JwtDefault,
        ReservedRing::TlsIdentity,
        ReservedRing::Audit,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ReservedRing::ApiKeyMac => "api-key-mac",
            ReservedRing::JwtDefault => "jwt-default",
            ReservedRing::TlsIdentity => "tls-identity",
            ReservedRing::Audit => "audit",
        }
    }

    /// The reserved ring of that name, if it is one.
    pub fn of(name: &str) -> Option<ReservedRing> {
        ReservedRing::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The ring whose HMAC key protects API-key secrets.
pub const API_KEY_MAC_RING: &str = ReservedRing::ApiKeyMac.name();
/// The default JWT signing ring.
pub const JWT_DEFAULT_RING: &str = ReservedRing::JwtDefault.name();

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Hardware(#[from] HardwareError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no key ring {0:?}")]
    UnknownRing(String),
    #[error("key ring {0:?} exists")]
    RingExists(String),
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored key data is invalid: {0}")]
    Corrupt(String),
}

/// What a ring is for; decides whether it is published in the JWKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Jwt,
    Mac,
    Tls,
    Audit,
}

impl Purpose {
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Jwt => "jwt",
            Purpose::Mac => "mac",
            Purpose::Tls => "tls",
            Purpose::Audit => "audit",
        }
    }

    fn parse(s: &str) -> Option<Purpose> {
        [Purpose::Jwt, Purpose::Mac, Purpose::Tls, Purpose::Audit]
            .into_iter()
            .find(|p| p.name() == s)
    }

    /// The purpose implied by a ring's name and algorithm.
    pub fn for_ring(name: &str, alg: Algorithm) -> Purpose {
        if alg.is_mac() {
            return Purpose::Mac;
        }
        match ReservedRing::of(name) {
            Some(ReservedRing::TlsIdentity) => Purpose::Tls,
            Some(ReservedRing::Audit) => Purpose::Audit,
            _ => Purpose::Jwt,
        }
    }
}

/// One key version with its cached public key.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub ring: String,
    pub version: i64,
    pub state: KeyState,
    pub backend: String,
    pub algorithm: Algorithm,
    pub purpose: Purpose,
    pub kid: String,
    pub locator: KeyLocator,
    pub public_key: Option<PublicKey>,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    /// When it stopped signing (became retiring).
    pub deactivated_at: Option<i64>,
}

impl KeyVersion {
    /// Pending, active and retiring versions are published (docs/keys.md).
    pub fn published(&self) -> bool {
        self.state.published()
    }

    fn from_row(row: KeyVersionRow) -> Result<KeyVersion, KeysError> {
        let corrupt =
            |what: String| KeysError::Corrupt(format!("{} v{}: {what}", row.ring, row.version));
        let algorithm: Algorithm = row.algorithm.parse().map_err(corrupt)?;
        let locator: KeyLocator =
            serde_json::from_str(&row.locator).map_err(|e| corrupt(format!("locator: {e}")))?;
        let purpose = Purpose::parse(&row.purpose)
            .ok_or_else(|| corrupt(format!("purpose {:?}", row.purpose)))?;
        let public_key = match &row.public_key {
            Some(der) => Some(
                PublicKey::from_spki_der(algorithm, der)
                    .map_err(|e| corrupt(format!("public key: {e}")))?,
            ),
            None => None,
        };
        Ok(KeyVersion {
            ring: row.ring,
            version: row.version,
            state: row.state,
            backend: row.backend,
            algorithm,
            purpose,
            kid: row.kid,
            locator,
            public_key,
            created_at: row.created_at,
            activated_at: row.activated_at,
            deactivated_at: row.deactivated_at,
        })
    }
}

/// The in-memory view of every key version, replaced whole on change.
#[derive(Debug, Default)]
struct Versions {
    versions: Vec<Arc<KeyVersion>>,
    active: HashMap<String, Arc<KeyVersion>>,
    /// Published versions of JWT-signing rings by kid: what a keygate JWT may name.
    verifying: HashMap<String, Arc<KeyVersion>>,
}

/// Key rings over the store and the configured backends.
pub struct KeyRegistry {
    store: Store,
    backends: HashMap<String, HardwareExecutor>,
    snapshot: Snapshot<Versions>,
}

impl std::fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRegistry")
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRegistry {
    /// Loads every version from the store into the cache. No hardware call.
    pub async fn load(
        store: Store,
        backends: HashMap<String, HardwareExecutor>,
    ) -> Result<KeyRegistry, KeysError> {
        let reg = KeyRegistry {
            store,
            backends,
            snapshot: Snapshot::default(),
        };
        reg.refresh().await?;
        Ok(reg)
    }

    /// Re-reads the store into the cache (after a change here, and when the change feed
    /// reports a key change made elsewhere).
    pub async fn refresh(&self) -> Result<(), KeysError> {
        self.snapshot
            .reload(|_| async {
                let rows = self.store.list_key_versions().await?;
                let mut snap = Versions::default();
                for row in rows {
                    let v = Arc::new(KeyVersion::from_row(row)?);
                    if v.state == KeyState::Active {
                        snap.active.insert(v.ring.clone(), v.clone());
                    }
                    if v.purpose == Purpose::Jwt && v.published() && v.public_key.is_some() {
                        snap.verifying.insert(v.kid.clone(), v.clone());
                    }
                    snap.versions.push(v);
                }
                Ok::<_, KeysError>(snap)
            })
            .await
    }

    fn snapshot(&self) -> Arc<Versions> {
        self.snapshot.get()
    }

    pub fn backends(&self) -> &HashMap<String, HardwareExecutor> {
        &self.backends
    }

    pub fn backend(&self, name: &str) -> Result<&HardwareExecutor, KeysError> {
        self.backends
            .get(name)
            .ok_or_else(|| KeysError::UnknownBackend(name.to_string()))
    }

    /// Every version of every ring.
    pub fn versions(&self) -> Vec<Arc<KeyVersion>> {
        self.snapshot().versions.clone()
    }

    /// The active version of `ring`.
    pub fn active(&self, ring: &str) -> Result<Arc<KeyVersion>, KeysError> {
        self.snapshot()
            .active
            .get(ring)
            .cloned()
            .ok_or_else(|| KeysError::UnknownRing(ring.to_string()))
    }

    /// The published JWT-signing version whose kid is `kid`, if any. This is the only
    /// key a keygate JWT naming `kid` may be verified with.
    pub fn verifying_key(&self, kid: &str) -> Option<Arc<KeyVersion>> {
        self.snapshot().verifying.get(kid).cloned()
    }

    /// Signs `msg` in hardware with version `v` (which must have a public key).
    pub async fn sign(
        &self,
        v: &KeyVersion,
        msg: Vec<u8>,
    ) -> Result<crate::hardware::Signature, KeysError> {
        if v.algorithm.is_mac() {
            return Err(KeysError::Invalid(format!(
                "ring {:?} holds a MAC key, which cannot sign",
                v.ring
            )));
        }
        let (loc, alg) = (v.locator.clone(), v.algorithm);
        // Token issuance and the signing service: the reserved lane (docs/operations.md).
        Ok(self
            .backend(&v.backend)?
            .run_lane(
                crate::hardware::executor::Lane::Reserved,
                "sign",
                move |b| b.sign(&loc, alg, &msg),
            )
            .await?)
    }

    pub fn ring_exists(&self, ring: &str) -> bool {
        self.snapshot().versions.iter().any(|v| v.ring == ring)
    }

    /// Creates a ring whose first version is active and generated in hardware.
    ///
    /// The key is generated first and recorded second. If recording fails, the new key is
    /// destroyed again. If the process dies in between, the orphan stays on the token,
    /// unused; its label `keygate:<ring>:v<n>` identifies it (docs/operations.md).
    pub async fn create_ring(
        &self,
        name: &str,
        algorithm: Algorithm,
        backend_name: &str,
        created_by: &str,
        now: i64,
    ) -> Result<Arc<KeyVersion>, KeysError> {
        validate_ring_name(name)?;
        if self.ring_exists(name) {
            return Err(KeysError::RingExists(name.to_string()));
        }
        let backend = self.backend(backend_name)?.clone();
        let generated = generate_version(&backend, name, 1, algorithm).await?;
        let (locator, kid, spki) = (generated.locator, generated.kid, generated.spki);
        let locator_json = serde_json::to_string(&locator)
            .map_err(|e| KeysError::Invalid(format!("locator: {e}")))?;
        let record = NewRing {
            name: name.to_string(),
            algorithm: algorithm.name().to_string(),
            backend: backend_name.to_string(),
            purpose: Purpose::for_ring(name, algorithm).name().to_string(),
            created_by: created_by.to_string(),
            locator: locator_json,
            kid,
            public_key: spki,
            now,
        };
        if let Err(e) = self.store.insert_ring(&record).await {
            let loc = locator.clone();
            if let Err(de) = backend.run("destroy", move |b| b.destroy(&loc)).await {
                tracing::error!(ring = %name, key = %locator.uri(), error = %de,
                    "could not destroy a key whose record failed; it is orphaned on the token");
            }
            return Err(match e {
                StoreError::Conflict(_) => KeysError::RingExists(name.to_string()),
                other => other.into(),
            });
        }
        self.refresh().await?;
        tracing::info!(ring = %name, algorithm = %algorithm, backend = %backend_name,
            key = %locator.uri(), by = %created_by, "created key ring");
        self.active(name)
    }

    /// Creates `name` unless it exists; returns whether it was created.
    pub async fn ensure_ring(
        &self,
        name: &str,
        algorithm: Algorithm,
        backend: &str,
        now: i64,
    ) -> Result<bool, KeysError> {
        if self.ring_exists(name) {
            return Ok(false);
        }
        match self
            .create_ring(name, algorithm, backend, crate::names::ROOT_PRINCIPAL, now)
            .await
        {
            Ok(_) => Ok(true),
            // Another replica created it first (replicas starting together on an empty
            // store): its version stands, ours was destroyed again; load theirs.
            Err(KeysError::RingExists(_)) => {
                self.refresh().await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// HMAC-SHA256 under the active version of `ring`; returns the tag and that version.
    /// The message is often a secret (an API key), so it is zeroized after the call.
    pub async fn mac(
        &self,
        ring: &str,
        msg: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<(Mac, Arc<KeyVersion>), KeysError> {
        self.mac_in(crate::hardware::executor::Lane::Normal, ring, msg)
            .await
    }

    /// [`mac`](Self::mac) for a credential nobody has authenticated yet: it runs in the
    /// bounded unauthenticated lane and fails at once (`Unavailable`) when that is full.
    pub async fn mac_unauthenticated(
        &self,
        ring: &str,
        msg: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<(Mac, Arc<KeyVersion>), KeysError> {
        self.mac_in(crate::hardware::executor::Lane::Unauthenticated, ring, msg)
            .await
    }

    async fn mac_in(
        &self,
        lane: crate::hardware::executor::Lane,
        ring: &str,
        msg: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<(Mac, Arc<KeyVersion>), KeysError> {
        let v = self.active(ring)?;
        if !v.algorithm.is_mac() {
            return Err(KeysError::Invalid(format!(
                "ring {ring:?} is not a MAC ring"
            )));
        }
        let loc = v.locator.clone();
        let tag = self
            .backend(&v.backend)?
            .run_lane(lane, "mac", move |b| b.mac(&loc, &msg))
            .await?;
        Ok((tag, v))
    }

    /// Fills `n` bytes from the hardware RNG of the backend holding `ring`.
    pub async fn random(
        &self,
        ring: &str,
        n: usize,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, KeysError> {
        let v = self.active(ring)?;
        let bytes = self
            .backend(&v.backend)?
            .run("random", move |b| {
                let mut out = zeroize::Zeroizing::new(vec![0u8; n]);
                b.random(&mut out)?;
                Ok(out)
            })
            .await?;
        Ok(bytes)
    }

    /// The JWKS: public keys of published versions of JWT-signing rings only. MAC rings,
    /// the audit ring and the TLS identity never appear.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .snapshot()
            .versions
            .iter()
            .filter(|v| v.purpose == Purpose::Jwt && v.published())
            .filter_map(|v| v.public_key.as_ref().map(|p| p.jwk(&v.kid)))
            .collect();
        json!({ "keys": keys })
    }

    /// Checks that every live version in the store still exists in its hardware. Reports
    /// problems and never deletes anything. Returns the list of problems found.
    pub async fn reconcile(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for v in self.versions() {
            if v.state == KeyState::Destroyed {
                continue;
            }
            let Ok(backend) = self.backend(&v.backend) else {
                problems.push(format!(
                    "{} v{}: backend {:?} is not configured",
                    v.ring, v.version, v.backend
                ));
                continue;
            };
            let loc = v.locator.clone();
            let is_mac = v.algorithm.is_mac();
            let expected = v.public_key.clone();
            let result = backend
                .run("reconcile", move |b| {
                    if is_mac {
                        b.mac(&loc, b"keygate reconcile").map(|_| None)
                    } else {
                        b.public_key(&loc).map(Some)
                    }
                })
                .await;
            match result {
                Ok(Some(found)) => {
                    if expected
                        .as_ref()
                        .map(|e| e.material != found.material)
                        .unwrap_or(true)
                    {
                        problems.push(format!(
                            "{} v{}: the key at {} differs from the stored public key",
                            v.ring,
                            v.version,
                            v.locator.uri()
                        ));
                    }
                }
                Ok(None) => {}
                Err(e) => problems.push(format!(
                    "{} v{} at {}: {e}",
                    v.ring,
                    v.version,
                    v.locator.uri()
                )),
            }
        }
        match self.orphans().await {
            Ok(orphans) => {
                for o in orphans {
                    problems.push(format!(
                        "backend {:?} holds {} ({}), which no key version in the store names; `keygate keys reconcile --apply` removes it",
                        o.backend, o.object.uri, o.object.label
                    ));
                }
            }
            Err(e) => problems.push(format!("listing hardware objects: {e}")),
        }
        for p in &problems {
            tracing::warn!(problem = %p, "store and hardware disagree");
        }
        problems
    }
}

/// A key version just generated in hardware, not yet recorded.
pub(crate) struct Generated {
    pub locator: KeyLocator,
    pub kid: String,
    pub spki: Option<Vec<u8>>,
}

/// Generates version `version` of ring `name` in hardware and reads its public key.
/// The label `keygate:<ring>:v<n>` identifies it on the token.
pub(crate) async fn generate_version(
    backend: &HardwareExecutor,
    name: &str,
    version: i64,
    algorithm: Algorithm,
) -> Result<Generated, KeysError> {
    let spec = KeySpec {
        algorithm,
        label: format!("keygate:{name}:v{version}"),
    };
    let (locator, public_key) = backend
        .run("generate", move |b| {
            let loc = b.generate(&spec)?;
            let public = if algorithm.is_mac() {
                None
            } else {
                match b.public_key(&loc) {
                    Ok(p) => Some(PublicKey { algorithm, ..p }),
                    Err(e) => {
                        let _ = b.destroy(&loc);
                        return Err(e);
                    }
                }
            };
            Ok((loc, public))
        })
        .await?;
    let kid = match &public_key {
        Some(p) => p.thumbprint(),
        None => format!("{name}-v{version}"),
    };
    let spki = match &public_key {
        Some(p) => Some(p.spki_der()?),
        None => None,
    };
    Ok(Generated { locator, kid, spki })
}

/// Ring names appear in URLs and labels: 1 to 64 of `[a-z0-9-]`, starting with a letter.
pub fn validate_ring_name(name: &str) -> Result<(), KeysError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(KeysError::Invalid(format!(
            "ring name {name:?} must be 1-64 characters of a-z, 0-9 and '-', starting with a letter"
        )))
    }
}
