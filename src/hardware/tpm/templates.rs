//! The fixed key templates.
//!
//! The storage primary is the TCG "SRK" template (ECC P-256, AES-128-CFB, SHA-256 name,
//! unique of zeros) under the owner hierarchy. A primary key is derived from the
//! hierarchy's seed and its template alone, so the same template gives the same key after
//! every reboot or TPM reset, for as long as the owner hierarchy is not cleared. Child keys
//! are created under it with protection attributes that make them non-extractable:
//! `fixedTPM` and `fixedParent` (no duplication, no export), `sensitiveDataOrigin` (the
//! TPM generated the secret), and neither `encryptedDuplication` nor a policy that could
//! authorise duplication.

use crate::hardware::{Algorithm, HardwareError};
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Digest, EccParameter, EccPoint, EccScheme, HashScheme, KeyedHashScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, PublicKeyRsa, PublicKeyedHashParameters,
    PublicRsaParametersBuilder, RsaExponent, RsaScheme, SymmetricDefinitionObject,
};

fn template_error(what: &str, e: tss_esapi::Error) -> HardwareError {
    HardwareError::Failure(format!("building the {what} template: {e}"))
}

/// Attributes every keygate child key carries.
fn child_attributes(sign: bool) -> Result<ObjectAttributes, HardwareError> {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        // Keys have an empty authValue; DA lockout must not lock keygate out of them.
        .with_no_da(true)
        .with_sign_encrypt(sign)
        .with_decrypt(false)
        .with_restricted(false)
        .with_encrypted_duplication(false)
        .build()
        .map_err(|e| template_error("key attribute", e))
}

/// The storage primary key's template (TCG EK/SRK credential profile, "SRK" ECC P-256).
pub(crate) fn storage_primary() -> Result<Public, HardwareError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .with_sign_encrypt(false)
        .build()
        .map_err(|e| template_error("storage key attribute", e))?;
    let zeros =
        EccParameter::try_from(vec![0u8; 32]).map_err(|e| template_error("storage key", e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(|e| template_error("storage key", e))?,
        )
        .with_ecc_unique_identifier(EccPoint::new(zeros.clone(), zeros))
        .build()
        .map_err(|e| template_error("storage key", e))
}

/// The template of a child key for `alg`.
pub(crate) fn child(alg: Algorithm) -> Result<Public, HardwareError> {
    let ecc = |curve: EccCurve, hash: HashingAlgorithm| -> Result<Public, HardwareError> {
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(child_attributes(true)?)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_unrestricted_signing_key(
                    EccScheme::EcDsa(HashScheme::new(hash)),
                    curve,
                )
                .build()
                .map_err(|e| template_error(alg.name(), e))?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
            .map_err(|e| template_error(alg.name(), e))
    };
    let rsa = |bits: RsaKeyBits, scheme: RsaScheme| -> Result<Public, HardwareError> {
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(child_attributes(true)?)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_unrestricted_signing_key(
                    scheme,
                    bits,
                    RsaExponent::default(),
                )
                .build()
                .map_err(|e| template_error(alg.name(), e))?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build()
            .map_err(|e| template_error(alg.name(), e))
    };
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    match alg {
        Algorithm::ES256 => ecc(EccCurve::NistP256, HashingAlgorithm::Sha256),
        Algorithm::ES384 => ecc(EccCurve::NistP384, HashingAlgorithm::Sha384),
        Algorithm::RS256 => rsa(RsaKeyBits::Rsa2048, RsaScheme::RsaSsa(sha256)),
        Algorithm::PS256 => rsa(RsaKeyBits::Rsa2048, RsaScheme::RsaPss(sha256)),
        Algorithm::RS256_3072 => rsa(RsaKeyBits::Rsa3072, RsaScheme::RsaSsa(sha256)),
        Algorithm::PS256_3072 => rsa(RsaKeyBits::Rsa3072, RsaScheme::RsaPss(sha256)),
        Algorithm::HS256 => PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(child_attributes(true)?)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(
                KeyedHashScheme::HMAC_SHA_256,
            ))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
            .map_err(|e| template_error(alg.name(), e)),
        Algorithm::EdDSA => Err(HardwareError::NotSupported(
            "EdDSA: TPM 2.0 has no Ed25519 keys; use ES256 on the TPM".into(),
        )),
    }
}

/// The keygate algorithm a loaded key's public area was made for, if any.
pub(crate) fn algorithm_of(public: &Public) -> Option<Algorithm> {
    match public {
        Public::Ecc { parameters, .. } => match (parameters.ecc_curve(), parameters.ecc_scheme()) {
            (EccCurve::NistP256, EccScheme::EcDsa(h))
                if h.hashing_algorithm() == HashingAlgorithm::Sha256 =>
            {
                Some(Algorithm::ES256)
            }
            (EccCurve::NistP384, EccScheme::EcDsa(h))
                if h.hashing_algorithm() == HashingAlgorithm::Sha384 =>
            {
                Some(Algorithm::ES384)
            }
            _ => None,
        },
        Public::Rsa { parameters, .. } => {
            let sha256 = |h: &HashScheme| h.hashing_algorithm() == HashingAlgorithm::Sha256;
            match (parameters.key_bits(), parameters.rsa_scheme()) {
                (RsaKeyBits::Rsa2048, RsaScheme::RsaSsa(h)) if sha256(&h) => Some(Algorithm::RS256),
                (RsaKeyBits::Rsa2048, RsaScheme::RsaPss(h)) if sha256(&h) => Some(Algorithm::PS256),
                (RsaKeyBits::Rsa3072, RsaScheme::RsaSsa(h)) if sha256(&h) => {
                    Some(Algorithm::RS256_3072)
                }
                (RsaKeyBits::Rsa3072, RsaScheme::RsaPss(h)) if sha256(&h) => {
                    Some(Algorithm::PS256_3072)
                }
                _ => None,
            }
        }
        Public::KeyedHash { parameters, .. } => (*parameters
            == PublicKeyedHashParameters::new(KeyedHashScheme::HMAC_SHA_256))
        .then_some(Algorithm::HS256),
        Public::SymCipher { .. } => None,
    }
}

/// The attestation key's template: a restricted ECDSA P-256/SHA-256 signing key, created
/// as a primary under the endorsement hierarchy, so the same AK comes back from the
/// endorsement seed after every reboot. Restricted: it signs only structures the TPM
/// itself built (`TPMS_ATTEST`), never a caller's digest that could mimic one.
pub(crate) fn attestation_key() -> Result<Public, HardwareError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .build()
        .map_err(|e| template_error("attestation key attribute", e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .with_restricted(true)
            .build()
            .map_err(|e| template_error("attestation key", e))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| template_error("attestation key", e))
}
