//! A ring on the TPM beside rings on the HSM, end to end through the real server: created
//! over the HTTP API, listed with its backend, signing for the signing service, covered
//! by readyz, failing with 503 (and only that ring) while the TPM is down, and back after.

use crate::common::server::{keygate_bin, Options, Server};
use crate::common::swtpm::Swtpm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keygate::hardware::{Algorithm, PublicKey};
use keygate::keys::verify::verify_signature;
use serde_json::{json, Value};

fn tpm_env(tpm: &Swtpm) -> Vec<(String, String)> {
    vec![
        ("KEYGATE__BACKENDS__TPM__TYPE".into(), "tpm".into()),
        ("KEYGATE__BACKENDS__TPM__TCTI".into(), tpm.tcti()),
    ]
}

/// Verifies a compact JWS against the JWKS key its `kid` names.
fn verify_with_jwks(jwks: &Value, token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_string();
    assert_eq!(header["alg"], "ES256");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS {jwks}"));
    let coord = |n: &str| URL_SAFE_NO_PAD.decode(jwk[n].as_str().unwrap()).unwrap();
    let point = [vec![4u8], coord("x"), coord("y")].concat();
    let pk = PublicKey::ec(Algorithm::ES256, point).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(
        verify_signature(&pk, Algorithm::ES256, signed.as_bytes(), &sig),
        "the JWKS key verifies the token"
    );
    kid
}

async fn sign(s: &Server, ring: &str) -> reqwest::Response {
    s.post_json(
        &format!("/api/v1/keys/{ring}/sign"),
        &s.admin_key,
        json!({"claims": {"sub": "device-1"}, "audience": "https://gateway.example"}),
    )
    .await
}

#[tokio::test]
async fn a_ring_on_the_tpm_signs_beside_jwt_default_on_the_hsm_and_survives_a_tpm_restart() {
    let mut tpm = Swtpm::start();
    let s = Server::start_with(Options {
        env: tpm_env(&tpm),
        ..Options::default()
    });

    let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["backends"]["tpm"]["status"], "ok", "{body}");
    assert_eq!(body["backends"]["hsm"]["status"], "ok", "{body}");

    let r = s
        .post_json(
            "/api/v1/keys",
            &s.admin_key,
            json!({"ring": "edge-jwt", "algorithm": "ES256", "backend": "tpm"}),
        )
        .await;
    assert_eq!(r.status(), 201);

    let keys: Vec<Value> = s.get_json("/api/v1/keys", &s.admin_key).await;
    let backend_of = |ring: &str| {
        keys.iter()
            .find(|k| k["ring"] == ring)
            .map(|k| k["backend"].clone())
    };
    assert_eq!(backend_of("edge-jwt"), Some(json!("tpm")));
    assert_eq!(backend_of("jwt-default"), Some(json!("hsm")));

    let r = sign(&s, "edge-jwt").await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let jwks: Value = s
        .http
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = verify_with_jwks(&jwks, &token);

    // The TPM goes away: its ring answers 503, readyz says which backend, the HSM rings
    // keep working.
    tpm.stop();
    let r = sign(&s, "edge-jwt").await;
    crate::common::expect_problem(r, 503, "hardware-unavailable").await;
    // Clients get a generic 503; the operator's log names the key and the TPM.
    let log = s.log_text();
    assert!(
        log.contains("edge-jwt") && log.contains(&tpm.tcti()),
        "the log names the key and the TPM: {log}"
    );
    let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let detail = ready.json::<Value>().await.unwrap()["detail"].to_string();
    assert!(
        detail.contains("tpm") && !detail.contains("\"hsm\""),
        "{detail}"
    );
    let r = s
        .post_form(
            "/api/v1/auth/token",
            Some(("x-api-key", &s.admin_key)),
            &[
                ("grant_type", "custom_token"),
                ("subject", "svc"),
                ("expires_in", "60"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "jwt-default on the HSM still signs");

    // Back again: the next call reconnects, re-creates the primary, reloads the key.
    tpm.restart();
    let r = sign(&s, "edge-jwt").await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(verify_with_jwks(&jwks, &token), kid, "the same key");

    // The CLI lists the backend of every version.
    let dir = s.stop();
    let mut cmd = std::process::Command::new(keygate_bin());
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(["keys", "list"])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "warn");
    for (k, v) in tpm_env(&tpm) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edge = listing
        .lines()
        .find(|l| l.starts_with("edge-jwt"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        edge.contains(" tpm ") && edge.contains("(tpm: tpm:label="),
        "{edge}"
    );
    let default = listing
        .lines()
        .find(|l| l.starts_with("jwt-default"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(default.contains(" hsm "), "{default}");
}

#[tokio::test]
async fn keygate_starts_and_serves_its_hsm_rings_while_the_tpm_is_unreachable() {
    let tpm = Swtpm::start();
    let env = tpm_env(&tpm);
    drop(tpm);
    let s = Server::start_with(Options {
        env,
        ..Options::default()
    });
    let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let r = s
        .post_json(
            "/api/v1/keys",
            &s.admin_key,
            json!({"ring": "edge-jwt", "algorithm": "ES256", "backend": "tpm"}),
        )
        .await;
    crate::common::expect_problem(r, 503, "hardware-unavailable").await;
    s.create_ring("hsm-jwt", "ES256").await;
    let r = sign(&s, "hsm-jwt").await;
    assert_eq!(r.status(), 200, "an HSM ring signs");
}

/// Handshake signatures counted by the hardware metrics for `backend`.
async fn tls_signs_on(s: &Server, backend: &str) -> u64 {
    let text = s.metrics().await;
    text.lines()
        .filter(|l| {
            l.starts_with("keygate_hardware_call_duration_seconds_count{")
                && l.contains("op=\"tls_sign\"")
                && l.contains(&format!("backend=\"{backend}\""))
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn keygate_serves_https_with_its_identity_key_on_the_tpm() {
    let tpm = Swtpm::start();
    let mut env = tpm_env(&tpm);
    env.push(("KEYGATE__RINGS__TLS-IDENTITY__BACKEND".into(), "tpm".into()));
    env.push((
        "KEYGATE__RINGS__TLS-IDENTITY__ALGORITHM".into(),
        "ES256".into(),
    ));
    let s = Server::start_with(Options {
        env,
        https: true,
        ..Options::default()
    });
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let keys: Vec<Value> = s.get_json("/api/v1/keys", &s.admin_key).await;
    let identity = keys
        .iter()
        .find(|k| k["ring"] == "tls-identity")
        .expect("tls-identity ring");
    assert_eq!(identity["backend"], "tpm", "{identity}");
    let jwt = keys.iter().find(|k| k["ring"] == "jwt-default").unwrap();
    assert_eq!(jwt["backend"], "hsm");

    // Every new connection is a full handshake whose signature the TPM makes.
    let before = tls_signs_on(&s, "tpm").await;
    for _ in 0..3 {
        let fresh = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(
                    &std::fs::read(s.data_dir().join("tls").join("cert.pem")).unwrap(),
                )
                .unwrap(),
            )
            .build()
            .unwrap();
        let r = fresh.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = tls_signs_on(&s, "tpm").await;
    assert!(
        after >= before + 3,
        "handshakes signed on the TPM: {before} -> {after}"
    );
    assert_eq!(tls_signs_on(&s, "hsm").await, 0, "none on the HSM");
}
