//! Key attestation for one key version (docs/attestation.md): what the hardware says
//! about the key, bound to the version's public key.
//!
//! - TPM: the TPM's own `TPM2_Certify` under its attestation key (AK). keygate adds
//!   nothing a relying party must trust; it records the AK in the store the first time
//!   and refuses to attest under a different one later.
//! - PKCS#11: the key's protection attributes as the token reports them, in a JSON
//!   statement with the version's public key, signed (JWS) by the audit ring.

use super::{KeyRegistry, KeysError, Purpose};
use crate::hardware::attestation::{Evidence, Pkcs11Attributes, TpmCertification};
use crate::hardware::HardwareError;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Serialize;

/// The ring whose key signs PKCS#11 attestation statements.
pub const AUDIT_RING: &str = "audit";

/// Attestation of one key version.
#[derive(Debug, Clone)]
pub struct Attestation {
    pub ring: String,
    pub version: i64,
    pub kid: String,
    pub algorithm: String,
    pub state: String,
    /// The configured backend's name and its kind (`tpm`, `pkcs11`).
    pub backend: String,
    pub backend_kind: String,
    /// DER SubjectPublicKeyInfo of the version (none for MAC keys).
    pub public_key_spki: Option<Vec<u8>>,
    pub nonce: Vec<u8>,
    pub evidence: AttestationEvidence,
}

/// The device-specific part.
#[derive(Debug, Clone)]
pub enum AttestationEvidence {
    Tpm {
        certification: TpmCertification,
        /// When keygate first recorded this AK.
        ak_recorded_at: i64,
    },
    Pkcs11 {
        attributes: Pkcs11Attributes,
        /// The exact statement bytes (JSON) the audit ring signed.
        statement: Vec<u8>,
        /// Compact JWS of `statement` by the audit ring.
        jws: String,
        audit_kid: String,
        audit_algorithm: String,
        /// The audit ring's public key (DER SPKI) that verifies `jws`.
        audit_public_key_spki: Vec<u8>,
    },
}

/// The statement the audit ring signs for a PKCS#11 key. Field order is the JSON order.
#[derive(Serialize)]
struct Pkcs11Statement<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ring: &'a str,
    version: i64,
    kid: &'a str,
    algorithm: &'a str,
    backend: &'a str,
    key: String,
    /// base64 (standard) DER SPKI.
    public_key_spki: Option<String>,
    attributes: &'a Pkcs11Attributes,
    /// base64url of the relying party's nonce.
    nonce: String,
    iat: i64,
}

impl KeyRegistry {
    /// Attests version `version` of `ring` with the relying party's `nonce`.
    pub async fn attest(
        &self,
        ring: &str,
        version: i64,
        nonce: Vec<u8>,
        now: i64,
    ) -> Result<Attestation, KeysError> {
        let v = self.version(ring, version)?;
        if !v.state.live() {
            return Err(KeysError::Conflict(format!(
                "{ring} v{version} is destroyed; there is no key left to attest"
            )));
        }
        let executor = self.backend(&v.backend)?;
        let backend_kind = executor.backend().kind().to_string();
        let (loc, n) = (v.locator.clone(), nonce.clone());
        let evidence = executor
            .run("attest", move |b| match b.attestation() {
                Some(a) => a.attest(&loc, &n),
                None => Err(HardwareError::NotSupported(format!(
                    "{} backends have no key attestation",
                    b.kind()
                ))),
            })
            .await?;
        let public_key_spki = match &v.public_key {
            Some(p) => Some(p.spki_der()?),
            None => None,
        };
        let evidence = match evidence {
            Evidence::Tpm(certification) => {
                let name = hex(&certification.ak_name);
                let recorded = self
                    .store
                    .record_attestation_key(&v.backend, &name, &certification.ak_public, now)
                    .await?;
                if recorded.ak_name != name {
                    return Err(KeysError::Conflict(format!(
                        "backend {:?} certified with attestation key {name}, but keygate recorded {} for it: another TPM, or its endorsement hierarchy was cleared (docs/attestation.md)",
                        v.backend, recorded.ak_name
                    )));
                }
                AttestationEvidence::Tpm {
                    certification,
                    ak_recorded_at: recorded.recorded_at,
                }
            }
            Evidence::Pkcs11(attributes) => {
                let audit = self.active(AUDIT_RING)?;
                if audit.purpose != Purpose::Audit {
                    return Err(KeysError::Invalid(
                        "the audit ring is not an audit ring".into(),
                    ));
                }
                let audit_spki = audit
                    .public_key
                    .as_ref()
                    .ok_or_else(|| KeysError::Corrupt("the audit ring has no public key".into()))?
                    .spki_der()?;
                let statement = serde_json::to_vec(&Pkcs11Statement {
                    kind: "keygate.pkcs11-key-attestation",
                    ring,
                    version,
                    kid: &v.kid,
                    algorithm: v.algorithm.name(),
                    backend: &v.backend,
                    key: v.locator.uri(),
                    public_key_spki: public_key_spki.as_ref().map(|d| STANDARD.encode(d)),
                    attributes: &attributes,
                    nonce: URL_SAFE_NO_PAD.encode(&nonce),
                    iat: now,
                })
                .map_err(|e| KeysError::Invalid(format!("statement: {e}")))?;
                let header = serde_json::json!({
                    "alg": audit.algorithm.name(),
                    "kid": audit.kid,
                    "typ": "keygate-key-attestation+jws",
                });
                let signing_input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(&statement)
                );
                let sig = self
                    .sign(&audit, signing_input.clone().into_bytes())
                    .await?;
                AttestationEvidence::Pkcs11 {
                    attributes,
                    statement,
                    jws: format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&sig.0)),
                    audit_kid: audit.kid.clone(),
                    audit_algorithm: audit.algorithm.name().to_string(),
                    audit_public_key_spki: audit_spki,
                }
            }
        };
        Ok(Attestation {
            ring: v.ring.clone(),
            version: v.version,
            kid: v.kid.clone(),
            algorithm: v.algorithm.name().to_string(),
            state: v.state.to_string(),
            backend: v.backend.clone(),
            backend_kind,
            public_key_spki,
            nonce,
            evidence,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
