//! The one translator from `cryptoki` errors to [`HardwareError`].
//!
//! Messages keep the PKCS#11 function and the `CKR_` name (`C_Sign: CKR_KEY_HANDLE_INVALID`)
//! because that is what an operator searches the vendor manual for.

use crate::hardware::HardwareError;
use cryptoki::error::{Error, RvError};

/// `CKR_SESSION_HANDLE_INVALID` from the variant name `SessionHandleInvalid`.
pub fn ckr_name(rv: &RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// True when the error means sessions or login are gone and reconnecting may help.
pub fn is_reconnectable(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// True when a cached object handle is stale.
pub fn is_stale_handle(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)
    )
}

/// Translates with `context` (what keygate was doing) prefixed.
pub fn translate(context: &str, e: Error) -> HardwareError {
    match &e {
        Error::Pkcs11(rv, func) => {
            let msg = format!("{context}: C_{func:?}: {}", ckr_name(rv));
            match rv {
                _ if is_reconnectable(&e) => HardwareError::Unavailable(msg),
                RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => {
                    HardwareError::KeyNotFound(msg)
                }
                RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::FunctionNotSupported
                | RvError::KeySizeRange
                | RvError::CurveNotSupported
                | RvError::DomainParamsInvalid
                | RvError::KeyTypeInconsistent
                | RvError::KeyFunctionNotPermitted => HardwareError::NotSupported(msg),
                RvError::DataLenRange | RvError::DataInvalid | RvError::ArgumentsBad => {
                    HardwareError::InvalidInput(msg)
                }
                RvError::PinIncorrect => HardwareError::Failure(format!(
                    "{msg} (the user PIN is wrong; check pin_file / pin_env)"
                )),
                RvError::PinLocked => HardwareError::Failure(format!(
                    "{msg} (the user PIN is locked; the security officer must reset it)"
                )),
                _ => HardwareError::Failure(msg),
            }
        }
        Error::LibraryLoading(le) => {
            HardwareError::Unavailable(format!("{context}: cannot load PKCS#11 module: {le}"))
        }
        other => HardwareError::Failure(format!("{context}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names_follow_the_specification_spelling() {
        assert_eq!(
            ckr_name(&RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        assert_eq!(ckr_name(&RvError::PinIncorrect), "CKR_PIN_INCORRECT");
    }
}
