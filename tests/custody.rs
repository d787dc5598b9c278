//! Proof of custody: a destroyed TPM version is gone for good (its wrapped blob erased
//! from the store in the transaction that marks it destroyed, its own storage parent
//! evicted from the TPM, so even a copy of the old row loads nowhere), and key
//! attestation that a relying party checks with tools nobody here wrote.

use crate::common::server::{Options, Server};
use crate::common::swtpm::Swtpm;
use keygate::hardware::tpm::{TpmBackend, TpmSettings, DEFAULT_MAX_LOADED};
use keygate::hardware::{Algorithm, Backend, HardwareError, KeyLocator};
use serde_json::{json, Value};

fn tpm_env(tpm: &Swtpm) -> Vec<(String, String)> {
    vec![
        ("KEYGATE__BACKENDS__TPM__TYPE".into(), "tpm".into()),
        ("KEYGATE__BACKENDS__TPM__TCTI".into(), tpm.tcti()),
    ]
}

fn backend_on(tpm: &Swtpm) -> TpmBackend {
    TpmBackend::new(TpmSettings {
        tcti: tpm.tcti(),
        owner_auth: None,
        max_loaded: DEFAULT_MAX_LOADED,
    })
}

/// The stored row of `ring` v`version`, as a process that read it earlier would hold it.
async fn stored_locator(dir: &std::path::Path, ring: &str, version: i64) -> KeyLocator {
    let db = dir.join("keygate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let (json,): (String,) =
        sqlx::query_as("SELECT locator FROM key_versions WHERE ring = $1 AND version = $2")
            .bind(ring)
            .bind(version)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    serde_json::from_str(&json).unwrap()
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, HardwareError>, what: &str) {
    match r {
        Err(HardwareError::KeyNotFound(_)) => {}
        other => panic!("{what}: expected KeyNotFound, got {other:?}"),
    }
}

#[test]
fn a_destroyed_tpm_key_cannot_be_loaded_from_a_copy_of_its_blob() {
    let tpm = Swtpm::start();
    let b = backend_on(&tpm);
    let loc = b
        .generate(&keygate::hardware::KeySpec {
            algorithm: Algorithm::ES256,
            label: "keygate:custody:v1".into(),
        })
        .unwrap();
    let copy = loc.clone();
    b.sign(&loc, Algorithm::ES256, b"before").unwrap();
    b.destroy(&loc).unwrap();
    assert_eq!(b.loaded_keys(), 0, "the loaded handle is flushed");
    assert_not_found(b.sign(&copy, Algorithm::ES256, b"after"), "same process");
    b.disconnect();
    // Another process, holding the intact blob from before the destroy.
    let other = backend_on(&tpm);
    assert_not_found(
        other.sign(&copy, Algorithm::ES256, b"after"),
        "another process",
    );
    assert_not_found(other.public_key(&copy), "another process, public key");
    // Destroying again is "already gone", which lifecycle treats as done.
    assert_not_found(other.destroy(&copy), "destroy twice");
}

#[tokio::test]
async fn destroying_a_tpm_version_erases_its_blob_and_no_process_holding_the_old_row_can_load_it() {
    let tpm = Swtpm::start();
    let mut env = tpm_env(&tpm);
    env.push((
        "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
        "0".into(),
    ));
    env.push(("KEYGATE__APPROVALS__DESTROY__REQUIRED".into(), "0".into()));
    let s = Server::start_with(Options {
        env,
        ..Options::default()
    });
    let r = s
        .post_json(
            "/api/v1/keys",
            &s.admin_key,
            json!({"ring": "edge", "algorithm": "ES256", "backend": "tpm"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .post_json("/api/v1/keys/edge/regenerate", &s.admin_key, json!({}))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // A process reads the row of v1 before it is destroyed.
    let old_row = stored_locator(&s.data_dir(), "edge", 1).await;
    let KeyLocator::Tpm { private, .. } = &old_row else {
        panic!("a TPM locator: {old_row:?}")
    };
    assert!(!private.is_empty(), "the live row holds the wrapped blob");

    let r = s
        .post_json(
            "/api/v1/keys/edge/versions/1/destroy",
            &s.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    // The store keeps the public part (for the record) and nothing to load it from.
    let erased = stored_locator(&s.data_dir(), "edge", 1).await;
    match &erased {
        KeyLocator::Tpm {
            private, public, ..
        } => {
            assert!(private.is_empty(), "the wrapped private blob is erased");
            assert!(!public.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &s.admin_key).await;
    let entry = log
        .iter()
        .rev()
        .find(|e| e["action"] == "key.destroy")
        .unwrap_or_else(|| panic!("no key.destroy entry: {log:?}"));
    let outcome = entry["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("evicted") && outcome.contains("erased from the store"),
        "the audit entry says what was destroyed: {outcome}"
    );
    // The active version still signs.
    let r = s
        .post_json(
            "/api/v1/keys/edge/sign",
            &s.admin_key,
            json!({"claims": {"sub": "d"}, "audience": "https://gw.example"}),
        )
        .await;
    assert_eq!(r.status(), 200);

    // swtpm serves one client at a time: the server lets go, then the stale process tries.
    let dir = s.stop();
    let stale = backend_on(&tpm);
    assert_not_found(
        stale.sign(&old_row, Algorithm::ES256, b"resurrect"),
        "the old row",
    );
    assert_not_found(stale.public_key(&old_row), "the old row, public key");
    assert_not_found(
        stale.sign(&erased, Algorithm::ES256, b"resurrect"),
        "the erased row",
    );
    // The other version is untouched.
    let live = stored_locator(dir.path(), "edge", 2).await;
    stale.sign(&live, Algorithm::ES256, b"still here").unwrap();
}

// ---------------------------------------------------------------------------------------
// Key attestation
// ---------------------------------------------------------------------------------------

const NONCE: &str = "cmVseWluZy1wYXJ0eS1ub25jZS0wMDE"; // base64url("relying-party-nonce-001")

fn b64(s: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_tpm_key_attestation_verifies_with_tpm2_tools_openssl_and_python_cryptography() {
    let tpm = Swtpm::start();
    let s = Server::start_with(Options {
        env: tpm_env(&tpm),
        ..Options::default()
    });
    let r = s
        .post_json(
            "/api/v1/keys",
            &s.admin_key,
            json!({"ring": "edge", "algorithm": "ES256", "backend": "tpm"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .get(
            &format!("/api/v1/keys/edge/versions/1/attestation?nonce={NONCE}"),
            &s.admin_key,
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut doc: Value = r.json().await.unwrap();
    assert_eq!(doc["format"], "tpm2-certify");
    assert_eq!(doc["backend_kind"], "tpm");
    assert_eq!(doc["nonce"], NONCE);
    assert!(doc["pkcs11"].is_null());
    let t = doc["tpm"].clone();
    assert_eq!(
        t["ek_certificates"],
        json!([]),
        "this swtpm has no EK certificate"
    );

    // tpm2-tools parses the TPMS_ATTEST: a certification of exactly the key's name,
    // carrying the nonce.
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("attest.bin"), b64(&t["certify_info"])).unwrap();
    std::fs::write(path("sig.der"), b64(&t["signature_der"])).unwrap();
    std::fs::write(path("ak.pem"), t["ak_public_key_pem"].as_str().unwrap()).unwrap();
    // tpm2-tools 5.4 prints the TPMS_ATTEST header (magic, type, signer, extraData) and
    // then stops: it cannot print a certify body ("unsupported type 0x8017"), so its exit
    // status is not ours to assert. The certified name is checked in Python below.
    let out = std::process::Command::new("tpm2_print")
        .args(["-t", "TPMS_ATTEST"])
        .arg(path("attest.bin"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("magic: ff544347"), "magic: {printed}");
    assert!(
        printed.contains("type: 8017"),
        "TPM_ST_ATTEST_CERTIFY: {printed}"
    );
    assert!(
        printed.contains(&format!("extraData: {}", hex(b"relying-party-nonce-001"))),
        "extraData is the nonce: {printed}"
    );
    // OpenSSL verifies the AK's signature over it.
    let verified = run(std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(path("ak.pem"))
        .arg("-signature")
        .arg(path("sig.der"))
        .arg(path("attest.bin")));
    assert!(verified.contains("Verified OK"), "{verified}");

    // Python cryptography, from the spec: name = H(public area), the protection
    // attributes, the public key, the signature, and that tampering is caught.
    doc["expected_nonce"] = json!(NONCE);
    let facts = tokio::task::spawn_blocking(move || {
        crate::interop::run_python("verify_tpm_attestation.py", &doc)
    })
    .await
    .unwrap();
    let facts: Value = serde_json::from_str(&facts).unwrap();
    assert_eq!(facts["verified"], true, "{facts}");
    assert_eq!(facts["certified_name"], t["key_name"]);

    // The AK is recorded in the store, and the same AK certifies the next time.
    let again: Value = s
        .get_json("/api/v1/keys/edge/versions/1/attestation", &s.admin_key)
        .await;
    assert_eq!(again["tpm"]["ak_name"], t["ak_name"]);
    assert_eq!(again["nonce"], "");
    let dir = s.stop();
    let db = dir.path().join("keygate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let (name,): (String,) =
        sqlx::query_as("SELECT ak_name FROM attestation_keys WHERE backend = 'tpm'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(json!(name), t["ak_name"]);

    // `keygate keys attest` prints the same document.
    let mut cmd = std::process::Command::new(crate::common::server::keygate_bin());
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(["keys", "attest", "edge", "1", "--nonce", NONCE])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "error");
    for (k, v) in tpm_env(&tpm) {
        cmd.env(k, v);
    }
    let printed: Value = serde_json::from_str(&run(&mut cmd)).unwrap();
    assert_eq!(printed["format"], "tpm2-certify");
    assert_eq!(printed["tpm"]["ak_name"], t["ak_name"]);
    assert_eq!(printed["tpm"]["key_name"], t["key_name"]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn a_pkcs11_key_attestation_reports_the_token_attributes_signed_by_the_audit_ring() {
    let s = Server::start();
    s.create_ring("pay", "ES256").await;
    let doc: Value = s
        .get_json(
            &format!("/api/v1/keys/pay/versions/1/attestation?nonce={NONCE}"),
            &s.admin_key,
        )
        .await;
    assert_eq!(doc["format"], "pkcs11-attributes");
    assert!(doc["tpm"].is_null());
    let p = &doc["pkcs11"];
    let a = &p["attributes"];
    assert_eq!(a["class"], "CKO_PRIVATE_KEY");
    assert_eq!(a["key_type"], "CKK_EC");
    assert_eq!(a["key_bits"], 256);
    for (attr, want) in [
        ("local", true),
        ("never_extractable", true),
        ("always_sensitive", true),
        ("extractable", false),
        ("sensitive", true),
    ] {
        assert_eq!(a[attr], want, "{attr}: {a}");
    }
    assert_eq!(a["token_manufacturer"], "SoftHSM project");

    // PyJWT verifies the JWS with the audit ring's published key; the statement binds
    // the attributes to the version's public key and the nonce.
    let audit_keys: Value = s.get_json("/api/v1/audit/keys", &s.admin_key).await;
    assert!(
        audit_keys
            .to_string()
            .contains(p["audit_kid"].as_str().unwrap()),
        "the signing key is the published audit key: {audit_keys}"
    );
    let jws = p["jws"].as_str().unwrap().to_string();
    let input = json!({"cases": [
        {"jws": jws, "pem": p["audit_public_key_pem"], "alg": p["audit_algorithm"], "valid": true},
        {"jws": tamper(&jws), "pem": p["audit_public_key_pem"], "alg": p["audit_algorithm"], "valid": false},
    ]});
    let out = tokio::task::spawn_blocking(move || {
        crate::interop::run_python("pyjwt_verify_statement.py", &input)
    })
    .await
    .unwrap();
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["ring"], "pay");
    assert_eq!(first["version"], 1);
    assert_eq!(first["nonce"], NONCE);
    assert_eq!(first["attributes"], *a);
    let spki_pem = doc["public_key_pem"].as_str().unwrap();
    let body: String = spki_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(first["public_key_spki"], body, "bound to the public key");
    let statement: Value = serde_json::from_slice(&b64(&p["statement"])).unwrap();
    assert_eq!(statement, first, "`statement` is the JWS payload");

    // A MAC key is a secret key with the same protections.
    s.create_ring("mac", "HS256").await;
    let doc: Value = s
        .get_json("/api/v1/keys/mac/versions/1/attestation", &s.admin_key)
        .await;
    let a = &doc["pkcs11"]["attributes"];
    assert_eq!(a["class"], "CKO_SECRET_KEY");
    assert_eq!(a["extractable"], false);
    assert_eq!(a["sensitive"], true);
    assert!(doc["public_key_pem"].is_null());
    // Attestation looks for a private key first, so for a secret key that lookup misses:
    // an expected miss, never a reason to re-read the token. (It was: any ring viewer
    // could make the module re-initialise, stalling every hardware call, every 5 s.)
    for _ in 0..2 {
        let r = s
            .get("/api/v1/keys/mac/versions/1/attestation", &s.admin_key)
            .await;
        assert_eq!(r.status(), 200);
    }
    let log = s.log_text();
    assert!(
        !log.contains("re-reading the token") && !log.contains("re-initialising"),
        "attesting a secret key re-read the token:\n{log}"
    );

    // Unknown versions, bad nonces and callers without view are refused.
    let r = s
        .get("/api/v1/keys/pay/versions/9/attestation", &s.admin_key)
        .await;
    crate::common::expect_problem(r, 404, "not-found").await;
    let r = s
        .get(
            "/api/v1/keys/pay/versions/1/attestation?nonce=%21%21",
            &s.admin_key,
        )
        .await;
    assert_eq!(r.status(), 400);
    let long = "A".repeat(100);
    let r = s
        .get(
            &format!("/api/v1/keys/pay/versions/1/attestation?nonce={long}"),
            &s.admin_key,
        )
        .await;
    assert_eq!(r.status(), 400);
    let (_, gateway) = s.create_key("gateway").await;
    let r = s
        .get("/api/v1/keys/pay/versions/1/attestation", &gateway)
        .await;
    crate::common::expect_problem(r, 403, "forbidden").await;
}

fn tamper(jws: &str) -> String {
    let mut parts: Vec<String> = jws.split('.').map(String::from).collect();
    let payload = &mut parts[1];
    let last = payload.pop().unwrap();
    payload.push(if last == 'A' { 'B' } else { 'A' });
    parts.join(".")
}

// ---------------------------------------------------------------------------------------
// Crashes in the middle of a destroy, and orphans
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_destroy_interrupted_after_the_hardware_step_is_completed_at_the_next_start() {
    use crate::common::tokens::{fixture, T0};
    use keygate::store::audit::AuditActor;
    let f = fixture().await;
    let actor = AuditActor::scheduler();
    f.keys.regenerate(&f.ring, &actor, T0).await.unwrap();
    let v1 = f.keys.version(&f.ring, 1).unwrap();
    assert_eq!(v1.state, keygate::keys::KeyState::Compromised);
    // The crash: the intent is recorded and the key removed, the store step never ran.
    f.store.record_destroy_intent(&f.ring, 1, T0).await.unwrap();
    let backend = crate::common::hsm::backend();
    backend.destroy(&v1.locator).unwrap();
    assert!(f.keys.reconcile().await.iter().any(|p| p.contains("v1")));

    let done = f.keys.complete_interrupted_destroys(T0 + 1).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].contains("completed"), "{done:?}");
    assert_eq!(
        f.keys.version(&f.ring, 1).unwrap().state,
        keygate::keys::KeyState::Destroyed
    );
    assert!(
        !f.keys.reconcile().await.iter().any(|p| p.contains(&f.ring)),
        "nothing half-applied is left"
    );
    assert!(f
        .keys
        .complete_interrupted_destroys(T0 + 2)
        .await
        .is_empty());
}

#[tokio::test]
async fn a_key_generated_but_never_recorded_is_reported_and_removed_only_through_the_destroy_gate()
{
    let s = Server::start_with(Options {
        env: vec![("KEYGATE__APPROVALS__DESTROY__REQUIRED".into(), "1".into())],
        ..Options::default()
    });
    let alice = s.principal("alice", "super-admin").await;
    let dir = s.stop();
    // A key the store does not know, as a crash between generating and recording leaves.
    let out = crash_cli(dir.path(), &["keys", "reconcile"], "1");
    assert!(out.status.success(), "{}", text(&out));
    // pkcs11-tool (OpenSC) makes it on keygate's token, labelled as keygate labels keys.
    let pin = std::fs::read_to_string(dir.path().join("pin")).unwrap();
    let made = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "keygate",
        ])
        .args([
            "--login",
            "--pin",
            pin.trim(),
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
        ])
        .args(["--id", "0badc0de", "--label", "keygate:ghost:v1"])
        .env(
            "SOFTHSM2_CONF",
            dir.path().join("softhsm").join("softhsm2.conf"),
        )
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let out = crash_cli(dir.path(), &["keys", "reconcile"], "1");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("keygate:ghost:v1") && text(&out).contains("%0b%ad%c0%de"),
        "{}",
        text(&out)
    );
    // --apply asks the approvers; nothing is removed yet.
    let out = crash_cli(dir.path(), &["keys", "reconcile", "--apply"], "1");
    let said = text(&out);
    assert!(said.contains("pending"), "{said}");
    let id = said
        .split("approval ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(!crash_cli(dir.path(), &["keys", "reconcile"], "1")
        .status
        .success());
    // One approval by another super-admin runs it.
    let s = Server::start_in(
        dir,
        Options {
            env: vec![("KEYGATE__APPROVALS__DESTROY__REQUIRED".into(), "1".into())],
            ..Options::default()
        },
    );
    assert!(
        s.log_containing("keygate:ghost:v1")
            .await
            .contains("keygate:ghost:v1"),
        "start-up reconciliation reports it: {}",
        s.log_text()
    );
    let r = s
        .post_json(
            &format!("/api/v1/approvals/{id}/approve"),
            &alice,
            json!({}),
        )
        .await;
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    assert!(
        a["outcome"].as_str().unwrap().contains("removed 1 of 1"),
        "{a}"
    );
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &alice).await;
    assert!(log.iter().any(|e| e["action"] == "key.orphan-destroy"));
    let dir = s.stop();
    let out = crash_cli(dir.path(), &["keys", "reconcile"], "1");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("store and hardware agree"));
}

fn crash_cli(dir: &std::path::Path, args: &[&str], destroy_required: &str) -> std::process::Output {
    std::process::Command::new(crate::common::server::keygate_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE__APPROVALS__DESTROY__REQUIRED", destroy_required)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
