//! `TPM2_Certify` of keygate's TPM keys by an attestation key (docs/attestation.md).
//!
//! The AK is a primary key under the endorsement hierarchy built from a fixed template
//! ([`templates::attestation_key`]): restricted, so it signs only attestation structures
//! the TPM built itself, and derived from the endorsement seed, so it is the same key on
//! every call and after every reboot. It is created for the command and flushed after.
//! Endorsement-key certificates are read from the TCG EK credential profile NV indices
//! when the TPM carries them.

use super::templates;
use super::{blobs, Step, TpmBackend};
use crate::hardware::attestation::{
    ecdsa_der, Evidence, KeyAttestation, TpmCertification, MAX_NONCE,
};
use crate::hardware::{Algorithm, HardwareError, KeyLocator};
use tss_esapi::abstraction::nv;
use tss_esapi::handles::{KeyHandle, NvIndexTpmHandle};
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Data, PublicBuffer, Signature, SignatureScheme};
use tss_esapi::traits::Marshall;

/// TCG EK Credential Profile 2.x: the RSA-2048 and ECC P-256 EK certificate indices.
const EK_CERT_INDICES: [u32; 2] = [0x01c0_0002, 0x01c0_000a];

/// What `TPM2_Certify` returned, still in TSS types.
struct Certified {
    attest: Vec<u8>,
    signature: Signature,
    ak_public: tss_esapi::structures::Public,
    ak_name: Vec<u8>,
    key_public: tss_esapi::structures::Public,
    key_name: Vec<u8>,
}

impl TpmBackend {
    /// The DER EK certificates this TPM holds in its NV (none is not an error).
    fn ek_certificates(&self) -> Result<Vec<Vec<u8>>, HardwareError> {
        self.call(|dev| {
            let present = match nv::list(&mut dev.ctx) {
                Ok(l) => l,
                Err(e) => return Err(Step::Tss("listing NV indices".into(), e)),
            };
            let mut out = Vec::new();
            for (public, _) in present {
                let index = u32::from(public.nv_index());
                if !EK_CERT_INDICES.contains(&index) {
                    continue;
                }
                let handle = NvIndexTpmHandle::new(index)
                    .map_err(|e| Step::Tss("EK certificate index".into(), e))?;
                match nv::read_full(&mut dev.ctx, NvAuth::Owner, handle) {
                    Ok(der) => out.push(der),
                    Err(e) => tracing::warn!(index = format!("{index:#010x}"), error = %e,
                        "could not read the EK certificate; attestation goes without it"),
                }
            }
            Ok(out)
        })
    }
}

impl KeyAttestation for TpmBackend {
    fn attest(&self, key: &KeyLocator, nonce: &[u8]) -> Result<Evidence, HardwareError> {
        if nonce.len() > MAX_NONCE {
            return Err(HardwareError::InvalidInput(format!(
                "the nonce is {} bytes; at most {MAX_NONCE}",
                nonce.len()
            )));
        }
        let qualifying = Data::try_from(nonce.to_vec())
            .map_err(|e| HardwareError::InvalidInput(format!("nonce: {e}")))?;
        let ak_template = templates::attestation_key()?;
        let uri = key.uri();
        let certified = self.with_key(key, "certifying", |dev, handle, _| {
            let (key_public, key_name, _) =
                dev.ctx.execute_without_session(|c| c.read_public(handle))?;
            // The AK takes one more object slot; the key just loaded is the most recently
            // used, so making room never flushes it.
            dev.room(1, false)?;
            let ak: KeyHandle = dev
                .ctx
                .create_primary(
                    Hierarchy::Endorsement,
                    ak_template.clone(),
                    None,
                    None,
                    None,
                    None,
                )?
                .key_handle;
            let run = |dev: &mut super::device::Device| -> Result<Certified, tss_esapi::Error> {
                let (ak_public, ak_name, _) =
                    dev.ctx.execute_without_session(|c| c.read_public(ak))?;
                // Both the key and the AK authorise with their (empty) auth values.
                let (attest, signature) = dev.ctx.execute_with_sessions(
                    (
                        Some(AuthSession::Password),
                        Some(AuthSession::Password),
                        None,
                    ),
                    |c| c.certify(handle.into(), ak, qualifying.clone(), SignatureScheme::Null),
                )?;
                Ok(Certified {
                    attest: attest.marshall()?,
                    signature,
                    ak_public,
                    ak_name: ak_name.value().to_vec(),
                    key_public: key_public.clone(),
                    key_name: key_name.value().to_vec(),
                })
            };
            let result = run(dev);
            let _ = dev.ctx.flush_context(ak.into());
            result
        })?;
        let malformed = |what: &str| {
            HardwareError::Failure(format!("{uri}: the TPM returned a malformed {what}"))
        };
        let signature_der = match &certified.signature {
            Signature::EcDsa(s) => ecdsa_der(s.signature_r().value(), s.signature_s().value()),
            _ => return Err(malformed("certification signature")),
        };
        let marshal = |p: &tss_esapi::structures::Public, what: &str| {
            PublicBuffer::try_from(p.clone())
                .and_then(|b| b.marshall())
                .map_err(|e| HardwareError::Failure(format!("{uri}: marshalling the {what}: {e}")))
        };
        let ak_spki =
            blobs::public_key(&uri, Algorithm::ES256, &certified.ak_public)?.spki_der()?;
        Ok(Evidence::Tpm(TpmCertification {
            certify_info: certified.attest,
            signature: certified
                .signature
                .marshall()
                .map_err(|_| malformed("certification signature"))?,
            signature_der,
            ak_public: marshal(&certified.ak_public, "AK public area")?,
            ak_spki,
            ak_name: certified.ak_name,
            key_public: marshal(&certified.key_public, "key public area")?,
            key_name: certified.key_name,
            ek_certificates: self.ek_certificates()?,
        }))
    }
}
