//! One backend conformance suite, run against every backend keygate ships: SoftHSM
//! (PKCS#11) and swtpm (TPM 2.0). Each test states what any backend must do behind the
//! [`Backend`] trait, and runs it on both; a TPM test gets its own fresh simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::swtpm::Swtpm;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use keygate::hardware::public_key::PublicKeyMaterial;
use keygate::hardware::tpm::{TpmBackend, TpmSettings, DEFAULT_MAX_LOADED};
use keygate::hardware::{Algorithm, Backend, HardwareError, Health, KeyLocator, KeySpec};
use keygate::keys::verify::{mac_matches, verify_signature};
use std::sync::Arc;

const MESSAGE: &[u8] = b"keygate conformance: any backend, same contract";

/// A backend under test, with what keeps it alive (the simulator for a TPM).
pub struct Subject {
    pub name: &'static str,
    pub backend: Arc<dyn Backend>,
    pub tpm: Option<Arc<TpmBackend>>,
    _swtpm: Option<Swtpm>,
}

impl Subject {
    pub fn softhsm() -> Subject {
        Subject {
            name: "softhsm",
            backend: crate::common::hsm::backend(),
            tpm: None,
            _swtpm: None,
        }
    }

    pub fn swtpm() -> Subject {
        let sim = Swtpm::start();
        let tpm = Arc::new(TpmBackend::new(TpmSettings {
            tcti: sim.tcti(),
            owner_auth: None,
            max_loaded: DEFAULT_MAX_LOADED,
        }));
        Subject {
            name: "swtpm",
            backend: tpm.clone(),
            tpm: Some(tpm),
            _swtpm: Some(sim),
        }
    }

    /// Asymmetric algorithms this backend must support. A TPM 2.0 has no Ed25519.
    pub fn signing_algorithms(&self) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|a| !a.is_mac())
            .filter(|a| self.tpm.is_none() || *a != Algorithm::EdDSA)
            .collect()
    }

    pub fn generate(&self, alg: Algorithm, what: &str) -> KeyLocator {
        self.backend
            .generate(&KeySpec {
                algorithm: alg,
                label: format!("conformance-{what}-{}", alg.name()),
            })
            .unwrap_or_else(|e| panic!("{}: generating {alg}: {e}", self.name))
    }
}

fn both() -> [Subject; 2] {
    [Subject::softhsm(), Subject::swtpm()]
}

fn flip_first_bit(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v[0] ^= 1;
    v
}

fn aws_alg(alg: Algorithm) -> &'static dyn VerificationAlgorithm {
    match alg {
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
        Algorithm::RS256 | Algorithm::RS256_3072 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::PS256 | Algorithm::PS256_3072 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::HS256 => panic!("HS256 has no verification algorithm"),
    }
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` of a fixed-width r‖s signature.
fn p1363_to_der(sig: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let start = b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1);
        let mut v = b[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let (r, s) = sig.split_at(sig.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

fn assert_error(
    subject: &str,
    what: &str,
    r: Result<impl std::fmt::Debug, HardwareError>,
    allowed: &[&str],
) -> String {
    match r {
        Err(e) => {
            assert!(
                allowed.contains(&e.kind()),
                "{subject}: {what}: expected one of {allowed:?}, got {e:?}"
            );
            e.to_string()
        }
        Ok(v) => panic!("{subject}: {what}: expected an error, got Ok({v:?})"),
    }
}

#[test]
fn every_signing_algorithm_generates_signs_and_verifies_with_aws_lc_rs() {
    for s in both() {
        for alg in s.signing_algorithms() {
            let loc = s.generate(alg, "sign");
            let pk = s
                .backend
                .public_key(&loc)
                .unwrap_or_else(|e| panic!("{}: {alg}: public_key: {e}", s.name));
            let sig = s
                .backend
                .sign(&loc, alg, MESSAGE)
                .unwrap_or_else(|e| panic!("{}: {alg}: sign: {e}", s.name))
                .0;
            // keygate's verifier, the one the Wycheproof vectors check.
            assert!(
                verify_signature(&pk, alg, MESSAGE, &sig),
                "{}: {alg}: signature must verify",
                s.name
            );
            assert!(
                !verify_signature(&pk, alg, &flip_first_bit(MESSAGE), &sig),
                "{}: {alg}: a changed message must not verify",
                s.name
            );
            // aws-lc-rs straight from the SPKI DER, independent of keygate's parsing.
            let der = pk.spki_der().unwrap();
            UnparsedPublicKey::new(aws_alg(alg), &der)
                .verify(MESSAGE, &sig)
                .unwrap_or_else(|_| panic!("{}: {alg}: aws-lc-rs rejects it", s.name));
            s.backend.destroy(&loc).unwrap();
        }
    }
}

#[test]
fn signatures_have_the_exact_jws_format() {
    for s in both() {
        for alg in s.signing_algorithms() {
            let loc = s.generate(alg, "format");
            let pk = s.backend.public_key(&loc).unwrap();
            // Several signatures, so a short r or s (1 in 256) is likely to show up.
            for i in 0..8u8 {
                let msg = [MESSAGE, &[i]].concat();
                let sig = s.backend.sign(&loc, alg, &msg).unwrap().0;
                match (&pk.material, alg) {
                    (PublicKeyMaterial::Ec { .. }, Algorithm::ES256 | Algorithm::ES384) => {
                        let n = if alg == Algorithm::ES256 { 32 } else { 48 };
                        assert_eq!(
                            sig.len(),
                            2 * n,
                            "{}: {alg}: JWS ECDSA is fixed-width r‖s, never DER",
                            s.name
                        );
                        let asn1: &dyn VerificationAlgorithm = if n == 32 {
                            &signature::ECDSA_P256_SHA256_ASN1
                        } else {
                            &signature::ECDSA_P384_SHA384_ASN1
                        };
                        let PublicKeyMaterial::Ec { point } = &pk.material else {
                            unreachable!()
                        };
                        UnparsedPublicKey::new(asn1, point)
                            .verify(&msg, &p1363_to_der(&sig))
                            .unwrap_or_else(|_| {
                                panic!("{}: {alg}: r and s are not the signature's", s.name)
                            });
                    }
                    (PublicKeyMaterial::Rsa { n, .. }, _) => {
                        assert_eq!(
                            sig.len(),
                            n.len(),
                            "{}: {alg}: RSA signatures are modulus-sized",
                            s.name
                        );
                    }
                    (PublicKeyMaterial::Ed25519 { .. }, Algorithm::EdDSA) => {
                        assert_eq!(sig.len(), 64)
                    }
                    (m, a) => panic!("{}: {a}: unexpected key material {m:?}", s.name),
                }
                assert!(verify_signature(&pk, alg, &msg, &sig), "{}: {alg}", s.name);
            }
            s.backend.destroy(&loc).unwrap();
        }
    }
}

#[test]
fn an_hmac_key_macs_deterministically_and_never_signs_or_publishes() {
    for s in both() {
        let a = s.generate(Algorithm::HS256, "mac-a");
        let b = s.generate(Algorithm::HS256, "mac-b");
        let t1 = s.backend.mac(&a, MESSAGE).unwrap();
        let t2 = s.backend.mac(&a, MESSAGE).unwrap();
        assert_eq!(t1.0.len(), 32, "{}: HMAC-SHA256 is 32 bytes", s.name);
        assert!(
            mac_matches(&t1.0, &t2.0),
            "{}: HMAC is deterministic",
            s.name
        );
        let other_msg = s.backend.mac(&a, &flip_first_bit(MESSAGE)).unwrap();
        assert_ne!(t1, other_msg, "{}: another message, another tag", s.name);
        let other_key = s.backend.mac(&b, MESSAGE).unwrap();
        assert_ne!(t1, other_key, "{}: another key, another tag", s.name);
        assert_error(
            s.name,
            "sign with an HMAC key",
            s.backend.sign(&a, Algorithm::HS256, MESSAGE),
            &["invalid_input", "not_supported"],
        );
        assert_error(
            s.name,
            "public key of an HMAC key",
            s.backend.public_key(&a),
            &["not_supported", "invalid_input"],
        );
        let ec = s.generate(Algorithm::ES256, "not-mac");
        assert_error(
            s.name,
            "mac with an EC key",
            s.backend.mac(&ec, MESSAGE),
            // PKCS#11 finds no secret-key object under that id.
            &["invalid_input", "not_supported", "key_not_found"],
        );
        for k in [a, b, ec] {
            s.backend.destroy(&k).unwrap();
        }
    }
}

#[test]
fn a_key_signs_only_the_algorithm_it_was_made_for() {
    for s in both() {
        let loc = s.generate(Algorithm::ES256, "one-alg");
        for other in [Algorithm::ES384, Algorithm::RS256, Algorithm::PS256] {
            assert_error(
                s.name,
                &format!("ES256 key signing {other}"),
                s.backend.sign(&loc, other, MESSAGE),
                &["invalid_input", "not_supported", "failure"],
            );
        }
        s.backend.destroy(&loc).unwrap();
    }
}

#[test]
fn destroy_takes_the_key_out_of_the_device() {
    for s in both() {
        let loc = s.generate(Algorithm::ES256, "destroy");
        s.backend.sign(&loc, Algorithm::ES256, MESSAGE).unwrap();
        s.backend.destroy(&loc).unwrap();
        // PKCS#11: the object is deleted from the token. TPM: the key's own storage
        // parent is evicted, so even the intact blob in `loc` cannot be loaded again.
        assert_error(
            s.name,
            "sign after destroy",
            s.backend.sign(&loc, Algorithm::ES256, MESSAGE),
            &["key_not_found"],
        );
        if let Some(tpm) = &s.tpm {
            assert_eq!(tpm.loaded_keys(), 0, "destroy flushes the key");
        }
    }
}

#[test]
fn a_locator_of_another_backend_or_a_mangled_one_is_refused_naming_the_key() {
    for s in both() {
        let good = s.generate(Algorithm::ES256, "good");
        let foreign = match &good {
            KeyLocator::Pkcs11 { .. } => KeyLocator::Tpm {
                parent: "00".into(),
                parent_handle: None,
                label: "keygate:elsewhere:v1".into(),
                public: "AAAA".into(),
                private: "AAAA".into(),
            },
            _ => KeyLocator::Pkcs11 {
                token: "elsewhere".into(),
                id: "0102".into(),
            },
        };
        let msg = assert_error(
            s.name,
            "foreign locator",
            s.backend.sign(&foreign, Algorithm::ES256, MESSAGE),
            &["key_not_found"],
        );
        assert!(msg.contains(&foreign.uri()), "{}: {msg}", s.name);
        let mangled = match &good {
            KeyLocator::Pkcs11 { token, .. } => KeyLocator::Pkcs11 {
                token: token.clone(),
                id: "zz".into(),
            },
            KeyLocator::Tpm {
                parent,
                parent_handle,
                label,
                private,
                ..
            } => KeyLocator::Tpm {
                parent: parent.clone(),
                parent_handle: *parent_handle,
                label: label.clone(),
                public: "not base64 !".into(),
                private: private.clone(),
            },
        };
        assert_error(
            s.name,
            "mangled locator",
            s.backend.sign(&mangled, Algorithm::ES256, MESSAGE),
            &["invalid_input", "failure", "key_not_found"],
        );
        // The backend is unharmed.
        assert_eq!(s.backend.health(), Health::Ok, "{}", s.name);
        s.backend.sign(&good, Algorithm::ES256, MESSAGE).unwrap();
        s.backend.destroy(&good).unwrap();
    }
}

#[test]
fn random_fills_any_length_with_fresh_bytes_and_health_is_ok() {
    for s in both() {
        assert_eq!(s.backend.health(), Health::Ok, "{}", s.name);
        for len in [1usize, 31, 32, 33, 100] {
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            s.backend.random(&mut a).unwrap();
            s.backend.random(&mut b).unwrap();
            if len >= 16 {
                assert_ne!(a, b, "{}: two draws of {len} bytes differ", s.name);
                assert!(a.iter().any(|&x| x != 0), "{}: not all zero", s.name);
            }
        }
    }
}
