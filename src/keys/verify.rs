//! Software verification of signatures made by hardware keys.
//!
//! Verification needs only public keys, which are cached in memory, so it never calls the
//! hardware. It uses aws-lc-rs with the exact JWS encodings: ECDSA as fixed-width r‖s
//! (P1363), Ed25519, RSASSA-PKCS1-v1_5 and RSASSA-PSS with SHA-256 and a 32-byte salt.
//! Every path here is checked against the Wycheproof vectors in the test suite.

use crate::hardware::public_key::PublicKeyMaterial;
use crate::hardware::{Algorithm, PublicKey};
use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use subtle::ConstantTimeEq;

/// True when `sig` is a valid `alg` signature of `msg` under `key`.
///
/// The algorithm must match the key's type exactly: an RSA key never verifies an ECDSA
/// signature, a P-256 key never an ES384 one. MAC algorithms never verify here.
pub fn verify_signature(key: &PublicKey, alg: Algorithm, msg: &[u8], sig: &[u8]) -> bool {
    match (&key.material, alg) {
        (PublicKeyMaterial::Ec { point }, Algorithm::ES256) if point.len() == 65 => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(msg, sig)
                .is_ok()
        }
        (PublicKeyMaterial::Ec { point }, Algorithm::ES384) if point.len() == 97 => {
            UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                .verify(msg, sig)
                .is_ok()
        }
        (PublicKeyMaterial::Ed25519 { key }, Algorithm::EdDSA) => {
            UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(msg, sig)
                .is_ok()
        }
        (PublicKeyMaterial::Rsa { n, e }, a) => {
            let params = match a {
                Algorithm::RS256 | Algorithm::RS256_3072 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::PS256 | Algorithm::PS256_3072 => &signature::RSA_PSS_2048_8192_SHA256,
                _ => return false,
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, msg, sig)
                .is_ok()
        }
        _ => false,
    }
}

/// Constant-time comparison of two MACs of equal expected length.
pub fn mac_matches(computed: &[u8], expected: &[u8]) -> bool {
    computed.len() == expected.len() && bool::from(computed.ct_eq(expected))
}
