//! Interoperability: tokens keygate issues verify with a JOSE library nobody here wrote
//! (Python's PyJWT with `cryptography`), given only `/.well-known/jwks.json`.
//!
//! The interpreter is `KEYGATE_PYTHON`, else `/usr/bin/python3` (where `ci/setup.sh`
//! installs `python3-jwt` and `python3-cryptography`), else `python3`. The test fails,
//! loudly, when PyJWT is missing: interoperability is a requirement, not an extra.

use crate::common::server::Server;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

pub fn python() -> String {
    if let Ok(p) = std::env::var("KEYGATE_PYTHON") {
        return p;
    }
    if std::path::Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    "python3".into()
}

/// Runs `tests/interop/<script>` with `input` on stdin; returns stdout, panicking with
/// stderr when the script fails. Blocking: call from `spawn_blocking` in async tests.
pub fn run_python(script: &str, input: &serde_json::Value) -> String {
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n(needs python3-jwt and python3-cryptography: ./ci/setup.sh installs them)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn tamper(token: &str) -> String {
    // Flip one character of the payload: the signature must no longer verify.
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut p: Vec<char> = payload.chars().collect();
    let i = p.len() / 2;
    p[i] = if p[i] == 'A' { 'B' } else { 'A' };
    format!("{head}.{}.{sig}", p.into_iter().collect::<String>())
}

#[tokio::test]
async fn pyjwt_verifies_access_and_signed_tokens_of_every_algorithm_from_the_jwks_alone() {
    let s = Server::start();
    let mut cases = Vec::new();
    // Access tokens from the default ES256 ring.
    let r = s
        .post_json(
            "/api/v1/auth/token",
            &s.admin_key,
            json!({"grant_type": "custom_token", "subject": "svc", "expires_in": 300}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    cases.push(json!({"token": access, "alg": "ES256", "audience": s.base, "issuer": s.base, "valid": true}));
    cases.push(json!({"token": tamper(&access), "alg": "ES256", "audience": s.base, "issuer": s.base, "valid": false}));
    // Signing-service tokens from a ring of each other algorithm.
    for (ring, alg) in [
        ("i-es384", "ES384"),
        ("i-eddsa", "EdDSA"),
        ("i-rs256", "RS256"),
        ("i-ps256", "PS256"),
    ] {
        s.create_ring(ring, alg).await;
        let r = s
            .post_json(
                &format!("/api/v1/keys/{ring}/sign"),
                &s.admin_key,
                json!({"claims": {"sub": "device"}, "audience": "https://gw.example"}),
            )
            .await;
        assert_eq!(r.status(), 200, "{ring}");
        let t = r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        // Each signing ring is its own issuer.
        let iss = format!("{}/rings/{ring}", s.base);
        cases.push(json!({"token": t, "alg": alg, "audience": "https://gw.example", "issuer": iss, "valid": true}));
        cases.push(json!({"token": tamper(&t), "alg": alg, "audience": "https://gw.example", "issuer": iss, "valid": false}));
        // The right key, the wrong audience: PyJWT's own aud check must refuse it too.
        cases.push(json!({"token": t, "alg": alg, "audience": "https://other", "issuer": iss, "valid": false}));
        // Nor does it pass where keygate's access tokens are expected.
        cases.push(json!({"token": t, "alg": alg, "audience": "https://gw.example", "issuer": s.base, "valid": false}));
    }
    let input = json!({"jwks_uri": s.url("/.well-known/jwks.json"), "cases": cases});
    let jwks_uri = input["jwks_uri"].clone();
    // PyJWT blocks on its HTTP fetch; run it off the async runtime.
    let out = tokio::task::spawn_blocking(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_verify.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "PyJWT did not agree (jwks {jwks_uri}):\n{stdout}\n{stderr}\n\
         (needs python3-jwt and python3-cryptography: ./ci/setup.sh installs them)"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        18,
        "{stdout}"
    );
}
