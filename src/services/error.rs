//! The service layer's meaning-based error.

use crate::hardware::HardwareError;
use crate::keys::KeysError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or violates a rule about its content.
    #[error("{0}")]
    Invalid(String),
    /// No credentials, or credentials that do not authenticate.
    #[error("{0}")]
    Unauthenticated(String),
    /// Credentials present but malformed (RFC 6750 `invalid_request`).
    #[error("{0}")]
    MalformedCredentials(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// State conflict, including a limit being reached.
    #[error("{0}")]
    Conflict(String),
    /// The hardware cannot be reached right now.
    #[error("{0}")]
    Unavailable(String),
    /// The metadata store cannot be reached right now.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The metadata store's disk is full: writes fail, reads work.
    #[error("{0}")]
    StoreFull(String),
    /// Refused by a rate limit of the operation itself (not the request-level limits):
    /// retry after `retry_after` seconds.
    #[error("{detail}")]
    RateLimited { detail: String, retry_after: u64 },
    /// A bug or a device failure; details are logged, not returned.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::NotFound("not found".into()),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::Unavailable(m) => ServiceError::StoreUnavailable(m),
            StoreError::Full(m) => ServiceError::StoreFull(m),
            StoreError::Corrupt(m) | StoreError::Failed(m) => {
                ServiceError::Internal(format!("store: {m}"))
            }
        }
    }
}

impl From<HardwareError> for ServiceError {
    fn from(e: HardwareError) -> Self {
        match e {
            HardwareError::Unavailable(m) => ServiceError::Unavailable(m),
            HardwareError::InvalidInput(m) => ServiceError::Invalid(m),
            HardwareError::NotSupported(m) => ServiceError::Invalid(m),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<KeysError> for ServiceError {
    fn from(e: KeysError) -> Self {
        match e {
            // Every key the registry uses is listed in the store; if its hardware no longer
            // has it, the token is gone or was swapped: an outage, not a caller error.
            KeysError::Hardware(HardwareError::KeyNotFound(m)) => ServiceError::Unavailable(
                format!("a key listed in the store is missing from its hardware: {m}"),
            ),
            KeysError::Hardware(h) => h.into(),
            KeysError::Store(s) => s.into(),
            KeysError::UnknownRing(r) => ServiceError::NotFound(format!("no key ring {r:?}")),
            KeysError::RingExists(r) => ServiceError::Conflict(format!("key ring {r:?} exists")),
            KeysError::UnknownBackend(b) => {
                ServiceError::Invalid(format!("no backend named {b:?} is configured"))
            }
            KeysError::Invalid(m) => ServiceError::Invalid(m),
            KeysError::Conflict(m) => ServiceError::Conflict(m),
            KeysError::Corrupt(m) => ServiceError::Internal(m),
        }
    }
}
