//! Public keys read out of the hardware, in the two forms keygate hands out: SPKI DER (for
//! certificates and software verification) and JWK (for JWKS).

use crate::hardware::{Algorithm, HardwareError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use spki::der::asn1::{BitString, ObjectIdentifier};
use spki::der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The raw key material of a public key, as the verifier needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyMaterial {
    /// Uncompressed SEC1 point (0x04 ‖ x ‖ y).
    Ec { point: Vec<u8> },
    /// 32-byte Ed25519 public key.
    Ed25519 { key: Vec<u8> },
    /// Big-endian modulus and exponent without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// A public key with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub algorithm: Algorithm,
    pub material: PublicKeyMaterial,
}

fn strip_leading_zeros(b: &[u8]) -> Vec<u8> {
    let start = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    b[start..].to_vec()
}

impl PublicKey {
    pub fn ec(algorithm: Algorithm, point: Vec<u8>) -> Result<Self, HardwareError> {
        let want = match algorithm {
            Algorithm::ES256 => 65,
            Algorithm::ES384 => 97,
            _ => {
                return Err(HardwareError::InvalidInput(format!(
                    "{algorithm} is not an EC algorithm"
                )))
            }
        };
        if point.len() != want || point[0] != 0x04 {
            return Err(HardwareError::Failure(format!(
                "device returned an EC point of {} bytes for {algorithm}; expected {want} uncompressed",
                point.len()
            )));
        }
        Ok(PublicKey {
            algorithm,
            material: PublicKeyMaterial::Ec { point },
        })
    }

    pub fn ed25519(key: Vec<u8>) -> Result<Self, HardwareError> {
        if key.len() != 32 {
            return Err(HardwareError::Failure(format!(
                "device returned an Ed25519 key of {} bytes",
                key.len()
            )));
        }
        Ok(PublicKey {
            algorithm: Algorithm::EdDSA,
            material: PublicKeyMaterial::Ed25519 { key },
        })
    }

    pub fn rsa(algorithm: Algorithm, n: &[u8], e: &[u8]) -> Self {
        PublicKey {
            algorithm,
            material: PublicKeyMaterial::Rsa {
                n: strip_leading_zeros(n),
                e: strip_leading_zeros(e),
            },
        }
    }

    /// DER-encoded SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Result<Vec<u8>, HardwareError> {
        let enc = |e: spki::der::Error| HardwareError::Failure(format!("SPKI encoding: {e}"));
        let (oid, params, bits): (ObjectIdentifier, Option<ObjectIdentifier>, Vec<u8>) =
            match &self.material {
                PublicKeyMaterial::Ec { point } => {
                    let curve = if self.algorithm == Algorithm::ES384 {
                        OID_P384
                    } else {
                        OID_P256
                    };
                    (OID_EC_PUBLIC_KEY, Some(curve), point.clone())
                }
                PublicKeyMaterial::Ed25519 { key } => (OID_ED25519, None, key.clone()),
                PublicKeyMaterial::Rsa { n, e } => {
                    let rsa = pkcs1::RsaPublicKey {
                        modulus: pkcs1::UintRef::new(n).map_err(enc)?,
                        public_exponent: pkcs1::UintRef::new(e).map_err(enc)?,
                    };
                    (OID_RSA, None, rsa.to_der().map_err(enc)?)
                }
            };
        let parameters = match (params, &self.material) {
            (Some(curve), _) => Some(spki::der::Any::from(&curve)),
            // RSA carries an explicit NULL; Ed25519 carries nothing.
            (None, PublicKeyMaterial::Rsa { .. }) => {
                Some(spki::der::Any::from(spki::der::asn1::Null))
            }
            (None, _) => None,
        };
        let info = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned { oid, parameters },
            subject_public_key: BitString::from_bytes(&bits).map_err(enc)?,
        };
        info.to_der().map_err(enc)
    }

    /// Parses an SPKI DER that must hold a key of `algorithm`'s type: the algorithm
    /// identifier and, for EC, the curve are checked, so a secp256k1 or X25519 key is
    /// never taken for ES256 or EdDSA.
    pub fn from_spki_der(algorithm: Algorithm, der: &[u8]) -> Result<Self, HardwareError> {
        let bad = |e: String| HardwareError::InvalidInput(format!("SPKI: {e}"));
        let info = SubjectPublicKeyInfoOwned::from_der(der).map_err(|e| bad(e.to_string()))?;
        let bits = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| bad("unused bits".into()))?;
        let oid = info.algorithm.oid;
        let curve = info
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        let expect = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(bad(format!("not {what}")))
            }
        };
        match algorithm {
            Algorithm::ES256 => {
                expect(
                    oid == OID_EC_PUBLIC_KEY && curve == Some(OID_P256),
                    "a P-256 key",
                )?;
                PublicKey::ec(algorithm, bits.to_vec())
            }
            Algorithm::ES384 => {
                expect(
                    oid == OID_EC_PUBLIC_KEY && curve == Some(OID_P384),
                    "a P-384 key",
                )?;
                PublicKey::ec(algorithm, bits.to_vec())
            }
            Algorithm::EdDSA => {
                expect(
                    oid == OID_ED25519 && info.algorithm.parameters.is_none(),
                    "an Ed25519 key",
                )?;
                PublicKey::ed25519(bits.to_vec())
            }
            a if a.rsa_bits().is_some() => {
                expect(oid == OID_RSA, "an RSA key")?;
                let rsa = pkcs1::RsaPublicKey::from_der(bits).map_err(|e| bad(e.to_string()))?;
                Ok(PublicKey::rsa(
                    a,
                    rsa.modulus.as_bytes(),
                    rsa.public_exponent.as_bytes(),
                ))
            }
            a => Err(bad(format!("{a} has no public key"))),
        }
    }

    /// The JWK for this key with the given `kid` (RFC 7517/7518/8037).
    pub fn jwk(&self, kid: &str) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let alg = self.algorithm.jws_alg();
        match &self.material {
            PublicKeyMaterial::Ec { point } => {
                let n = (point.len() - 1) / 2;
                let crv = if self.algorithm == Algorithm::ES384 {
                    "P-384"
                } else {
                    "P-256"
                };
                json!({"kty": "EC", "crv": crv, "x": b64(&point[1..1 + n]), "y": b64(&point[1 + n..]),
                       "kid": kid, "alg": alg, "use": "sig"})
            }
            PublicKeyMaterial::Ed25519 { key } => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key), "kid": kid, "alg": alg, "use": "sig"})
            }
            PublicKeyMaterial::Rsa { n, e } => {
                json!({"kty": "RSA", "n": b64(n), "e": b64(e), "kid": kid, "alg": alg, "use": "sig"})
            }
        }
    }
}

impl PublicKey {
    /// RFC 7638 JWK thumbprint (SHA-256, base64url), used as the `kid`.
    pub fn thumbprint(&self) -> String {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        // Members in lexicographic order, no whitespace, as RFC 7638 §3 requires.
        let canonical = match &self.material {
            PublicKeyMaterial::Ec { point } => {
                let n = (point.len() - 1) / 2;
                let crv = if self.algorithm == Algorithm::ES384 {
                    "P-384"
                } else {
                    "P-256"
                };
                format!(
                    r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                    b64(&point[1..1 + n]),
                    b64(&point[1 + n..])
                )
            }
            PublicKeyMaterial::Ed25519 { key } => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(key))
            }
            PublicKeyMaterial::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
            }
        };
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_spki_of_another_curve_or_type_is_refused() {
        let k1 = PublicKey {
            algorithm: Algorithm::ES256,
            material: PublicKeyMaterial::Ec {
                point: [vec![4u8], vec![7u8; 64]].concat(),
            },
        };
        let mut der = k1.spki_der().unwrap();
        let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let pos = der.windows(8).position(|w| w == p256).unwrap();
        // Change the curve to 1.2.840.10045.3.1.8: same shape, not P-256.
        der[pos + 7] = 0x08;
        assert!(PublicKey::from_spki_der(Algorithm::ES256, &der).is_err());
        assert!(PublicKey::from_spki_der(Algorithm::EdDSA, &k1.spki_der().unwrap()).is_err());
        assert!(PublicKey::from_spki_der(Algorithm::ES256, &k1.spki_der().unwrap()).is_ok());
    }
}
