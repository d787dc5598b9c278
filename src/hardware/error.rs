//! Meaning-based errors of the hardware layer.
//!
//! Callers decide what to do from the meaning (retry, 404, 503, 500), never from a vendor
//! code. Each backend has one translator into this type; the message keeps the PKCS#11
//! function name and `CKR_` code so an operator can act on it.

#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    /// Transient: the device, session or login is gone. Retry or reconnect.
    #[error("hardware unavailable: {0}")]
    Unavailable(String),
    /// No such key on the device.
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// The device or profile cannot do this.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The caller asked for something malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The device refused or failed in a way a retry will not fix.
    #[error("hardware failure: {0}")]
    Failure(String),
}

impl HardwareError {
    /// The message without the kind prefix.
    pub fn into_message(self) -> String {
        match self {
            HardwareError::Unavailable(m)
            | HardwareError::KeyNotFound(m)
            | HardwareError::NotSupported(m)
            | HardwareError::InvalidInput(m)
            | HardwareError::Failure(m) => m,
        }
    }

    /// Short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HardwareError::Unavailable(_) => "unavailable",
            HardwareError::KeyNotFound(_) => "key_not_found",
            HardwareError::NotSupported(_) => "not_supported",
            HardwareError::InvalidInput(_) => "invalid_input",
            HardwareError::Failure(_) => "failure",
        }
    }
}
