//! The seam between rustls and the hardware: a [`rustls::sign::SigningKey`] whose every
//! signature is made by the device holding the `tls-identity` key, and an rcgen
//! [`rcgen::RemoteKeyPair`] over the same key for certificates and CSRs.
//!
//! rustls calls [`Signer::sign`] synchronously, in the middle of a handshake that runs on
//! an async worker. A device call can take milliseconds, so it must not run there. The
//! signer wraps the call in `tokio::task::block_in_place`, which hands the worker's other
//! tasks to another thread for the duration, and submits the call to the backend's
//! bounded [`HardwareExecutor`] pool with [`HardwareExecutor::run_blocking`]: the device
//! sees no more concurrent calls than it has sessions, exactly as for JWT signing, and the
//! async workers keep serving. Outside a multi-threaded runtime (the CLI's certificate
//! building runs inside `block_on`, tests may use a current-thread runtime) the call
//! simply waits on the pool.

use crate::hardware::executor::HardwareExecutor;
use crate::hardware::public_key::PublicKeyMaterial;
use crate::hardware::{Algorithm, HardwareError, KeyLocator, PublicKey};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::sync::Arc;

/// One hardware key, as both signers need it.
#[derive(Debug)]
struct HardwareKey {
    exec: HardwareExecutor,
    locator: KeyLocator,
    public: PublicKey,
    spki: Vec<u8>,
}

impl HardwareKey {
    /// Signs `msg` on the device with `alg`, off the async workers. ECDSA comes back as
    /// DER (X9.62), the form TLS and X.509 use; the device gives raw r‖s.
    fn sign(&self, alg: Algorithm, msg: &[u8]) -> Result<Vec<u8>, HardwareError> {
        let (exec, loc, msg) = (self.exec.clone(), self.locator.clone(), msg.to_vec());
        let call = move || exec.run_blocking("tls_sign", move |b| b.sign(&loc, alg, &msg));
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let sig = if on_multi_thread_runtime {
            tokio::task::block_in_place(call)?
        } else {
            call()?
        };
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => ecdsa_raw_to_der(&sig.0),
            _ => Ok(sig.0),
        }
    }
}

/// Encodes a raw r‖s ECDSA signature as `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, HardwareError> {
    use spki::der::asn1::{SequenceOf, UintRef};
    use spki::der::Encode;
    let bad = |e: spki::der::Error| HardwareError::Failure(format!("ECDSA signature: {e}"));
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(HardwareError::Failure(format!(
            "ECDSA signature of {} bytes is not r‖s",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut seq: SequenceOf<UintRef<'_>, 2> = SequenceOf::new();
    seq.add(UintRef::new(r).map_err(bad)?).map_err(bad)?;
    seq.add(UintRef::new(s).map_err(bad)?).map_err(bad)?;
    seq.to_der().map_err(bad)
}

/// The TLS identity as rustls sees it: every handshake signature is made in hardware.
#[derive(Debug, Clone)]
pub struct HardwareSigningKey {
    key: Arc<HardwareKey>,
}

impl HardwareSigningKey {
    /// A signing key for the hardware key at `locator` whose public half is `public`.
    pub fn new(
        exec: HardwareExecutor,
        locator: KeyLocator,
        public: PublicKey,
    ) -> Result<Self, HardwareError> {
        if public.algorithm.is_mac() {
            return Err(HardwareError::InvalidInput(
                "a MAC key cannot be a TLS identity".into(),
            ));
        }
        let spki = public.spki_der()?;
        Ok(HardwareSigningKey {
            key: Arc::new(HardwareKey {
                exec,
                locator,
                public,
                spki,
            }),
        })
    }

    /// SPKI DER of the key, for comparison with a certificate.
    pub fn spki(&self) -> &[u8] {
        &self.key.spki
    }

    /// An rcgen key pair over the same hardware key, for self-signed certificates and CSRs.
    pub fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair, rcgen::Error> {
        rcgen::KeyPair::from_remote(Box::new(RcgenRemote {
            key: self.key.clone(),
            raw_public: raw_public_key(&self.key.public)?,
        }))
    }
}

/// The schemes a key of `alg` can sign, best first, with the device algorithm for each.
fn schemes(alg: Algorithm) -> &'static [(SignatureScheme, Algorithm)] {
    match alg {
        Algorithm::ES256 => &[(SignatureScheme::ECDSA_NISTP256_SHA256, Algorithm::ES256)],
        Algorithm::ES384 => &[(SignatureScheme::ECDSA_NISTP384_SHA384, Algorithm::ES384)],
        Algorithm::EdDSA => &[(SignatureScheme::ED25519, Algorithm::EdDSA)],
        // One RSA key signs with either padding: TLS 1.3 needs PSS, some TLS 1.2 clients
        // offer only PKCS#1 v1.5.
        Algorithm::RS256 | Algorithm::PS256 => &[
            (SignatureScheme::RSA_PSS_SHA256, Algorithm::PS256),
            (SignatureScheme::RSA_PKCS1_SHA256, Algorithm::RS256),
        ],
        Algorithm::RS256_3072 | Algorithm::PS256_3072 => &[
            (SignatureScheme::RSA_PSS_SHA256, Algorithm::PS256_3072),
            (SignatureScheme::RSA_PKCS1_SHA256, Algorithm::RS256_3072),
        ],
        Algorithm::HS256 => &[],
    }
}

impl SigningKey for HardwareSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        schemes(self.key.public.algorithm)
            .iter()
            .find(|(s, _)| offered.contains(s))
            .map(|&(scheme, alg)| {
                Box::new(HardwareSigner {
                    key: self.key.clone(),
                    scheme,
                    alg,
                }) as Box<dyn Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.key.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.public.algorithm {
            Algorithm::ES256 | Algorithm::ES384 => SignatureAlgorithm::ECDSA,
            Algorithm::EdDSA => SignatureAlgorithm::ED25519,
            _ => SignatureAlgorithm::RSA,
        }
    }
}

#[derive(Debug)]
struct HardwareSigner {
    key: Arc<HardwareKey>,
    scheme: SignatureScheme,
    alg: Algorithm,
}

impl Signer for HardwareSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(self.alg, message).map_err(|e| {
            tracing::error!(error = %e, key = %self.key.locator.uri(), "TLS handshake signature failed in hardware");
            rustls::Error::General(format!("hardware signature failed: {}", e.kind()))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// The public key in rcgen's "raw" form: the EC point, the Ed25519 key, or the PKCS#1
/// RSAPublicKey.
fn raw_public_key(p: &PublicKey) -> Result<Vec<u8>, rcgen::Error> {
    use spki::der::Encode;
    match &p.material {
        PublicKeyMaterial::Ec { point } => Ok(point.clone()),
        PublicKeyMaterial::Ed25519 { key } => Ok(key.clone()),
        PublicKeyMaterial::Rsa { n, e } => {
            let bad = |_| rcgen::Error::KeyGenerationUnavailable;
            let rsa = pkcs1::RsaPublicKey {
                modulus: pkcs1::UintRef::new(n).map_err(bad)?,
                public_exponent: pkcs1::UintRef::new(e).map_err(bad)?,
            };
            rsa.to_der().map_err(bad)
        }
    }
}

struct RcgenRemote {
    key: Arc<HardwareKey>,
    raw_public: Vec<u8>,
}

impl RcgenRemote {
    /// The device algorithm for certificate signatures. PSS keys sign certificates with
    /// PKCS#1 v1.5 (rcgen does not offer RSASSA-PSS for remote keys); the key is the same.
    fn device_alg(&self) -> Algorithm {
        match self.key.public.algorithm {
            Algorithm::PS256 => Algorithm::RS256,
            Algorithm::PS256_3072 => Algorithm::RS256_3072,
            a => a,
        }
    }
}

impl rcgen::RemoteKeyPair for RcgenRemote {
    fn public_key(&self) -> &[u8] {
        &self.raw_public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign(self.device_alg(), msg).map_err(|e| {
            tracing::error!(error = %e, "certificate signature failed in hardware");
            rcgen::Error::RemoteKeyError
        })
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.key.public.algorithm {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            _ => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ecdsa_becomes_der_with_minimal_positive_integers() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero to stay positive
        raw[63] = 1; // s is 1 after stripping zeros
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 38, 0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1]);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }
}
