//! The PKCS#11 backend, specified against a real SoftHSM token (no mocks).
//!
//! Every test shares the process-wide token from `common::hsm`; each one generates its own
//! keys, so they run in parallel without stepping on each other.

// Lint attributes are fine as inner attributes of a module file; tests may unwrap and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::hsm::{backend, raw_session, LABEL};
use crate::common::{hex, unhex};
use aws_lc_rs::signature::{
    self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keygate::hardware::public_key::PublicKeyMaterial;
use keygate::hardware::{
    Algorithm, Backend, HardwareError, Health, KeyLocator, KeySpec, PublicKey,
};
use keygate::keys::verify::verify_signature;
use std::sync::Mutex;

const MESSAGE: &[u8] = b"keygate: the key never leaves the hardware";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn generate(alg: Algorithm, what: &str) -> KeyLocator {
    let spec = KeySpec {
        algorithm: alg,
        label: format!("hardware-test-{what}-{}", alg.name()),
    };
    backend()
        .generate(&spec)
        .unwrap_or_else(|e| panic!("generating a {alg} key: {e}"))
}

fn destroy(loc: &KeyLocator) -> Result<(), HardwareError> {
    backend().destroy(loc)
}

fn id_of(loc: &KeyLocator) -> Vec<u8> {
    match loc {
        KeyLocator::Pkcs11 { token, id } => {
            assert_eq!(token, LABEL, "keys are generated on the test token");
            unhex(id)
        }
        other => panic!("{other:?} is not a PKCS#11 locator"),
    }
}

fn find_one(session: &Session, class: ObjectClass, id: &[u8]) -> ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .unwrap_or_else(|e| panic!("C_FindObjects for {class} {}: {e}", hex(id)));
    assert_eq!(
        found.len(),
        1,
        "exactly one {class} object must carry CKA_ID {}",
        hex(id)
    );
    found[0]
}

fn flip_first_bit(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v[0] ^= 0x01;
    v
}

/// The aws-lc-rs algorithm an independent verifier would use for a JWS `alg`.
fn ring_alg(alg: Algorithm) -> &'static dyn VerificationAlgorithm {
    match alg {
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
        Algorithm::RS256 | Algorithm::RS256_3072 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::PS256 | Algorithm::PS256_3072 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::HS256 => panic!("HS256 has no verification algorithm"),
    }
}

fn assert_kind(result: Result<impl std::fmt::Debug, HardwareError>, want: &str, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), want, "{what}: expected {want}, got {e:?}"),
        Ok(v) => panic!("{what}: expected {want}, got Ok({v:?})"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Generated keys are protected by the device
// ---------------------------------------------------------------------------------------

#[test]
fn every_generated_private_or_secret_key_is_sensitive_non_extractable_private_and_on_the_token() {
    let session = raw_session();
    for alg in Algorithm::ALL {
        let loc = generate(alg, "attrs");
        let id = id_of(&loc);
        let class = if alg.is_mac() {
            ObjectClass::SECRET_KEY
        } else {
            ObjectClass::PRIVATE_KEY
        };
        let h = find_one(&session, class, &id);

        let attrs = session
            .get_attributes(
                h,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Private,
                    AttributeType::Token,
                    AttributeType::NeverExtractable,
                    AttributeType::AlwaysSensitive,
                ],
            )
            .unwrap_or_else(|e| panic!("{alg}: reading protection attributes: {e}"));
        let (
            mut sensitive,
            mut extractable,
            mut private,
            mut token,
            mut never_extractable,
            mut always_sensitive,
        ) = (None, None, None, None, None, None);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => sensitive = Some(v),
                Attribute::Extractable(v) => extractable = Some(v),
                Attribute::Private(v) => private = Some(v),
                Attribute::Token(v) => token = Some(v),
                Attribute::NeverExtractable(v) => never_extractable = Some(v),
                Attribute::AlwaysSensitive(v) => always_sensitive = Some(v),
                other => panic!("{alg}: unexpected attribute {other:?}"),
            }
        }
        assert_eq!(sensitive, Some(true), "{alg}: CKA_SENSITIVE");
        assert_eq!(extractable, Some(false), "{alg}: CKA_EXTRACTABLE");
        assert_eq!(private, Some(true), "{alg}: CKA_PRIVATE");
        assert_eq!(token, Some(true), "{alg}: CKA_TOKEN");
        assert_eq!(
            never_extractable,
            Some(true),
            "{alg}: CKA_NEVER_EXTRACTABLE"
        );
        assert_eq!(always_sensitive, Some(true), "{alg}: CKA_ALWAYS_SENSITIVE");

        // The secret itself must not come out. cryptoki 0.12's get_attributes drops
        // attributes the device reports as unavailable (CKR_ATTRIBUTE_SENSITIVE sets
        // ulValueLen to CK_UNAVAILABLE_INFORMATION) and may also return an error; either
        // way the value must not be in the result.
        let mut secret_attrs = vec![AttributeType::Value];
        if alg.rsa_bits().is_some() {
            secret_attrs.extend([
                AttributeType::PrivateExponent,
                AttributeType::Prime1,
                AttributeType::Prime2,
            ]);
        }
        for t in secret_attrs {
            match session.get_attributes(h, &[t]) {
                Err(_) => {}
                Ok(got) => assert!(
                    got.iter().all(|a| !matches!(
                        a,
                        Attribute::Value(_)
                            | Attribute::PrivateExponent(_)
                            | Attribute::Prime1(_)
                            | Attribute::Prime2(_)
                    )),
                    "{alg}: the device handed out {t:?} of a sensitive key"
                ),
            }
        }

        // Asymmetric keys also have a public half under the same CKA_ID; secret keys do not.
        let public = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(id.clone()),
            ])
            .unwrap();
        assert_eq!(
            public.len(),
            usize::from(!alg.is_mac()),
            "{alg}: public half"
        );

        destroy(&loc).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 2. Signatures verify in software
// ---------------------------------------------------------------------------------------

#[test]
fn every_asymmetric_algorithm_signs_and_the_signature_verifies_in_software() {
    let hsm = backend();
    for alg in Algorithm::ALL.into_iter().filter(|a| !a.is_mac()) {
        let loc = generate(alg, "sign");
        let pk = hsm
            .public_key(&loc)
            .unwrap_or_else(|e| panic!("{alg}: public_key: {e}"));

        // The public key's algorithm names the key type; RSA keys are tagged RS256 or
        // RS256-3072 by modulus size, whatever scheme they sign with.
        let want_key_alg = match alg {
            Algorithm::PS256 => Algorithm::RS256,
            Algorithm::PS256_3072 => Algorithm::RS256_3072,
            a => a,
        };
        assert_eq!(pk.algorithm, want_key_alg, "{alg}: public key algorithm");
        match (&pk.material, alg.rsa_bits()) {
            (PublicKeyMaterial::Rsa { n, e }, Some(bits)) => {
                assert_eq!(n.len() * 8, bits as usize, "{alg}: modulus size");
                assert_eq!(e.as_slice(), &[0x01, 0x00, 0x01], "{alg}: public exponent");
            }
            (PublicKeyMaterial::Ec { point }, None) => {
                assert_eq!(point[0], 0x04, "{alg}: uncompressed point");
            }
            (PublicKeyMaterial::Ed25519 { key }, None) => assert_eq!(key.len(), 32),
            (m, _) => panic!("{alg}: unexpected key material {m:?}"),
        }

        let sig = hsm
            .sign(&loc, alg, MESSAGE)
            .unwrap_or_else(|e| panic!("{alg}: sign: {e}"))
            .0;
        if let Some(bits) = alg.rsa_bits() {
            assert_eq!(sig.len() * 8, bits as usize, "{alg}: signature length");
        }

        // keygate's own verifier.
        assert!(
            verify_signature(&pk, alg, MESSAGE, &sig),
            "{alg}: signature must verify"
        );
        assert!(
            !verify_signature(&pk, alg, &flip_first_bit(MESSAGE), &sig),
            "{alg}: a flipped bit in the message must fail"
        );
        assert!(
            !verify_signature(&pk, alg, MESSAGE, &flip_first_bit(&sig)),
            "{alg}: a flipped bit in the signature must fail"
        );

        // SPKI DER round-trips.
        let der = pk
            .spki_der()
            .unwrap_or_else(|e| panic!("{alg}: spki_der: {e}"));
        let reparsed = PublicKey::from_spki_der(pk.algorithm, &der)
            .unwrap_or_else(|e| panic!("{alg}: from_spki_der: {e}"));
        assert_eq!(reparsed, pk, "{alg}: SPKI DER must round-trip");

        // Independent verification with aws-lc-rs straight from the SPKI DER, so a wrong
        // SPKI encoding cannot hide behind keygate's own parser.
        let ring = ring_alg(alg);
        UnparsedPublicKey::new(ring, &der)
            .verify(MESSAGE, &sig)
            .unwrap_or_else(|_| {
                panic!("{alg}: aws-lc-rs rejects the signature under the SPKI DER")
            });
        assert!(
            UnparsedPublicKey::new(ring, &der)
                .verify(&flip_first_bit(MESSAGE), &sig)
                .is_err(),
            "{alg}: aws-lc-rs must reject a flipped message"
        );
        // ... and from the raw key material, as a JWK consumer would.
        let raw_ok = match &pk.material {
            PublicKeyMaterial::Ec { point } => {
                UnparsedPublicKey::new(ring, point).verify(MESSAGE, &sig)
            }
            PublicKeyMaterial::Ed25519 { key } => {
                UnparsedPublicKey::new(ring, key).verify(MESSAGE, &sig)
            }
            PublicKeyMaterial::Rsa { n, e } => {
                let params = match alg {
                    Algorithm::RS256 | Algorithm::RS256_3072 => {
                        &signature::RSA_PKCS1_2048_8192_SHA256
                    }
                    _ => &signature::RSA_PSS_2048_8192_SHA256,
                };
                RsaPublicKeyComponents { n, e }.verify(params, MESSAGE, &sig)
            }
        };
        assert!(
            raw_ok.is_ok(),
            "{alg}: aws-lc-rs rejects the signature under the raw key"
        );

        // The JWK names the JWS algorithm.
        let jwk = pk.jwk("kid-1");
        assert_eq!(jwk["kid"], "kid-1");
        assert_eq!(jwk["alg"], want_key_alg.jws_alg(), "{alg}: JWK alg");

        destroy(&loc).unwrap();
    }
}

#[test]
fn a_signature_never_verifies_under_another_algorithm() {
    let hsm = backend();
    let loc = generate(Algorithm::ES256, "cross");
    let pk = hsm.public_key(&loc).unwrap();
    let sig = hsm.sign(&loc, Algorithm::ES256, MESSAGE).unwrap().0;
    for other in Algorithm::ALL
        .into_iter()
        .filter(|a| *a != Algorithm::ES256)
    {
        assert!(
            !verify_signature(&pk, other, MESSAGE, &sig),
            "ES256 signature verified as {other}"
        );
    }
    destroy(&loc).unwrap();
}

// ---------------------------------------------------------------------------------------
// 3. HS256
// ---------------------------------------------------------------------------------------

#[test]
fn an_hs256_key_macs_deterministically_and_refuses_to_sign_or_publish() {
    let hsm = backend();
    let loc = generate(Algorithm::HS256, "mac");

    let a = hsm.mac(&loc, MESSAGE).unwrap();
    let b = hsm.mac(&loc, MESSAGE).unwrap();
    assert_eq!(a.0.len(), 32, "HMAC-SHA256 tags are 32 bytes");
    assert_eq!(a, b, "the same message gives the same tag");
    let c = hsm.mac(&loc, &flip_first_bit(MESSAGE)).unwrap();
    assert_eq!(c.0.len(), 32);
    assert_ne!(a, c, "different messages give different tags");
    let empty = hsm.mac(&loc, b"").unwrap();
    assert_eq!(empty.0.len(), 32, "an empty message has a tag too");

    // A different key gives a different tag for the same message.
    let other = generate(Algorithm::HS256, "mac-other");
    assert_ne!(
        hsm.mac(&other, MESSAGE).unwrap(),
        a,
        "tags depend on the key"
    );

    assert_kind(
        hsm.sign(&loc, Algorithm::HS256, MESSAGE),
        "invalid_input",
        "sign with HS256",
    );
    assert_kind(
        hsm.public_key(&loc),
        "not_supported",
        "an HS256 key has no public key",
    );

    // Mac's Debug never prints the tag.
    assert_eq!(format!("{a:?}"), "Mac(32 bytes)");

    destroy(&loc).unwrap();
    destroy(&other).unwrap();
}

#[test]
fn an_asymmetric_key_cannot_mac() {
    let hsm = backend();
    let loc = generate(Algorithm::ES256, "no-mac");
    assert!(
        hsm.mac(&loc, MESSAGE).is_err(),
        "an EC key must not compute an HMAC"
    );
    destroy(&loc).unwrap();
}

// ---------------------------------------------------------------------------------------
// 4. destroy
// ---------------------------------------------------------------------------------------

#[test]
fn destroy_removes_the_key_and_a_second_destroy_reports_it_missing() {
    let hsm = backend();
    let loc = generate(Algorithm::ES256, "destroy");
    let id = id_of(&loc);
    // Use it first, so a handle is cached and destroy has to invalidate it.
    hsm.sign(&loc, Algorithm::ES256, MESSAGE).unwrap();
    hsm.public_key(&loc).unwrap();

    destroy(&loc).unwrap();

    assert_kind(
        hsm.sign(&loc, Algorithm::ES256, MESSAGE),
        "key_not_found",
        "sign after destroy",
    );
    assert_kind(
        hsm.public_key(&loc),
        "key_not_found",
        "public_key after destroy",
    );
    assert_kind(destroy(&loc), "key_not_found", "second destroy");

    let session = raw_session();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        let left = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())])
            .unwrap();
        assert!(left.is_empty(), "a {class} object survived destroy");
    }
}

#[test]
fn destroy_removes_an_hs256_key() {
    let hsm = backend();
    let loc = generate(Algorithm::HS256, "destroy");
    hsm.mac(&loc, MESSAGE).unwrap();
    destroy(&loc).unwrap();
    assert_kind(hsm.mac(&loc, MESSAGE), "key_not_found", "mac after destroy");
    assert_kind(destroy(&loc), "key_not_found", "second destroy");
}

// ---------------------------------------------------------------------------------------
// 5. Locators
// ---------------------------------------------------------------------------------------

#[test]
fn a_locator_naming_another_token_is_not_found() {
    let hsm = backend();
    let real = generate(Algorithm::ES256, "other-token");
    let KeyLocator::Pkcs11 { id, .. } = real.clone() else {
        panic!("a SoftHSM key has a PKCS#11 locator");
    };
    let elsewhere = KeyLocator::Pkcs11 {
        token: format!("{LABEL}-elsewhere"),
        id,
    };

    assert_kind(
        hsm.sign(&elsewhere, Algorithm::ES256, MESSAGE),
        "key_not_found",
        "sign",
    );
    assert_kind(hsm.public_key(&elsewhere), "key_not_found", "public_key");
    assert_kind(hsm.mac(&elsewhere, MESSAGE), "key_not_found", "mac");
    assert_kind(hsm.destroy(&elsewhere), "key_not_found", "destroy");

    // ... and did not touch the real key.
    hsm.sign(&real, Algorithm::ES256, MESSAGE).unwrap();
    destroy(&real).unwrap();
}

#[test]
fn a_malformed_key_id_is_invalid_input() {
    let hsm = backend();
    for id in [
        "",
        "0",
        "abc",
        "zz",
        "0g",
        "not hex at all",
        "00112233445566778899aabbccddeefg",
    ] {
        let loc = KeyLocator::Pkcs11 {
            token: LABEL.into(),
            id: id.into(),
        };
        assert_kind(
            hsm.sign(&loc, Algorithm::ES256, MESSAGE),
            "invalid_input",
            &format!("sign id={id:?}"),
        );
        assert_kind(
            hsm.public_key(&loc),
            "invalid_input",
            &format!("public_key id={id:?}"),
        );
        assert_kind(
            hsm.mac(&loc, MESSAGE),
            "invalid_input",
            &format!("mac id={id:?}"),
        );
        assert_kind(
            hsm.destroy(&loc),
            "invalid_input",
            &format!("destroy id={id:?}"),
        );
    }
}

#[test]
fn an_unknown_key_id_is_not_found() {
    let hsm = backend();
    let mut id = [0u8; 16];
    hsm.random(&mut id).unwrap();
    let loc = KeyLocator::Pkcs11 {
        token: LABEL.into(),
        id: hex(&id),
    };
    assert_kind(
        hsm.sign(&loc, Algorithm::ES256, MESSAGE),
        "key_not_found",
        "sign",
    );
    assert_kind(hsm.public_key(&loc), "key_not_found", "public_key");
    assert_kind(hsm.mac(&loc, MESSAGE), "key_not_found", "mac");
    assert_kind(hsm.destroy(&loc), "key_not_found", "destroy");
}

#[test]
fn generated_keys_get_distinct_ids_and_a_pkcs11_uri() {
    let a = generate(Algorithm::ES256, "uri");
    let b = generate(Algorithm::ES256, "uri");
    assert_ne!(a, b, "two keys never share a locator");
    assert_eq!(id_of(&a).len(), 16, "ids are 16 random bytes");
    let KeyLocator::Pkcs11 { id, .. } = &a else {
        panic!("a SoftHSM key has a PKCS#11 locator");
    };
    let uri = a.uri();
    assert!(
        uri.starts_with(&format!("pkcs11:token={LABEL};id=%")),
        "{uri}"
    );
    assert_eq!(uri.matches('%').count(), id.len() / 2, "{uri}");
    destroy(&a).unwrap();
    destroy(&b).unwrap();
}

// ---------------------------------------------------------------------------------------
// 6. random, 7. health
// ---------------------------------------------------------------------------------------

#[test]
fn random_fills_buffers_of_any_size_with_fresh_bytes() {
    let hsm = backend();
    let mut a = [0u8; 64];
    let mut b = [0u8; 64];
    hsm.random(&mut a).unwrap();
    hsm.random(&mut b).unwrap();
    assert_ne!(a, [0u8; 64], "64 random bytes are not all zero");
    assert_ne!(a, b, "two draws differ");

    let mut big = vec![0u8; 100_000];
    hsm.random(&mut big).unwrap();
    // Every 4 KiB block has some nonzero byte (a short chunked read would leave zeros).
    for (i, block) in big.chunks(4096).enumerate() {
        assert!(
            block.iter().any(|&x| x != 0),
            "block {i} of the 100 000-byte draw is all zero"
        );
    }

    let mut empty: [u8; 0] = [];
    hsm.random(&mut empty).unwrap();
}

#[test]
fn a_healthy_token_reports_ok() {
    assert_eq!(backend().health(), Health::Ok);
    assert_eq!(backend().kind(), "pkcs11");
}

// ---------------------------------------------------------------------------------------
// 8. Concurrency
// ---------------------------------------------------------------------------------------

#[test]
fn many_threads_sign_concurrently_through_the_session_pool() {
    const THREADS: usize = 8;
    const SIGNS: usize = 50;
    let hsm = backend();
    assert!(
        hsm.pool_size() < THREADS,
        "the test must oversubscribe the pool"
    );
    let loc = generate(Algorithm::ES256, "concurrent");
    let pk = hsm.public_key(&loc).unwrap();

    let results: Vec<Vec<(Vec<u8>, Vec<u8>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let hsm = hsm.clone();
                let loc = loc.clone();
                scope.spawn(move || {
                    (0..SIGNS)
                        .map(|i| {
                            let msg = format!("thread {t} message {i}").into_bytes();
                            let sig = hsm
                                .sign(&loc, Algorithm::ES256, &msg)
                                .unwrap_or_else(|e| panic!("thread {t} sign {i}: {e}"));
                            (msg, sig.0)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut verified = 0;
    for (msg, sig) in results.iter().flatten() {
        assert!(
            verify_signature(&pk, Algorithm::ES256, msg, sig),
            "signature of {:?}",
            String::from_utf8_lossy(msg)
        );
        verified += 1;
    }
    assert_eq!(verified, THREADS * SIGNS);
    assert_eq!(hsm.health(), Health::Ok, "the pool is intact afterwards");
    destroy(&loc).unwrap();
}

/// Creating keys while other threads destroy keys or look keys up must not fail. SoftHSM
/// 2.6.1 fails `C_GenerateKey(Pair)` with `CKR_GENERAL_ERROR` in that situation unless
/// the profile's `serialize_object_changes` quirk orders creation against destruction and
/// `C_FindObjects`; with the softhsm2 profile it does.
#[test]
fn generating_while_other_threads_use_the_token_never_fails() {
    let hsm = backend();
    let spec = KeySpec {
        algorithm: Algorithm::ES256,
        label: "hardware-test-race".into(),
    };
    let doomed: Vec<KeyLocator> = (0..80).map(|_| hsm.generate(&spec).unwrap()).collect();
    let doomed = Mutex::new(doomed);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|t| {
                let (hsm, spec, doomed) = (hsm.clone(), spec.clone(), &doomed);
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for _ in 0..20 {
                        let result = match t % 5 {
                            0 | 1 => hsm
                                .generate(&spec)
                                .map(|loc| doomed.lock().unwrap().push(loc)),
                            2 | 3 => {
                                let next = doomed.lock().unwrap().pop();
                                next.map_or(Ok(()), |loc| hsm.destroy(&loc))
                            }
                            _ => {
                                // A lookup that misses the handle cache: C_FindObjects.
                                let mut id = [0u8; 16];
                                hsm.random(&mut id).unwrap();
                                let loc = KeyLocator::Pkcs11 {
                                    token: LABEL.into(),
                                    id: hex(&id),
                                };
                                match hsm.public_key(&loc) {
                                    Err(HardwareError::KeyNotFound(_)) => Ok(()),
                                    Err(e) => Err(e),
                                    Ok(k) => panic!("found a key under a random id: {k:?}"),
                                }
                            }
                        };
                        if let Err(e) = result {
                            failures.push(format!("thread {t}: {e}"));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for loc in doomed.into_inner().unwrap() {
        let _ = hsm.destroy(&loc);
    }
    assert!(
        failures.is_empty(),
        "{} concurrent generate/destroy/find calls failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
