//! Every verification path keygate uses, checked against the Wycheproof vectors.
//!
//! Signatures go through `keygate::keys::verify::verify_signature` exactly as the service
//! calls it. HMACs are computed in the HSM (as keygate does) with the vector's key imported
//! as a session object, and compared with `mac_matches`.
//!
//! The vectors live in `../shared/vectors/wycheproof` next to the repository, or wherever
//! `KEYGATE_WYCHEPROOF_DIR` points. A missing directory fails the tests: they never skip.

// Lint attributes are fine as inner attributes of a module file; tests may unwrap and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::hsm::{backend, raw_session, LABEL};
use crate::common::{hex, unhex};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keygate::hardware::{Algorithm, Backend, KeyLocator, PublicKey};
use keygate::keys::verify::{mac_matches, verify_signature};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    let (dir, origin) = match std::env::var_os("KEYGATE_WYCHEPROOF_DIR") {
        Some(d) => (PathBuf::from(d), "KEYGATE_WYCHEPROOF_DIR"),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/wycheproof"),
            "the default location",
        ),
    };
    assert!(
        dir.is_dir(),
        "Wycheproof vectors not found: {} ({origin}) is not a directory. These tests never \
         skip; put the Wycheproof JSON files there or set KEYGATE_WYCHEPROOF_DIR to the \
         directory holding them.",
        dir.display()
    );
    dir
}

fn load(file: &str) -> Value {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read Wycheproof file {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    assert!(
        v["testGroups"].as_array().is_some_and(|g| !g.is_empty()),
        "{} has no testGroups",
        path.display()
    );
    v
}

fn groups(v: &Value) -> &[Value] {
    v["testGroups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn tests(group: &Value) -> &[Value] {
    group["tests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field:?} missing or not a string in {v}"))
}

fn hex_field(v: &Value, field: &str) -> Vec<u8> {
    unhex(str_field(v, field))
}

// ---------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Counts {
    valid: usize,
    invalid: usize,
    acceptable_accepted: usize,
    acceptable_rejected: usize,
    /// Tests in groups whose parameters keygate never uses (reported, not checked).
    skipped: usize,
    failures: Vec<String>,
}

impl Counts {
    /// Records one outcome against the vector's expected `result`.
    fn record(&mut self, file: &str, test: &Value, accepted: bool) {
        let id = &test["tcId"];
        let comment = test["comment"].as_str().unwrap_or("");
        match str_field(test, "result") {
            "valid" => {
                self.valid += 1;
                if !accepted {
                    self.failures
                        .push(format!("{file} tcId {id} ({comment}): valid but rejected"));
                }
            }
            "invalid" => {
                self.invalid += 1;
                if accepted {
                    self.failures.push(format!(
                        "{file} tcId {id} ({comment}): invalid but accepted"
                    ));
                }
            }
            "acceptable" => {
                if accepted {
                    self.acceptable_accepted += 1;
                } else {
                    self.acceptable_rejected += 1;
                }
            }
            other => panic!("{file} tcId {id}: unknown result {other:?}"),
        }
    }

    fn checked(&self) -> usize {
        self.valid + self.invalid + self.acceptable_accepted + self.acceptable_rejected
    }

    /// Prints the tally and fails on any mismatch or on an empty run.
    fn finish(self, file: &str, total_in_file: usize) {
        println!(
            "wycheproof {file}: {} checked (valid {}, invalid {}, acceptable {} accepted / {} rejected), {} skipped, {} in file",
            self.checked(),
            self.valid,
            self.invalid,
            self.acceptable_accepted,
            self.acceptable_rejected,
            self.skipped,
            total_in_file,
        );
        assert!(
            self.failures.is_empty(),
            "{file}: {} of {} vectors disagree:\n{}",
            self.failures.len(),
            self.checked(),
            self.failures.join("\n")
        );
        assert!(self.checked() > 0, "{file}: no vectors were checked");
        assert!(
            self.valid > 0 && self.invalid > 0,
            "{file}: need both valid and invalid vectors"
        );
        assert_eq!(
            self.checked() + self.skipped,
            total_in_file,
            "{file}: every test in the file is either checked or deliberately skipped"
        );
    }
}

fn number_of_tests(v: &Value) -> usize {
    let declared = v["numberOfTests"].as_u64().unwrap_or(0) as usize;
    let counted: usize = groups(v).iter().map(|g| tests(g).len()).sum();
    assert_eq!(
        declared, counted,
        "numberOfTests disagrees with the tests present"
    );
    counted
}

// ---------------------------------------------------------------------------------------
// Signature files
// ---------------------------------------------------------------------------------------

/// Runs every test of every group through `verify_signature` with the group's key.
/// A group whose key keygate cannot build must contain only invalid tests.
fn run_signature_file(
    file: &str,
    alg: Algorithm,
    key_of: impl Fn(&Value) -> Result<PublicKey, String>,
    group_is_keygates: impl Fn(&Value) -> bool,
) {
    let v = load(file);
    let total = number_of_tests(&v);
    let mut counts = Counts::default();
    for group in groups(&v) {
        if !group_is_keygates(group) {
            counts.skipped += tests(group).len();
            continue;
        }
        let key = match key_of(group) {
            Ok(k) => k,
            Err(e) => {
                for t in tests(group) {
                    assert_eq!(
                        str_field(t, "result"),
                        "invalid",
                        "{file} tcId {}: key does not parse ({e}) but the test is not invalid",
                        t["tcId"]
                    );
                    counts.record(file, t, false);
                }
                continue;
            }
        };
        for t in tests(group) {
            let msg = hex_field(t, "msg");
            let sig = hex_field(t, "sig");
            counts.record(file, t, verify_signature(&key, alg, &msg, &sig));
        }
    }
    counts.finish(file, total);
}

/// Checks that the group's SPKI DER parses to the same key (when it parses at all).
fn check_spki_agrees(group: &Value, alg: Algorithm, key: &PublicKey) -> Result<(), String> {
    if let Some(der) = group["publicKeyDer"].as_str() {
        match PublicKey::from_spki_der(alg, &unhex(der)) {
            Ok(parsed) => {
                if &parsed != key {
                    return Err(format!("publicKeyDer parses to {parsed:?}, not {key:?}"));
                }
            }
            Err(e) => return Err(format!("publicKeyDer does not parse: {e}")),
        }
    }
    Ok(())
}

fn ec_key(alg: Algorithm) -> impl Fn(&Value) -> Result<PublicKey, String> {
    move |group| {
        let point = hex_field(&group["publicKey"], "uncompressed");
        let key = PublicKey::ec(alg, point).map_err(|e| e.to_string())?;
        check_spki_agrees(group, alg, &key).map(|()| key)
    }
}

fn sha_is(group: &Value, want: &str) -> bool {
    group["sha"].as_str() == Some(want)
}

#[test]
fn ecdsa_p256_sha256_p1363_vectors_verify_as_wycheproof_expects() {
    run_signature_file(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Algorithm::ES256,
        ec_key(Algorithm::ES256),
        |g| sha_is(g, "SHA-256") && g["publicKey"]["curve"].as_str() == Some("secp256r1"),
    );
}

#[test]
fn ecdsa_p384_sha384_p1363_vectors_verify_as_wycheproof_expects() {
    run_signature_file(
        "ecdsa_secp384r1_sha384_p1363_test.json",
        Algorithm::ES384,
        ec_key(Algorithm::ES384),
        |g| sha_is(g, "SHA-384") && g["publicKey"]["curve"].as_str() == Some("secp384r1"),
    );
}

#[test]
fn ed25519_vectors_verify_as_wycheproof_expects() {
    run_signature_file(
        "ed25519_test.json",
        Algorithm::EdDSA,
        |group| {
            let pk = hex_field(&group["publicKey"], "pk");
            let key = PublicKey::ed25519(pk).map_err(|e| e.to_string())?;
            check_spki_agrees(group, Algorithm::EdDSA, &key).map(|()| key)
        },
        |g| g["publicKey"]["curve"].as_str() == Some("edwards25519"),
    );
}

fn rsa_key(alg: Algorithm) -> impl Fn(&Value) -> Result<PublicKey, String> {
    move |group| {
        let pk = &group["publicKey"];
        let key = match (pk["modulus"].as_str(), pk["publicExponent"].as_str()) {
            (Some(n), Some(e)) => PublicKey::rsa(alg, &unhex(n), &unhex(e)),
            // Older files carry "n"/"e" at group level; newer ones only the DER.
            _ => match (group["n"].as_str(), group["e"].as_str()) {
                (Some(n), Some(e)) => PublicKey::rsa(alg, &unhex(n), &unhex(e)),
                _ => PublicKey::from_spki_der(alg, &hex_field(group, "publicKeyDer"))
                    .map_err(|e| e.to_string())?,
            },
        };
        check_spki_agrees(group, alg, &key).map(|()| key)
    }
}

#[test]
fn rsa_pkcs1_2048_sha256_vectors_verify_as_wycheproof_expects() {
    run_signature_file(
        "rsa_signature_2048_sha256_test.json",
        Algorithm::RS256,
        rsa_key(Algorithm::RS256),
        |g| sha_is(g, "SHA-256") && g["keySize"].as_u64() == Some(2048),
    );
}

#[test]
fn rsa_pss_2048_sha256_mgf1_salt32_vectors_verify_as_wycheproof_expects() {
    run_signature_file(
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        Algorithm::PS256,
        rsa_key(Algorithm::PS256),
        // keygate's PS256: SHA-256, MGF1 with SHA-256, 32-byte salt.
        |g| {
            sha_is(g, "SHA-256")
                && g["mgf"].as_str() == Some("MGF1")
                && g["mgfSha"].as_str() == Some("SHA-256")
                && g["sLen"].as_u64() == Some(32)
                && g["keySize"].as_u64() == Some(2048)
        },
    );
}

// ---------------------------------------------------------------------------------------
// HMAC-SHA256, computed in the HSM
// ---------------------------------------------------------------------------------------

/// An HMAC key imported into the test token for the duration of the test.
struct ImportedKey {
    handle: ObjectHandle,
    locator: KeyLocator,
}

/// Imports `key` as a generic secret, as a session object when the token allows keygate's
/// sessions to use it, else as a token object (destroyed at the end of the test).
fn import_hmac_key(
    session: &Session,
    key: &[u8],
    token_object: bool,
) -> Result<ImportedKey, String> {
    let mut id = [0u8; 16];
    backend().random(&mut id).map_err(|e| e.to_string())?;
    let handle = session
        .create_object(&[
            Attribute::Token(token_object),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Value(key.to_vec()),
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(b"wycheproof-hmac".to_vec()),
        ])
        .map_err(|e| format!("C_CreateObject: {e}"))?;
    Ok(ImportedKey {
        handle,
        locator: KeyLocator::Pkcs11 {
            token: LABEL.into(),
            id: hex(&id),
        },
    })
}

#[test]
fn hmac_sha256_vectors_computed_in_the_hsm_match_as_wycheproof_expects() {
    let file = "hmac_sha256_test.json";
    let v = load(file);
    let total = number_of_tests(&v);
    let hsm = backend();
    // Session objects live as long as the session that created it: keep it open.
    let session = raw_session();

    // Probe: can the backend's own sessions see a session object made here? PKCS#11 says
    // session objects are visible to every session of the application; fall back to token
    // objects if this token disagrees.
    let probe =
        import_hmac_key(&session, &[0x42; 32], false).expect("importing a session HMAC key");
    let token_objects = hsm.mac(&probe.locator, b"probe").is_err();
    session.destroy_object(probe.handle).unwrap();
    if token_objects {
        println!("wycheproof {file}: session objects are not visible to keygate; importing token objects");
    }

    let mut counts = Counts::default();
    let mut imported: HashMap<Vec<u8>, ImportedKey> = HashMap::new();
    let mut refused_key_sizes: Vec<u64> = Vec::new();
    for group in groups(&v) {
        let key_bits = group["keySize"].as_u64().expect("keySize");
        let tag_bits = group["tagSize"].as_u64().expect("tagSize");
        if key_bits == 0 || tag_bits == 0 || tag_bits > 256 || tag_bits % 8 != 0 {
            counts.skipped += tests(group).len();
            continue;
        }
        let tag_len = (tag_bits / 8) as usize;
        for t in tests(group) {
            let key = hex_field(t, "key");
            let msg = hex_field(t, "msg");
            let tag = hex_field(t, "tag");
            assert_eq!(
                key.len() * 8,
                key_bits as usize,
                "tcId {}: key size",
                t["tcId"]
            );
            if !imported.contains_key(&key) {
                let k = import_hmac_key(&session, &key, token_objects)
                    .unwrap_or_else(|e| panic!("tcId {}: importing the key: {e}", t["tcId"]));
                imported.insert(key.clone(), k);
            }
            let loc = &imported[&key].locator;
            let computed = match hsm.mac(loc, &msg) {
                Ok(m) => m.0,
                // keygate only ever generates 256-bit HMAC keys; a token may refuse
                // other sizes (CKR_KEY_SIZE_RANGE). That refusal is tolerated only for
                // non-256-bit keys and is reported.
                Err(e) if key_bits != 256 && e.kind() == "not_supported" => {
                    if !refused_key_sizes.contains(&key_bits) {
                        println!(
                            "wycheproof {file}: the token refuses {key_bits}-bit HMAC keys: {e}"
                        );
                        refused_key_sizes.push(key_bits);
                    }
                    counts.skipped += 1;
                    continue;
                }
                Err(e) => panic!("tcId {}: HMAC in the HSM failed: {e}", t["tcId"]),
            };
            assert_eq!(computed.len(), 32, "HMAC-SHA256 is 32 bytes");
            counts.record(file, t, mac_matches(&computed[..tag_len], &tag));
            // A truncated or over-long tag never matches the full one.
            if tag_len == 32 && tag.len() == 32 {
                assert!(
                    !mac_matches(&computed, &tag[..16]),
                    "tcId {}: prefix matched",
                    t["tcId"]
                );
            }
        }
    }

    let n_keys = imported.len();
    for (_, k) in imported {
        session
            .destroy_object(k.handle)
            .unwrap_or_else(|e| panic!("destroying an imported HMAC key: {e}"));
    }
    println!(
        "wycheproof {file}: {n_keys} keys imported as {} objects",
        if token_objects { "token" } else { "session" }
    );
    assert!(
        !refused_key_sizes.contains(&256),
        "256-bit HMAC keys (keygate's size) must always be computed"
    );
    counts.finish(file, total);
}
