//! keygate's own TLS: the HTTPS identity held in hardware, and mutual TLS against CA
//! profiles with CRLs.
//!
//! - [`signer`]: the rustls `SigningKey` (and rcgen remote key) that sends every
//!   handshake signature to the hardware through the bounded pool.
//! - [`identity`]: the `tls-identity` ring, certificates and CSRs signed by it, and the
//!   chain file checked against the hardware key.
//! - [`profiles`], [`verifier`]: CA profiles loaded into rustls-webpki client verifiers
//!   with CRLs; a client is accepted when any one profile accepts it.
//! - [`state`]: the `ServerConfig` in force, rebuilt and swapped atomically on reload.
//! - [`listener`]: the HTTPS accept loop (handshakes in their own tasks, with a timeout).
//! - [`client_identity`]: the verified client certificate on each request, and the
//!   optional certificate-to-principal rule.
//! - [`pem`], [`settings`]: parsing certificates and CRLs, and the `[tls]` configuration.

pub mod client_identity;
pub mod identity;
pub mod listener;
pub mod pem;
pub mod profiles;
pub mod settings;
pub mod signer;
pub mod state;
pub mod verifier;

use crate::hardware::HardwareError;
use crate::keys::KeysError;
use crate::services::ServiceError;
use crate::store::StoreError;

/// Meaning-based errors of the TLS layer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Input that cannot be used: a certificate or CRL that does not parse, a PEM holding
    /// a private key, a malformed subject or SAN.
    #[error("{0}")]
    Invalid(String),
    /// The HTTPS identity is missing or does not fit the hardware key.
    #[error("{0}")]
    Identity(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// This server does not serve TLS (it runs with `--insecure-http`).
    #[error("this server does not serve TLS (it runs with --insecure-http)")]
    NotServing,
    #[error(transparent)]
    Hardware(#[from] HardwareError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TlsError> for ServiceError {
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Invalid(m) => ServiceError::Invalid(m),
            TlsError::Identity(m) => ServiceError::Conflict(m),
            TlsError::NotServing => ServiceError::Conflict(e.to_string()),
            TlsError::Io(m) => ServiceError::Internal(m),
            TlsError::Hardware(h) => h.into(),
            TlsError::Keys(k) => k.into(),
            TlsError::Store(s) => s.into(),
        }
    }
}
