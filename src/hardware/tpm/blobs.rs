//! Wrapped key blobs: the `TPM2B_PUBLIC`/`TPM2B_PRIVATE` pair a child key lives in.
//!
//! `TPM2_Create` hands back the new key's private area encrypted and integrity-protected
//! under the storage primary key (the "parent"). Only the TPM that holds that parent, with
//! the same owner seed, can load it again; anywhere else the blob is noise. That is why
//! keygate keeps it in its ordinary store, inside the key's [`KeyLocator`]: it is not a
//! secret in the clear, and copying it never copies the key out of the chip. The byte
//! layout is the TSS marshalling tpm2-tools uses (`tpm2_load -u key.pub -r key.priv`).

use crate::hardware::{Algorithm, HardwareError, KeyLocator, PublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tss_esapi::structures::{Private, Public, PublicBuffer};
use tss_esapi::traits::{Marshall, UnMarshall};

/// A child key as stored: where it came from and its two wrapped halves.
#[derive(Debug, Clone)]
pub(crate) struct WrappedKey {
    /// The TPM name of the parent it was created under, hex.
    pub parent: String,
    /// The persistent handle of its own storage parent; `None` for a key made under the
    /// storage primary (before destroy-that-destroys).
    pub parent_handle: Option<u32>,
    pub label: String,
    pub public: Public,
    pub private: Private,
    /// The algorithm the public area was made for.
    pub algorithm: Algorithm,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Display name of a TPM key for errors and logs: its label and a fingerprint of the
/// public blob (`tpm:label=...;object=<16 hex>`).
pub(crate) fn display_uri(label: &str, public_b64: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_b64.as_bytes());
    let fp: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "tpm:label={};object={fp}",
        super::super::percent_encode(label)
    )
}

impl WrappedKey {
    /// The locator that stores this key.
    pub fn to_locator(&self) -> Result<KeyLocator, HardwareError> {
        let enc = |e: tss_esapi::Error| {
            HardwareError::Failure(format!("marshalling the key {}: {e}", self.label))
        };
        let public = PublicBuffer::try_from(self.public.clone())
            .and_then(|b| b.marshall())
            .map_err(enc)?;
        let private = self.private.value();
        let len = u16::try_from(private.len()).map_err(|_| {
            HardwareError::Failure(format!("the private blob of {} is too large", self.label))
        })?;
        let mut private_2b = Vec::with_capacity(private.len() + 2);
        private_2b.extend_from_slice(&len.to_be_bytes());
        private_2b.extend_from_slice(private);
        Ok(KeyLocator::Tpm {
            parent: self.parent.clone(),
            parent_handle: self.parent_handle,
            label: self.label.clone(),
            public: b64(&public),
            private: b64(&private_2b),
        })
    }

    /// Parses a stored locator. Anything malformed is reported as a corrupt blob naming
    /// the key, never a panic.
    pub fn from_locator(key: &KeyLocator) -> Result<WrappedKey, HardwareError> {
        let KeyLocator::Tpm {
            parent,
            parent_handle,
            label,
            public,
            private,
        } = key
        else {
            return Err(HardwareError::KeyNotFound(format!(
                "{} is not a TPM key",
                key.uri()
            )));
        };
        let corrupt = |what: String| {
            HardwareError::Failure(format!(
                "{}: the stored TPM key blob is corrupt: {what}",
                key.uri()
            ))
        };
        let public_bytes = URL_SAFE_NO_PAD
            .decode(public)
            .map_err(|e| corrupt(format!("public part: {e}")))?;
        let buffer = PublicBuffer::unmarshall(&public_bytes)
            .map_err(|e| corrupt(format!("public part: {e}")))?;
        let parsed = Public::try_from(buffer).map_err(|e| corrupt(format!("public part: {e}")))?;
        // Strict: the bytes must be exactly one TPM2B_PUBLIC, so a key has one spelling.
        let again = PublicBuffer::try_from(parsed.clone())
            .and_then(|b| b.marshall())
            .map_err(|e| corrupt(format!("public part: {e}")))?;
        if again != public_bytes {
            return Err(corrupt(
                "public part has trailing or non-canonical bytes".into(),
            ));
        }
        if private.is_empty() {
            return Err(HardwareError::KeyNotFound(format!(
                "{}: the version was destroyed and its private blob erased",
                key.uri()
            )));
        }
        let private_bytes = URL_SAFE_NO_PAD
            .decode(private)
            .map_err(|e| corrupt(format!("private part: {e}")))?;
        let body = match private_bytes.as_slice() {
            [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => {
                rest
            }
            _ => return Err(corrupt("private part is not one TPM2B_PRIVATE".into())),
        };
        let private =
            Private::try_from(body.to_vec()).map_err(|e| corrupt(format!("private part: {e}")))?;
        let algorithm = super::templates::algorithm_of(&parsed)
            .ok_or_else(|| corrupt("its public area is not a key type keygate makes".into()))?;
        Ok(WrappedKey {
            parent: parent.clone(),
            parent_handle: *parent_handle,
            label: label.clone(),
            public: parsed,
            private,
            algorithm,
        })
    }
}

/// Left-pads a big-endian integer to `len` bytes (TPMs may drop leading zeros).
pub(crate) fn left_pad(b: &[u8], len: usize) -> Option<Vec<u8>> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    let b = &b[start..];
    if b.len() > len {
        return None;
    }
    let mut out = vec![0u8; len - b.len()];
    out.extend_from_slice(b);
    Some(out)
}

/// The public key of a loaded key's public area.
pub(crate) fn public_key(
    uri: &str,
    algorithm: Algorithm,
    public: &Public,
) -> Result<PublicKey, HardwareError> {
    let bad = || HardwareError::Failure(format!("{uri}: the TPM returned a malformed public key"));
    match public {
        Public::Ecc { unique, .. } => {
            let size = if algorithm == Algorithm::ES384 {
                48
            } else {
                32
            };
            let x = left_pad(unique.x().value(), size).ok_or_else(bad)?;
            let y = left_pad(unique.y().value(), size).ok_or_else(bad)?;
            PublicKey::ec(algorithm, [vec![0x04], x, y].concat())
        }
        Public::Rsa {
            unique, parameters, ..
        } => {
            // An exponent of 0 means the default, 65537 (TPM 2.0 Part 2, TPMS_RSA_PARMS).
            let e = match parameters.exponent().value() {
                0 => 65537u32,
                e => e,
            };
            Ok(PublicKey::rsa(algorithm, unique.value(), &e.to_be_bytes()))
        }
        _ => Err(HardwareError::NotSupported(format!(
            "{uri}: {algorithm} keys have no public key"
        ))),
    }
}
