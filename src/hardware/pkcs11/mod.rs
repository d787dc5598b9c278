//! PKCS#11 backend on `cryptoki`, tested against SoftHSM 2.6.
//!
//! Split by operation family, as Parsec does: [`sessions`] owns login and the session pool,
//! [`key_management`] generates, finds, reads and destroys objects, [`asym_sign`] signs and
//! MACs, [`error`] is the single translator of `CKR_` codes.

pub mod asym_sign;
pub mod attest;
pub mod error;
pub mod inventory;
pub mod key_management;
pub mod module;
pub mod sessions;
pub mod token_init;

use crate::hardware::profile::HsmProfile;
use crate::hardware::{
    Algorithm, Backend, HardwareError, Health, KeyLocator, KeySpec, Mac, PublicKey, Signature,
};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::types::AuthPin;
use sessions::SessionPool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

/// What it takes to reach one token.
pub struct Pkcs11Settings {
    pub module: PathBuf,
    pub token_label: String,
    pub pin: AuthPin,
    pub profile: HsmProfile,
}

impl std::fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"[redacted]")
            .field("profile", &self.profile.name)
            .finish()
    }
}

/// Object handles by `CKA_ID`, one map per object class (public, private, secret), each
/// tagged with the connection generation it is valid for. Looked up by `&[u8]`, so a hit
/// allocates nothing.
type HandleCache = [RwLock<HashMap<Vec<u8>, (u64, ObjectHandle)>>; 3];

/// A logged-in PKCS#11 token.
pub struct Pkcs11Backend {
    pool: SessionPool,
    profile: HsmProfile,
    handles: HandleCache,
    /// Taken exclusively by object creation and destruction, shared by object lookups,
    /// when `quirks.serialize_object_changes` is set (SoftHSM 2.6 can fail `C_Generate*`
    /// with `CKR_GENERAL_ERROR` while another thread searches or deletes objects).
    object_changes: RwLock<()>,
}

impl Pkcs11Backend {
    /// Connects and logs in; fails with a clear error on a missing module, a missing token
    /// or a wrong PIN.
    pub fn connect(settings: Pkcs11Settings) -> Result<Self, HardwareError> {
        let pool = SessionPool::connect(
            settings.module,
            settings.token_label,
            settings.pin,
            settings.profile.pool_size,
            settings.profile.quirks.login_per_session,
        )?;
        Ok(Pkcs11Backend {
            pool,
            profile: settings.profile,
            handles: Default::default(),
            object_changes: RwLock::new(()),
        })
    }

    /// Number of sessions, which is also the right size for the blocking pool.
    pub fn pool_size(&self) -> usize {
        self.pool.size()
    }

    fn check_locator(&self, key: &KeyLocator) -> Result<Vec<u8>, HardwareError> {
        match key {
            KeyLocator::Pkcs11 { token, id } => {
                if token != self.pool.token_label() {
                    return Err(HardwareError::KeyNotFound(format!(
                        "{} lives on token {token:?}, not {:?}",
                        key.uri(),
                        self.pool.token_label()
                    )));
                }
                decode_hex(id)
                    .ok_or_else(|| HardwareError::InvalidInput(format!("malformed key id {id:?}")))
            }
            other => Err(HardwareError::KeyNotFound(format!(
                "{} is not a PKCS#11 key",
                other.uri()
            ))),
        }
    }
}

/// Index into [`HandleCache`]; keygate only looks up these three classes.
fn class_slot(class: ObjectClass) -> usize {
    match class {
        ObjectClass::PUBLIC_KEY => 0,
        ObjectClass::PRIVATE_KEY => 1,
        _ => 2,
    }
}

impl Pkcs11Backend {
    /// Exclusive guard for creating or destroying objects (a no-op unless the profile asks).
    pub(crate) fn change_guard(&self) -> Option<std::sync::RwLockWriteGuard<'_, ()>> {
        if self.profile.quirks.serialize_object_changes {
            self.object_changes.write().ok()
        } else {
            None
        }
    }

    /// Shared guard for searching objects.
    pub(crate) fn lookup_guard(&self) -> Option<std::sync::RwLockReadGuard<'_, ()>> {
        if self.profile.quirks.serialize_object_changes {
            self.object_changes.read().ok()
        } else {
            None
        }
    }
}

pub(crate) fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    // Strict: `from_str_radix` alone would accept a leading `+`, giving one key two names.
    if s.len() % 2 != 0 || s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

impl Backend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn generate(&self, spec: &KeySpec) -> Result<KeyLocator, HardwareError> {
        if !self.profile.supports(spec.algorithm) {
            return Err(HardwareError::NotSupported(format!(
                "profile {} does not offer {}",
                self.profile.name, spec.algorithm
            )));
        }
        let id = self.generate_key(spec)?;
        Ok(KeyLocator::Pkcs11 {
            token: self.pool.token_label().to_string(),
            id: encode_hex(&id),
        })
    }

    fn public_key(&self, key: &KeyLocator) -> Result<PublicKey, HardwareError> {
        let id = self.check_locator(key)?;
        self.read_public_key(&id)
    }

    fn sign(
        &self,
        key: &KeyLocator,
        alg: Algorithm,
        msg: &[u8],
    ) -> Result<Signature, HardwareError> {
        let id = self.check_locator(key)?;
        self.sign_with(&id, alg, msg)
    }

    fn mac(&self, key: &KeyLocator, msg: &[u8]) -> Result<Mac, HardwareError> {
        let id = self.check_locator(key)?;
        self.hmac_sha256(&id, msg)
    }

    fn destroy(&self, key: &KeyLocator) -> Result<(), HardwareError> {
        let id = self.check_locator(key)?;
        self.destroy_objects(&id)
    }

    fn random(&self, out: &mut [u8]) -> Result<(), HardwareError> {
        let chunk = match self.profile.quirks.max_random_bytes {
            0 => out.len().max(1),
            n => n,
        };
        for part in out.chunks_mut(chunk) {
            self.pool
                .with_session("generating random bytes", &mut |s| {
                    s.generate_random_slice(part)
                })?;
        }
        Ok(())
    }

    fn attestation(&self) -> Option<&dyn crate::hardware::attestation::KeyAttestation> {
        Some(self)
    }

    fn inventory(&self) -> Option<&dyn crate::hardware::inventory::Inventory> {
        Some(self)
    }

    fn health(&self) -> Health {
        match self.pool.probe() {
            Ok(()) => Health::Ok,
            Err(e) => Health::Unavailable {
                reason: e.to_string(),
            },
        }
    }
}
