//! Signing and MAC on the token.
//!
//! ECDSA comes back from PKCS#11 as raw r‖s, which is already the JWS form. Devices without
//! `CKM_ECDSA_SHA256` (SoftHSM 2.6 among them; `quirks.ecdsa_hash_in_software`) get the
//! digest computed here and signed with plain `CKM_ECDSA`: the message is not secret, the
//! key never leaves the device either way.

use super::Pkcs11Backend;
use crate::hardware::{Algorithm, HardwareError, Mac, Signature};
use aws_lc_rs::digest;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;

impl Pkcs11Backend {
    pub(super) fn sign_with(
        &self,
        id: &[u8],
        alg: Algorithm,
        msg: &[u8],
    ) -> Result<Signature, HardwareError> {
        let soft_hash = self.profile.quirks.ecdsa_hash_in_software;
        let (mechanism, data): (Mechanism, Vec<u8>) = match alg {
            Algorithm::ES256 if soft_hash => (
                Mechanism::Ecdsa,
                digest::digest(&digest::SHA256, msg).as_ref().to_vec(),
            ),
            Algorithm::ES384 if soft_hash => (
                Mechanism::Ecdsa,
                digest::digest(&digest::SHA384, msg).as_ref().to_vec(),
            ),
            Algorithm::ES256 => (Mechanism::EcdsaSha256, msg.to_vec()),
            Algorithm::ES384 => (Mechanism::EcdsaSha384, msg.to_vec()),
            Algorithm::EdDSA => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                msg.to_vec(),
            ),
            Algorithm::RS256 | Algorithm::RS256_3072 => (Mechanism::Sha256RsaPkcs, msg.to_vec()),
            Algorithm::PS256 | Algorithm::PS256_3072 => (
                Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                }),
                msg.to_vec(),
            ),
            Algorithm::HS256 => {
                return Err(HardwareError::InvalidInput(
                    "HS256 keys MAC, they do not sign".into(),
                ))
            }
        };
        let sig = self.with_object("signing", ObjectClass::PRIVATE_KEY, id, &mut |s, h| {
            s.sign(&mechanism, h, &data)
        })?;
        let want = match alg {
            Algorithm::ES256 => Some(64),
            Algorithm::ES384 => Some(96),
            Algorithm::EdDSA => Some(64),
            _ => None,
        };
        if let Some(want) = want {
            if sig.len() != want {
                return Err(HardwareError::Failure(format!(
                    "device returned a {}-byte {alg} signature; expected {want}",
                    sig.len()
                )));
            }
        }
        Ok(Signature(sig))
    }

    pub(super) fn hmac_sha256(&self, id: &[u8], msg: &[u8]) -> Result<Mac, HardwareError> {
        let tag = self.with_object(
            "computing HMAC",
            ObjectClass::SECRET_KEY,
            id,
            &mut |s, h| s.sign(&Mechanism::Sha256Hmac, h, msg),
        )?;
        if tag.len() != 32 {
            return Err(HardwareError::Failure(format!(
                "device returned a {}-byte HMAC-SHA256",
                tag.len()
            )));
        }
        Ok(Mac(tag))
    }
}
