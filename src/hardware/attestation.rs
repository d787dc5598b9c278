//! Key attestation: evidence from the device itself that a key was generated inside it
//! and can never leave it (docs/attestation.md).
//!
//! An optional ability, so it is its own trait, reached through
//! [`Backend::attestation`](super::Backend::attestation):
//! - a TPM certifies the key with `TPM2_Certify` under an attestation key (AK), a
//!   restricted signing key under the endorsement hierarchy: the relying party checks
//!   the TPM's own signature, with no trust in keygate;
//! - a PKCS#11 token reports the key's protection attributes as it stores them
//!   (`CKA_LOCAL`, `CKA_NEVER_EXTRACTABLE`, ...); keygate binds them to the public key
//!   and signs them with its audit ring (the keys layer does that part).

use super::{HardwareError, KeyLocator};
use serde::Serialize;

/// What a device says about one of its keys.
#[derive(Debug, Clone)]
pub enum Evidence {
    Tpm(TpmCertification),
    Pkcs11(Pkcs11Attributes),
}

/// A `TPM2_Certify` of a key by the TPM's attestation key. Every field is in TPM wire
/// format (TCG TPM 2.0 Part 2), as `tpm2_print` and `tpm2_checkquote`-style tools read it.
#[derive(Debug, Clone)]
pub struct TpmCertification {
    /// `TPMS_ATTEST` (type `TPM_ST_ATTEST_CERTIFY`): the signed bytes.
    pub certify_info: Vec<u8>,
    /// `TPMT_SIGNATURE` over `certify_info` by the AK.
    pub signature: Vec<u8>,
    /// The same signature as a DER `ECDSA-Sig-Value`, for `openssl dgst -verify`.
    pub signature_der: Vec<u8>,
    /// The AK's `TPM2B_PUBLIC`.
    pub ak_public: Vec<u8>,
    /// The AK's public key as a DER SubjectPublicKeyInfo.
    pub ak_spki: Vec<u8>,
    /// The AK's TPM name (nameAlg || H(TPMT_PUBLIC)).
    pub ak_name: Vec<u8>,
    /// The certified key's `TPM2B_PUBLIC`, as the TPM reports it after loading it.
    pub key_public: Vec<u8>,
    /// The certified key's TPM name, which `certify_info` carries.
    pub key_name: Vec<u8>,
    /// DER endorsement-key certificates found in the TPM's NV (TCG EK credential
    /// profile indices); empty when the TPM has none (swtpm unless provisioned).
    pub ek_certificates: Vec<Vec<u8>>,
}

/// A PKCS#11 key's protection attributes, read back from the token.
#[derive(Debug, Clone, Serialize)]
pub struct Pkcs11Attributes {
    /// `CKO_PRIVATE_KEY` or `CKO_SECRET_KEY`.
    pub class: String,
    /// `CKK_EC`, `CKK_RSA`, `CKK_EC_EDWARDS` or `CKK_GENERIC_SECRET`.
    pub key_type: String,
    /// Key size in bits (curve size, modulus length or secret length).
    pub key_bits: u32,
    /// `CKA_LOCAL`: generated on the token (not imported).
    pub local: bool,
    /// `CKA_NEVER_EXTRACTABLE`: never was extractable.
    pub never_extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: always was sensitive.
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`: can be wrapped out now.
    pub extractable: bool,
    /// `CKA_SENSITIVE`: its value can never be read in the clear.
    pub sensitive: bool,
    /// The token's label, manufacturer and model, as `C_GetTokenInfo` reports them.
    pub token_label: String,
    pub token_manufacturer: String,
    pub token_model: String,
    /// The vendor attestation mechanism the HSM profile declares, if any. Declared, not
    /// served: keygate does not fetch vendor evidence (not tested here).
    pub vendor_attestation: Option<crate::hardware::profile::VendorAttestation>,
}

/// A device that can attest its keys.
pub trait KeyAttestation: Send + Sync {
    /// Evidence about `key`. `nonce` (at most 64 bytes) is the relying party's freshness
    /// value; a TPM puts it in the signed `extraData`.
    fn attest(&self, key: &KeyLocator, nonce: &[u8]) -> Result<Evidence, HardwareError>;
}

/// Longest nonce accepted (a TPM's `TPM2B_DATA` holds one digest: 64 bytes for SHA-512).
pub const MAX_NONCE: usize = 64;

/// DER `ECDSA-Sig-Value` from big-endian `r` and `s`.
pub fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let start = v
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(v.len().saturating_sub(1));
        let mut body: Vec<u8> = v.get(start..).unwrap_or(&[0]).to_vec();
        if body.is_empty() {
            body.push(0);
        }
        if body[0] & 0x80 != 0 {
            body.insert(0, 0);
        }
        let mut out = vec![0x02];
        out.extend(der_len(body.len()));
        out.extend(body);
        out
    }
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else if n < 0x100 {
        vec![0x81, n as u8]
    } else {
        vec![0x82, (n >> 8) as u8, n as u8]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_der_pads_high_bits_and_strips_leading_zeros() {
        assert_eq!(
            ecdsa_der(&[0x80], &[0, 1]),
            vec![0x30, 7, 2, 2, 0, 0x80, 2, 1, 1]
        );
        assert_eq!(ecdsa_der(&[0], &[0]), vec![0x30, 6, 2, 1, 0, 2, 1, 0]);
    }
}
