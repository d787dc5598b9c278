//! The TPM 2.0 backend against swtpm, beyond the shared conformance suite: what protects
//! a key, what survives a TPM reset, that object memory never leaks, and that bad
//! configuration or a broken store gives a clear error naming the key instead of a panic.
//! Every test runs its own simulator (`common::swtpm`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::swtpm::Swtpm;
use keygate::hardware::tpm::{TpmBackend, TpmSettings, DEFAULT_MAX_LOADED};
use keygate::hardware::{Algorithm, Backend, HardwareError, Health, KeyLocator, KeySpec};
use keygate::keys::verify::verify_signature;
use std::str::FromStr;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::AuthHandle;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Auth, CapabilityData};
use tss_esapi::tcti_ldr::TctiNameConf;
use zeroize::Zeroizing;

const MESSAGE: &[u8] = b"keygate: the key never leaves the TPM";

fn settings(tcti: String) -> TpmSettings {
    TpmSettings {
        tcti,
        owner_auth: None,
        max_loaded: DEFAULT_MAX_LOADED,
    }
}

fn backend_on(tpm: &Swtpm) -> TpmBackend {
    TpmBackend::new(settings(tpm.tcti()))
}

fn generate(b: &TpmBackend, alg: Algorithm, label: &str) -> KeyLocator {
    b.generate(&KeySpec {
        algorithm: alg,
        label: label.into(),
    })
    .unwrap_or_else(|e| panic!("generating {alg} {label}: {e}"))
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, HardwareError>, kind: &str, what: &str) -> String {
    match r {
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {e:?}");
            e.to_string()
        }
        Ok(v) => panic!("{what}: expected {kind}, got Ok({v:?})"),
    }
}

/// Transient objects the TPM holds now, counted with a raw ESAPI context (the backend
/// must be disconnected: swtpm serves one connection at a time).
fn transient_objects(tpm: &Swtpm) -> usize {
    let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, 0x8000_0000, 64)
        .unwrap();
    match data {
        CapabilityData::Handles(list) => list.into_inner().len(),
        other => panic!("unexpected capability data {other:?}"),
    }
}

#[test]
fn every_key_is_fixed_to_the_tpm_and_its_parent_generated_inside_and_never_duplicable() {
    let tpm = Swtpm::start();
    let b = backend_on(&tpm);
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::HS256,
    ] {
        let loc = generate(&b, alg, "protection");
        // As the TPM reports it after loading the stored blob, not as keygate built it.
        let public = b.read_public(&loc).unwrap();
        let attrs = public.object_attributes();
        assert!(attrs.fixed_tpm(), "{alg}: fixedTPM (never leaves this TPM)");
        assert!(attrs.fixed_parent(), "{alg}: fixedParent (no duplication)");
        assert!(
            attrs.sensitive_data_origin(),
            "{alg}: sensitiveDataOrigin (the TPM made the secret)"
        );
        assert!(
            !attrs.encrypted_duplication(),
            "{alg}: no encryptedDuplication"
        );
        assert!(
            public.auth_policy().value().is_empty(),
            "{alg}: no policy that could authorise duplication"
        );
        assert!(!attrs.decrypt(), "{alg}: signing only, never decryption");
        assert!(!attrs.restricted(), "{alg}: signs caller digests");
    }
}

#[test]
fn a_key_survives_a_tpm_reset_and_signs_with_the_same_public_key() {
    let mut tpm = Swtpm::start();
    let b = backend_on(&tpm);
    let ec = generate(&b, Algorithm::ES256, "keygate:tls-identity:v1");
    let mac = generate(&b, Algorithm::HS256, "keygate:api-key-mac:v1");
    let before = b.public_key(&ec).unwrap();
    let tag_before = b.mac(&mac, MESSAGE).unwrap();

    // Power cycle: same seeds, every transient object (primary and keys) gone.
    tpm.restart();

    // The very next call reconnects, re-creates the primary and reloads the key.
    let sig = b
        .sign(&ec, Algorithm::ES256, MESSAGE)
        .expect("the first call after a reset succeeds");
    let after = b.public_key(&ec).unwrap();
    assert_eq!(after, before, "same public key after the reset");
    assert!(verify_signature(&before, Algorithm::ES256, MESSAGE, &sig.0));
    let tag_after = b.mac(&mac, MESSAGE).unwrap();
    assert_eq!(tag_after, tag_before, "the same HMAC key after the reset");
}

#[test]
fn calls_during_an_outage_fail_fast_as_unavailable_and_the_next_after_it_succeeds() {
    let mut tpm = Swtpm::start();
    let b = backend_on(&tpm);
    let ec = generate(&b, Algorithm::ES256, "outage");
    let hmac = generate(&b, Algorithm::HS256, "outage-mac");
    b.sign(&ec, Algorithm::ES256, MESSAGE).unwrap();

    tpm.stop();
    for _ in 0..3 {
        let msg = expect_err(
            b.sign(&ec, Algorithm::ES256, MESSAGE),
            "unavailable",
            "sign while the TPM is down",
        );
        assert!(
            msg.contains(&tpm.tcti()) || msg.contains("signing"),
            "{msg}"
        );
    }
    expect_err(b.mac(&hmac, MESSAGE), "unavailable", "mac while down");
    expect_err(
        b.generate(&KeySpec {
            algorithm: Algorithm::ES256,
            label: "x".into(),
        }),
        "unavailable",
        "generate while down",
    );
    assert!(matches!(b.health(), Health::Unavailable { .. }));

    tpm.restart();
    let sig = b.sign(&ec, Algorithm::ES256, MESSAGE).unwrap();
    assert!(verify_signature(
        &b.public_key(&ec).unwrap(),
        Algorithm::ES256,
        MESSAGE,
        &sig.0
    ));
    assert_eq!(b.health(), Health::Ok);
}

#[test]
fn a_thousand_signatures_over_ten_keys_leak_no_object_memory() {
    let tpm = Swtpm::start();
    let b = backend_on(&tpm);
    let keys: Vec<_> = (0..10)
        .map(|i| generate(&b, Algorithm::ES256, &format!("leak-{i}")))
        .collect();
    let publics: Vec<_> = keys.iter().map(|k| b.public_key(k).unwrap()).collect();
    for i in 0..1000usize {
        // Round robin is the worst case for the LRU: every call evicts and loads.
        let k = i % keys.len();
        let msg = format!("message {i}");
        let sig = b
            .sign(&keys[k], Algorithm::ES256, msg.as_bytes())
            .unwrap_or_else(|e| panic!("signature {i} with key {k}: {e}"));
        assert!(verify_signature(
            &publics[k],
            Algorithm::ES256,
            msg.as_bytes(),
            &sig.0
        ));
        assert!(b.loaded_keys() <= DEFAULT_MAX_LOADED);
    }
    // Shutdown flushes everything: the TPM holds no transient object afterwards.
    b.disconnect();
    assert_eq!(transient_objects(&tpm), 0, "objects left in the TPM");
    // ... and a new connection works as on a fresh TPM.
    b.sign(&keys[0], Algorithm::ES256, MESSAGE).unwrap();
}

#[test]
fn loaded_keys_are_kept_in_a_small_lru() {
    let tpm = Swtpm::start();
    let b = backend_on(&tpm);
    let keys: Vec<_> = (0..3)
        .map(|i| generate(&b, Algorithm::HS256, &format!("lru-{i}")))
        .collect();
    for k in &keys {
        b.mac(k, MESSAGE).unwrap();
    }
    assert_eq!(b.loaded_keys(), DEFAULT_MAX_LOADED);
}

#[test]
fn objects_leaked_by_a_crashed_process_are_reclaimed_on_connect() {
    let tpm = Swtpm::start();
    // A raw client that loads objects and exits without flushing them, like a killed
    // keygate on a TPM without a resource manager.
    {
        let first = backend_on(&tpm);
        let keys: Vec<_> = (0..2)
            .map(|i| generate(&first, Algorithm::ES256, &format!("crash-{i}")))
            .collect();
        for k in &keys {
            first.sign(k, Algorithm::ES256, MESSAGE).unwrap();
        }
        std::mem::forget(first);
    }
    let second = backend_on(&tpm);
    let k = generate(&second, Algorithm::ES256, "after-crash");
    second.sign(&k, Algorithm::ES256, MESSAGE).unwrap();
}

// ---------------------------------------------------------------------------------------
// Bad input: each a clear error, no panic
// ---------------------------------------------------------------------------------------

#[test]
fn a_malformed_tcti_string_is_reported_with_the_string() {
    let b = TpmBackend::new(settings("tpm-over-carrier-pigeon".into()));
    let msg = expect_err(b.connect(), "unavailable", "connect");
    assert!(msg.contains("tpm-over-carrier-pigeon"), "{msg}");
    assert!(matches!(b.health(), Health::Unavailable { .. }));
}

#[test]
fn an_unreachable_tpm_is_unavailable_and_names_where_it_was_looked_for() {
    // A port nobody listens on.
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    drop(tpm);
    let b = TpmBackend::new(settings(tcti.clone()));
    let msg = expect_err(b.connect(), "unavailable", "connect");
    assert!(msg.contains(&tcti), "{msg}");
    let Health::Unavailable { reason } = b.health() else {
        panic!("an unreachable TPM is not healthy")
    };
    assert!(reason.contains(&tcti), "{reason}");
}

#[test]
fn a_wrong_owner_auth_is_reported_as_such_and_the_right_one_works() {
    let tpm = Swtpm::start();
    {
        let mut ctx =
            tss_esapi::Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.hierarchy_change_auth(
                AuthHandle::Owner,
                Auth::try_from(b"owner-secret".to_vec()).unwrap(),
            )
        })
        .unwrap();
    }
    let wrong = TpmBackend::new(TpmSettings {
        owner_auth: Some(Zeroizing::new(b"guess".to_vec())),
        ..settings(tpm.tcti())
    });
    let msg = expect_err(wrong.connect(), "unavailable", "wrong owner auth");
    assert!(msg.contains("owner authorization"), "{msg}");
    assert!(
        !msg.contains("guess"),
        "the auth value is never echoed: {msg}"
    );
    drop(wrong);
    let empty = backend_on(&tpm);
    expect_err(empty.connect(), "unavailable", "empty owner auth");
    drop(empty);

    let right = TpmBackend::new(TpmSettings {
        owner_auth: Some(Zeroizing::new(b"owner-secret".to_vec())),
        ..settings(tpm.tcti())
    });
    let k = generate(&right, Algorithm::ES256, "owner-auth");
    right.sign(&k, Algorithm::ES256, MESSAGE).unwrap();
    assert!(!format!("{right:?}").contains("owner-secret"));
}

#[test]
fn a_corrupted_blob_in_the_store_is_a_failure_naming_the_key_and_others_keep_working() {
    let tpm = Swtpm::start();
    let b = backend_on(&tpm);
    let good = generate(&b, Algorithm::ES256, "keygate:good:v1");
    let victim = generate(&b, Algorithm::ES256, "keygate:victim:v1");
    let KeyLocator::Tpm {
        parent,
        parent_handle,
        label,
        public,
        private,
    } = victim.clone()
    else {
        panic!("a TPM key has a TPM locator")
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut raw = b64.decode(&private).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x40;
    let flipped = KeyLocator::Tpm {
        parent: parent.clone(),
        parent_handle,
        label: label.clone(),
        public: public.clone(),
        private: b64.encode(&raw),
    };
    let msg = expect_err(
        b.sign(&flipped, Algorithm::ES256, MESSAGE),
        "failure",
        "a flipped bit in the private blob",
    );
    assert!(
        msg.contains("keygate%3Avictim%3Av1"),
        "names the key: {msg}"
    );

    let truncated = KeyLocator::Tpm {
        parent: parent.clone(),
        parent_handle,
        label: label.clone(),
        public: public[..public.len() / 2].to_string(),
        private: private.clone(),
    };
    let msg = expect_err(
        b.public_key(&truncated),
        "failure",
        "a truncated public blob",
    );
    assert!(msg.contains("victim") && msg.contains("corrupt"), "{msg}");

    // Other keys, and the victim's intact blob, are unaffected.
    b.sign(&good, Algorithm::ES256, MESSAGE).unwrap();
    b.sign(&victim, Algorithm::ES256, MESSAGE).unwrap();
    assert_eq!(b.health(), Health::Ok);
}

#[test]
fn a_key_from_another_tpm_is_not_found_here() {
    let (one, two) = (Swtpm::start(), Swtpm::start());
    let (a, b) = (backend_on(&one), backend_on(&two));
    let k = generate(&a, Algorithm::ES256, "keygate:roaming:v1");
    let msg = expect_err(
        b.sign(&k, Algorithm::ES256, MESSAGE),
        "key_not_found",
        "another TPM's key",
    );
    assert!(msg.contains("roaming"), "{msg}");
    // Even with the parent name forged, the other TPM cannot load it.
    let KeyLocator::Tpm {
        label,
        public,
        private,
        ..
    } = k
    else {
        unreachable!()
    };
    let (b_parent, b_handle) = match generate(&b, Algorithm::ES256, "b") {
        KeyLocator::Tpm {
            parent,
            parent_handle,
            ..
        } => (parent, parent_handle),
        _ => unreachable!(),
    };
    let forged = KeyLocator::Tpm {
        parent: b_parent,
        parent_handle: b_handle,
        label,
        public,
        private,
    };
    expect_err(
        b.sign(&forged, Algorithm::ES256, MESSAGE),
        "failure",
        "a forged parent",
    );
}

#[test]
fn eddsa_is_not_supported_by_a_tpm() {
    let tpm = Swtpm::start();
    let b = backend_on(&tpm);
    expect_err(
        b.generate(&KeySpec {
            algorithm: Algorithm::EdDSA,
            label: "ed".into(),
        }),
        "not_supported",
        "EdDSA",
    );
}
