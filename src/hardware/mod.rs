//! The hardware boundary.
//!
//! Everything secret lives behind [`Backend`]: key generation, signing, MAC, destruction
//! and random numbers all happen inside a PKCS#11 token or a TPM 2.0. Nothing above
//! this module ever sees private or secret key bytes; it holds only [`KeyLocator`]s and
//! public keys. The trait is deliberately narrow (smallstep's `KeyManager` shape): every
//! method is something every backend can really do.
//!
//! Every method blocks. Async code must go through [`executor::HardwareExecutor`], which
//! runs calls on a bounded pool sized to the backend's session pool.

pub mod algorithm;
pub mod attestation;
pub mod error;
pub mod executor;
pub mod inventory;
pub mod pkcs11;
pub mod profile;
pub mod public_key;
pub mod tpm;

pub use algorithm::Algorithm;
pub use error::HardwareError;
pub use public_key::PublicKey;

use serde::{Deserialize, Serialize};

/// What to generate: the algorithm decides the key type and size.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub algorithm: Algorithm,
    /// Human-readable label stored on the token object (`CKA_LABEL`). Not secret.
    pub label: String,
}

/// Where a key lives. Stored in the metadata store, so it must never hold secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyLocator {
    /// A PKCS#11 token object, addressed by token label and `CKA_ID` (hex).
    Pkcs11 { token: String, id: String },
    /// A TPM 2.0 child key: its `TPM2B_PUBLIC` and `TPM2B_PRIVATE` (base64url), as
    /// `TPM2_Create` returned them, and the TPM name (hex) of the storage primary they
    /// were created under. The private part is encrypted and integrity-protected by that
    /// parent, which never leaves the TPM: the blobs are useless anywhere else, so they
    /// may sit in the store like any other locator (docs/tpm.md).
    ///
    /// Keys made since destroy-that-destroys have their own storage parent, a persistent
    /// object at `parent_handle` whose TPM name is `parent`: destroying the key evicts it,
    /// after which no copy of the blobs can be loaded again. An empty `private` means the
    /// version was destroyed and its blob erased from the store.
    Tpm {
        parent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_handle: Option<u32>,
        label: String,
        public: String,
        private: String,
    },
}

impl KeyLocator {
    /// RFC 7512 URI for display and logs.
    pub fn uri(&self) -> String {
        match self {
            KeyLocator::Pkcs11 { token, id } => {
                let mut pct_id = String::with_capacity(id.len() * 3 / 2);
                for pair in id.as_bytes().chunks(2) {
                    pct_id.push('%');
                    pct_id.push_str(std::str::from_utf8(pair).unwrap_or("??"));
                }
                format!("pkcs11:token={};id={}", percent_encode(token), pct_id)
            }
            KeyLocator::Tpm { label, public, .. } => tpm::blobs::display_uri(label, public),
        }
    }
}

pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A signature in JWS form: ECDSA as raw r‖s, RSA and EdDSA as produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(pub Vec<u8>);

/// An HMAC-SHA256 tag. Not secret by itself, but compared only in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Mac(pub Vec<u8>);

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mac({} bytes)", self.0.len())
    }
}

/// Reachability of a backend, for `/readyz` and the circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    Ok,
    Unavailable { reason: String },
}

/// One configured device: a PKCS#11 token or a TPM.
///
/// Implementations block; call them through [`executor::HardwareExecutor`] from async code.
pub trait Backend: Send + Sync {
    /// Short name of the backend kind (`pkcs11`, `tpm`), for metrics and listings.
    fn kind(&self) -> &'static str;
    /// Generates a non-extractable, sensitive key and returns where it lives.
    fn generate(&self, spec: &KeySpec) -> Result<KeyLocator, HardwareError>;
    /// The public half (SPKI DER + JWK). Errors with `NotSupported` for secret keys.
    fn public_key(&self, key: &KeyLocator) -> Result<PublicKey, HardwareError>;
    /// Signs `msg` (the whole message; hashing happens as the algorithm requires).
    fn sign(
        &self,
        key: &KeyLocator,
        alg: Algorithm,
        msg: &[u8],
    ) -> Result<Signature, HardwareError>;
    /// HMAC-SHA256 of `msg` under a secret key.
    fn mac(&self, key: &KeyLocator, msg: &[u8]) -> Result<Mac, HardwareError>;
    /// Removes the key from the device.
    fn destroy(&self, key: &KeyLocator) -> Result<(), HardwareError>;
    /// Fills `out` from the device's RNG.
    fn random(&self, out: &mut [u8]) -> Result<(), HardwareError>;
    /// Probes the device.
    fn health(&self) -> Health;
    /// The device's key attestation, if it has one (docs/attestation.md).
    fn attestation(&self) -> Option<&dyn attestation::KeyAttestation> {
        None
    }
    /// The device's inventory of keygate objects, if it can list them (reconciliation).
    fn inventory(&self) -> Option<&dyn inventory::Inventory> {
        None
    }
    /// Releases what the device holds for keygate (a TPM flushes its loaded keys and
    /// primary) before the process exits. The next call reconnects.
    fn shutdown(&self) {}
}
