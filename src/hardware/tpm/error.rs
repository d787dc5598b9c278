//! The single translator from `tss_esapi::Error` into [`HardwareError`].
//!
//! A TSS return code carries its layer in bits 16..24: 0 is the TPM itself, 7 the ESAPI
//! library, 10 the TCTI (the transport to the chip or simulator). The translator decides
//! from that whether the TPM is gone (reconnect, 503), out of object memory (flush and
//! retry), or refusing this particular key or request. Messages keep the raw hex code so
//! an operator can look it up (`tpm2_rc_decode 0x...`).

use crate::hardware::HardwareError;
use tss_esapi::constants::response_code::{Tss2ResponseCode, Tss2ResponseCodeKind};
use tss_esapi::Error;

const LAYER_TPM: u32 = 0;
const LAYER_ESAPI: u32 = 7;
const LAYER_SYS: u32 = 8;
const LAYER_MU: u32 = 9;
const LAYER_TCTI: u32 = 10;
const LAYER_RM: u32 = 11;

/// What a TSS error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// The transport broke or the TPM was reset (our handles are gone): drop the
    /// context and reconnect.
    ConnectionLost,
    /// No room for another loaded object: flush what we hold and retry.
    ObjectMemory,
    /// The TPM refused an authorization value.
    BadAuth,
    /// The stored blob does not belong to this parent or was altered.
    Integrity,
    /// The TPM does not implement the requested algorithm, curve or size.
    Unsupported,
    /// Anything else.
    Other,
}

/// The raw `TSS2_RC`, recovered from the wrapper's display form (the wrapper does not
/// expose the number itself).
pub(crate) fn raw_code(e: &Error) -> Option<u32> {
    let text = match e {
        Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.to_string(),
        Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.to_string(),
        _ => return None,
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// Classifies a TSS error.
pub(crate) fn meaning(e: &Error) -> Meaning {
    let Error::Tss2Error(rc) = e else {
        return Meaning::Other;
    };
    let layer = raw_code(e).map(|c| (c >> 16) & 0xff).unwrap_or(LAYER_TPM);
    match layer {
        LAYER_TCTI | LAYER_RM => return Meaning::ConnectionLost,
        // ESAPI/SYS: an I/O error (10), a malformed or missing response (12, 13, 19) or a
        // TCTI that went away mean the channel is broken. Other library errors are ours.
        LAYER_ESAPI | LAYER_SYS | LAYER_MU => {
            let base = raw_code(e).map(|c| c & 0xffff).unwrap_or(0);
            return if matches!(base, 1 | 9 | 10 | 12 | 13 | 19 | 21 | 22) {
                Meaning::ConnectionLost
            } else {
                Meaning::Other
            };
        }
        _ => {}
    }
    match rc.kind() {
        Some(
            Tss2ResponseCodeKind::Initialize
            | Tss2ResponseCodeKind::Failure
            | Tss2ResponseCodeKind::Reboot
            | Tss2ResponseCodeKind::Canceled
            | Tss2ResponseCodeKind::Testing
            | Tss2ResponseCodeKind::NeedsTest
            | Tss2ResponseCodeKind::Retry
            | Tss2ResponseCodeKind::Yielded,
        ) => Meaning::ConnectionLost,
        // A handle keygate loaded is not loaded any more: the TPM was reset under a
        // transport that reconnects by itself (the swtpm TCTI does), or someone flushed
        // our objects. Either way the context's handles are stale: start over.
        Some(
            Tss2ResponseCodeKind::ReferenceH0
            | Tss2ResponseCodeKind::ReferenceH1
            | Tss2ResponseCodeKind::ReferenceH2
            | Tss2ResponseCodeKind::ReferenceH3
            | Tss2ResponseCodeKind::ReferenceH4
            | Tss2ResponseCodeKind::ReferenceH5
            | Tss2ResponseCodeKind::ReferenceH6
            | Tss2ResponseCodeKind::ReferenceS0
            | Tss2ResponseCodeKind::ReferenceS1
            | Tss2ResponseCodeKind::ReferenceS2
            | Tss2ResponseCodeKind::ReferenceS3
            | Tss2ResponseCodeKind::ReferenceS4
            | Tss2ResponseCodeKind::ReferenceS5
            | Tss2ResponseCodeKind::ReferenceS6,
        ) => Meaning::ConnectionLost,
        Some(
            Tss2ResponseCodeKind::ObjectMemory
            | Tss2ResponseCodeKind::ObjectHandles
            | Tss2ResponseCodeKind::Memory,
        ) => Meaning::ObjectMemory,
        Some(Tss2ResponseCodeKind::BadAuth | Tss2ResponseCodeKind::AuthFail) => Meaning::BadAuth,
        Some(
            Tss2ResponseCodeKind::Integrity
            | Tss2ResponseCodeKind::Binding
            | Tss2ResponseCodeKind::Key
            | Tss2ResponseCodeKind::Size
            | Tss2ResponseCodeKind::Type,
        ) => Meaning::Integrity,
        Some(
            Tss2ResponseCodeKind::Curve
            | Tss2ResponseCodeKind::KeySize
            | Tss2ResponseCodeKind::Scheme
            | Tss2ResponseCodeKind::Asymmetric
            | Tss2ResponseCodeKind::Hash,
        ) => Meaning::Unsupported,
        _ => Meaning::Other,
    }
}

/// `"<what>: <description> (TSS2_RC 0x...)"`.
pub(crate) fn describe(what: &str, e: &Error) -> String {
    match raw_code(e) {
        Some(code) => format!("{what}: {e} (TSS2_RC {code:#x})"),
        None => format!("{what}: {e}"),
    }
}

/// Translates a TSS error raised while doing `what` (which names the key, if any).
pub(crate) fn translate(what: &str, e: &Error) -> HardwareError {
    let msg = describe(what, e);
    match meaning(e) {
        Meaning::ConnectionLost | Meaning::ObjectMemory => HardwareError::Unavailable(msg),
        Meaning::BadAuth => HardwareError::Failure(format!("{msg}: authorization rejected")),
        Meaning::Integrity => HardwareError::Failure(format!(
            "{msg}: the TPM refused the stored key blob; it is corrupt, or was wrapped by another TPM or before the owner hierarchy was cleared"
        )),
        Meaning::Unsupported => HardwareError::NotSupported(msg),
        Meaning::Other => HardwareError::Failure(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_error_is_mistaken_for_success_or_loses_its_code() {
        let e = Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam);
        assert_eq!(meaning(&e), Meaning::Other);
        assert_eq!(raw_code(&e), None);
        assert!(matches!(translate("x", &e), HardwareError::Failure(_)));
    }
}
