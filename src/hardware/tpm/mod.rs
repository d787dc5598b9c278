//! TPM 2.0 backend on `tss-esapi` 7.x (tpm2-tss 3.2 as Debian bookworm ships it), tested
//! against swtpm.
//!
//! Keys are children of a storage primary that is re-created from a fixed template under
//! the owner hierarchy ([`templates`]), so it is the same key after every reboot. Child
//! keys live outside the TPM as wrapped blobs inside their [`KeyLocator`] ([`blobs`]) and
//! are loaded on demand into a small LRU ([`device`]). The ESAPI context is `&mut self`
//! everywhere, so it sits behind one mutex: calls are serialised, exactly as the single
//! command stream of a TPM requires, and the backend's executor pool has one thread.
//! [`error`] is the one translator of TSS return codes.
//!
//! When the transport breaks (swtpm restarted, `/dev/tpmrm0` gone), the failing call drops
//! the context and reconnects once, re-creating the primary and reloading the key, so a
//! restarted TPM is used again by the next call. While the TPM stays unreachable every
//! call fails fast with [`HardwareError::Unavailable`] and nothing is reported as done.

pub mod attest;
pub mod blobs;
pub mod device;
pub mod error;
pub mod inventory;
pub mod templates;

use crate::hardware::{
    Algorithm, Backend, HardwareError, Health, KeyLocator, KeySpec, Mac, PublicKey, Signature,
};
use blobs::WrappedKey;
use device::{Connection, Device};
use error::{describe, meaning, translate, Meaning};
use std::sync::{Mutex, PoisonError};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Digest, HashcheckTicket, MaxBuffer, Public, SignatureScheme};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use zeroize::Zeroizing;

/// Default number of child keys kept loaded. swtpm without a resource manager holds 3
/// transient objects, one of which is the primary.
pub const DEFAULT_MAX_LOADED: usize = 2;

/// Largest message `mac` accepts: one `TPM2_HMAC` buffer (`TPM2B_MAX_BUFFER`).
pub const MAX_HMAC_INPUT: usize = 1024;

/// Silences tpm2-tss's own stderr logging unless `TSS2_LOG` is set: every TSS error
/// reaches keygate's log through [`error`], translated and naming the key. Call it before
/// any thread starts (it sets an environment variable).
pub fn quiet_tss_log() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
}

/// What it takes to reach one TPM.
pub struct TpmSettings {
    /// A TCTI configuration string: `device:/dev/tpmrm0`, `swtpm:host=...,port=...`,
    /// `mssim:...` or `tabrmd:...`.
    pub tcti: String,
    /// The owner hierarchy's authorization value; `None` for the empty auth most TPMs
    /// ship with.
    pub owner_auth: Option<Zeroizing<Vec<u8>>>,
    /// Child keys kept loaded at once.
    pub max_loaded: usize,
}

impl std::fmt::Debug for TpmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmSettings")
            .field("tcti", &self.tcti)
            .field(
                "owner_auth",
                &self.owner_auth.as_ref().map(|_| "[redacted]"),
            )
            .field("max_loaded", &self.max_loaded)
            .finish()
    }
}

/// Why one attempt of a call failed.
enum Step {
    /// A TSS error while doing the named thing: classified by [`Backend`] retry logic.
    Tss(String, tss_esapi::Error),
    /// Already meaningful.
    Hw(HardwareError),
}

impl From<HardwareError> for Step {
    fn from(e: HardwareError) -> Self {
        Step::Hw(e)
    }
}

/// A TPM 2.0 chip or simulator.
pub struct TpmBackend {
    settings: TpmSettings,
    device: Mutex<Option<Device>>,
}

impl std::fmt::Debug for TpmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmBackend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn null_ticket() -> Result<HashcheckTicket, HardwareError> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
    .map_err(|e| HardwareError::Failure(format!("building a null hash-check ticket: {e}")))
}

/// The parent name, own parent's persistent handle and `public` field of a TPM locator,
/// or `KeyNotFound` for any other kind.
fn tpm_fields(key: &KeyLocator) -> Result<(&str, Option<u32>, &str), HardwareError> {
    match key {
        KeyLocator::Tpm {
            parent,
            parent_handle,
            public,
            ..
        } => Ok((parent, *parent_handle, public)),
        other => Err(HardwareError::KeyNotFound(format!(
            "{} is not a TPM key",
            other.uri()
        ))),
    }
}

impl TpmBackend {
    /// Creates the backend without touching the TPM; the first call connects. A TPM that
    /// is down at startup must not stop keygate from serving the rings on other backends.
    pub fn new(settings: TpmSettings) -> TpmBackend {
        TpmBackend {
            settings,
            device: Mutex::new(None),
        }
    }

    /// The TCTI this backend talks to.
    pub fn tcti(&self) -> &str {
        &self.settings.tcti
    }

    /// Connects now (if not connected), so startup can log a clear error early.
    pub fn connect(&self) -> Result<(), HardwareError> {
        self.call(|_| Ok(()))
    }

    /// Flushes every loaded key and the primary and closes the context. The next call
    /// connects again. Used at shutdown, so a TPM without a resource manager is left clean.
    pub fn disconnect(&self) {
        let mut guard = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = None;
    }

    /// Number of child keys loaded in the TPM now.
    pub fn loaded_keys(&self) -> usize {
        self.device
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(Device::loaded_count)
            .unwrap_or(0)
    }

    /// The public area of `key` as the TPM reports it after loading the key: its object
    /// attributes show what protects it (tests check fixedTPM and fixedParent).
    pub fn read_public(&self, key: &KeyLocator) -> Result<Public, HardwareError> {
        self.with_key(key, "reading the public area of", |dev, handle, _| {
            dev.ctx
                .execute_without_session(|c| c.read_public(handle))
                .map(|(p, _, _)| p)
        })
    }

    fn connection(&self) -> Connection<'_> {
        Connection {
            tcti: &self.settings.tcti,
            owner_auth: self.settings.owner_auth.as_ref(),
            max_loaded: self.settings.max_loaded,
        }
    }

    /// Runs `op` against a connected device, reconnecting once when the transport broke
    /// under a device that was connected before this call, and flushing loaded keys once
    /// when the TPM is out of object memory.
    fn call<T>(
        &self,
        mut op: impl FnMut(&mut Device) -> Result<T, Step>,
    ) -> Result<T, HardwareError> {
        let mut guard = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        let mut retried = false;
        loop {
            let fresh = guard.is_none();
            let dev = match guard.as_mut() {
                Some(d) => d,
                None => guard.insert(Device::open(&self.connection())?),
            };
            let (what, e) = match op(dev) {
                Ok(v) => return Ok(v),
                Err(Step::Hw(e)) => return Err(e),
                Err(Step::Tss(what, e)) => (what, e),
            };
            match meaning(&e) {
                Meaning::ConnectionLost => {
                    tracing::warn!(tcti = %self.settings.tcti, error = %describe(&what, &e),
                        "lost the TPM; the context is dropped and the next call reconnects");
                    *guard = None;
                    if fresh || retried {
                        return Err(HardwareError::Unavailable(describe(&what, &e)));
                    }
                }
                Meaning::ObjectMemory if !retried => dev.reclaim_all(),
                _ => return Err(translate(&what, &e)),
            }
            retried = true;
        }
    }

    /// Loads `key` (checking it belongs under this TPM's primary) and runs `op` with its
    /// handle and algorithm. `what` describes the operation for errors, which name the key.
    fn with_key<T>(
        &self,
        key: &KeyLocator,
        what: &str,
        op: impl Fn(&mut Device, KeyHandle, Algorithm) -> Result<T, tss_esapi::Error>,
    ) -> Result<T, HardwareError> {
        let (parent, parent_handle, public) = tpm_fields(key)?;
        self.call(|dev| {
            // A key under its own persistent parent is checked against that parent's
            // name when it is loaded; a legacy key against the primary's.
            if parent_handle.is_none() && parent != dev.parent_name {
                return Err(Step::Hw(HardwareError::KeyNotFound(format!(
                    "{} was wrapped under another storage key than this TPM's (another TPM, or the owner hierarchy was cleared)",
                    key.uri()
                ))));
            }
            let own_parent = parent_handle.map(|h| (h, parent));
            let (handle, alg) = match dev.load(public, own_parent, || WrappedKey::from_locator(key))? {
                Ok((h, k)) => (h, k.algorithm),
                Err(e) => return Err(Step::Tss(format!("loading {}", key.uri()), e)),
            };
            op(dev, handle, alg).map_err(|e| Step::Tss(format!("{what} {}", key.uri()), e))
        })
    }

    fn key_algorithm(&self, key: &KeyLocator) -> Result<Algorithm, HardwareError> {
        WrappedKey::from_locator(key).map(|k| k.algorithm)
    }
}

impl Backend for TpmBackend {
    fn kind(&self) -> &'static str {
        "tpm"
    }

    fn generate(&self, spec: &KeySpec) -> Result<KeyLocator, HardwareError> {
        let template = templates::child(spec.algorithm)?;
        let parent_template = templates::storage_primary()?;
        self.call(|dev| {
            // The key's own storage parent: created under the primary, made persistent,
            // its private blob dropped. Evicting it later destroys the key for good.
            let tss = |what: &str| {
                let what = format!("{what} for {} key {:?}", spec.algorithm, spec.label);
                move |e| Step::Tss(what, e)
            };
            let primary = dev.primary().map_err(tss("re-creating the storage primary"))?;
            dev.room(1, true)
                .map_err(tss("flushing a key to make room"))?;
            let parent = dev
                .ctx
                .create(primary, parent_template.clone(), None, None, None, None)
                .map_err(tss("creating a storage parent"))?;
            dev.room(1, true)
                .map_err(tss("flushing a key to make room"))?;
            let transient = dev
                .ctx
                .load(primary, parent.out_private, parent.out_public)
                .map_err(tss("loading the new storage parent"))?;
            let parent_name = match dev.ctx.tr_get_name(transient.into()) {
                Ok(n) => device::hex(n.value()),
                Err(e) => {
                    let _ = dev.ctx.flush_context(transient.into());
                    return Err(Step::Tss("reading the new storage parent's name".into(), e));
                }
            };
            let slot = match dev.free_persistent_handle() {
                Ok(Some(h)) => h,
                Ok(None) => {
                    let _ = dev.ctx.flush_context(transient.into());
                    return Err(Step::Hw(HardwareError::Failure(format!(
                        "all {} persistent handles from {:#010x} hold keygate storage parents; destroy retired versions (docs/tpm.md)",
                        device::PERSISTENT_COUNT,
                        device::PERSISTENT_FIRST
                    ))));
                }
                Err(e) => {
                    let _ = dev.ctx.flush_context(transient.into());
                    return Err(Step::Tss("listing persistent handles".into(), e));
                }
            };
            let mut persistent = dev
                .persist(transient, slot)
                .map_err(tss("making the storage parent persistent"))?;
            let made = match dev.room(2, false) {
                Ok(()) => dev.ctx.create(
                    KeyHandle::from(persistent),
                    template.clone(),
                    None,
                    None,
                    None,
                    None,
                ),
                Err(e) => Err(e),
            };
            let created = match made {
                Ok(c) => c,
                Err(e) => {
                    // Leave no parent without a key behind.
                    if let Err(ee) = dev.evict(persistent, slot) {
                        tracing::warn!(handle = slot, error = %ee,
                            "could not evict the storage parent of a key that failed; reconcile reports it");
                    }
                    return Err(Step::Tss(
                        format!("creating {} key {:?}", spec.algorithm, spec.label),
                        e,
                    ));
                }
            };
            let _ = dev.ctx.tr_close(&mut persistent);
            let wrapped = WrappedKey {
                parent: parent_name,
                parent_handle: Some(slot),
                label: spec.label.clone(),
                public: created.out_public,
                private: created.out_private,
                algorithm: spec.algorithm,
            };
            Ok(wrapped.to_locator()?)
        })
    }

    fn public_key(&self, key: &KeyLocator) -> Result<PublicKey, HardwareError> {
        let uri = key.uri();
        let (alg, public) = self.with_key(key, "reading the public key of", |dev, h, alg| {
            dev.ctx
                .execute_without_session(|c| c.read_public(h))
                .map(|(p, _, _)| (alg, p))
        })?;
        blobs::public_key(&uri, alg, &public)
    }

    fn sign(
        &self,
        key: &KeyLocator,
        alg: Algorithm,
        msg: &[u8],
    ) -> Result<Signature, HardwareError> {
        let key_alg = self.key_algorithm(key)?;
        if key_alg != alg {
            return Err(HardwareError::InvalidInput(format!(
                "{} is a {key_alg} key and cannot sign {alg}",
                key.uri()
            )));
        }
        let (hash, size) = match alg {
            Algorithm::ES256 => (&aws_lc_rs::digest::SHA256, 32),
            Algorithm::ES384 => (&aws_lc_rs::digest::SHA384, 48),
            Algorithm::RS256 | Algorithm::PS256 => (&aws_lc_rs::digest::SHA256, 256),
            Algorithm::RS256_3072 | Algorithm::PS256_3072 => (&aws_lc_rs::digest::SHA256, 384),
            Algorithm::HS256 | Algorithm::EdDSA => {
                return Err(HardwareError::InvalidInput(format!(
                    "{} holds a {alg} key, which cannot sign",
                    key.uri()
                )))
            }
        };
        // Hash in software before taking the TPM: only the digest crosses the transport.
        let digest = Digest::try_from(aws_lc_rs::digest::digest(hash, msg).as_ref().to_vec())
            .map_err(|e| HardwareError::Failure(format!("digest: {e}")))?;
        let ticket = null_ticket()?;
        let sig = self.with_key(key, "signing with", |dev, h, _| {
            dev.ctx
                .sign(h, digest.clone(), SignatureScheme::Null, ticket.clone())
        })?;
        let bad = || {
            HardwareError::Failure(format!(
                "{}: the TPM returned a malformed signature",
                key.uri()
            ))
        };
        use tss_esapi::structures::Signature as TpmSig;
        let bytes = match sig {
            TpmSig::EcDsa(s) => {
                let r = blobs::left_pad(s.signature_r().value(), size).ok_or_else(bad)?;
                let s = blobs::left_pad(s.signature_s().value(), size).ok_or_else(bad)?;
                [r, s].concat()
            }
            TpmSig::RsaSsa(s) | TpmSig::RsaPss(s) => {
                blobs::left_pad(s.signature().value(), size).ok_or_else(bad)?
            }
            _ => return Err(bad()),
        };
        Ok(Signature(bytes))
    }

    fn mac(&self, key: &KeyLocator, msg: &[u8]) -> Result<Mac, HardwareError> {
        let key_alg = self.key_algorithm(key)?;
        if !key_alg.is_mac() {
            return Err(HardwareError::InvalidInput(format!(
                "{} is a {key_alg} key, not an HMAC key",
                key.uri()
            )));
        }
        if msg.len() > MAX_HMAC_INPUT {
            return Err(HardwareError::InvalidInput(format!(
                "HMAC input of {} bytes exceeds the TPM's {MAX_HMAC_INPUT}-byte buffer",
                msg.len()
            )));
        }
        // MaxBuffer zeroizes its copy of the (often secret) message on drop.
        let buffer = MaxBuffer::try_from(msg.to_vec())
            .map_err(|e| HardwareError::InvalidInput(format!("HMAC input: {e}")))?;
        let tag = self.with_key(key, "computing an HMAC with", |dev, h, _| {
            dev.ctx
                .hmac(h.into(), buffer.clone(), HashingAlgorithm::Sha256)
        })?;
        Ok(Mac(tag.value().to_vec()))
    }

    fn destroy(&self, key: &KeyLocator) -> Result<(), HardwareError> {
        // A wrapped key exists wherever its blob does, so it is destroyed by destroying its
        // own storage parent: once the persistent parent is evicted, no copy of the blob
        // can be loaded by anyone (docs/tpm.md, "Destroying keys"). The loaded key is
        // flushed first. A legacy key (under the primary) can only be flushed; the caller
        // must erase its blob.
        let (parent, parent_handle, public) = tpm_fields(key)?;
        let label = match key {
            KeyLocator::Tpm { label, .. } => label.as_str(),
            KeyLocator::Pkcs11 { .. } => "",
        };
        self.call(|dev| {
            dev.unload(public)
                .map_err(|e| Step::Tss(format!("flushing {}", key.uri()), e))?;
            let Some(handle) = parent_handle else {
                return Ok(());
            };
            dev.room(1, false)
                .map_err(|e| Step::Tss("flushing a key to make room".into(), e))?;
            let obj = match dev.persistent_parent(handle, parent, &key.uri()) {
                Ok(o) => o,
                Err(device::ParentError::Gone(e)) => return Err(Step::Hw(e)),
                Err(device::ParentError::Tss(e)) => {
                    return Err(Step::Tss(format!("finding the parent of {}", key.uri()), e))
                }
            };
            dev.evict(obj, handle).map_err(|e| {
                Step::Tss(
                    format!(
                        "evicting the storage parent {handle:#010x} of {}",
                        key.uri()
                    ),
                    e,
                )
            })
        })?;
        match parent_handle {
            Some(h) => tracing::info!(key = %key.uri(), label = %label, parent = h,
                "destroyed TPM key: its storage parent is evicted, no copy of its blob loads again"),
            None => tracing::info!(key = %key.uri(), label = %label,
                "flushed TPM key made under the storage primary; its blob must be erased"),
        }
        Ok(())
    }

    fn random(&self, out: &mut [u8]) -> Result<(), HardwareError> {
        // TPM2_GetRandom returns at most one digest's worth per call.
        self.call(|dev| {
            for part in out.chunks_mut(32) {
                let bytes = dev
                    .ctx
                    .execute_without_session(|c| c.get_random(part.len()))
                    .map_err(|e| Step::Tss("TPM2_GetRandom".into(), e))?;
                if bytes.value().len() != part.len() {
                    return Err(Step::Hw(HardwareError::Failure(format!(
                        "TPM2_GetRandom returned {} bytes, asked for {}",
                        bytes.value().len(),
                        part.len()
                    ))));
                }
                part.copy_from_slice(bytes.value());
            }
            Ok(())
        })
    }

    fn shutdown(&self) {
        self.disconnect();
    }

    fn attestation(&self) -> Option<&dyn crate::hardware::attestation::KeyAttestation> {
        Some(self)
    }

    fn inventory(&self) -> Option<&dyn crate::hardware::inventory::Inventory> {
        Some(self)
    }

    fn health(&self) -> Health {
        let probe = self.call(|dev| {
            dev.ctx
                .execute_without_session(|c| c.get_random(8))
                .map(|_| ())
                .map_err(|e| Step::Tss("TPM2_GetRandom".into(), e))
        });
        match probe {
            Ok(()) => Health::Ok,
            Err(e) => Health::Unavailable {
                reason: e.to_string(),
            },
        }
    }
}
