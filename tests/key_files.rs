//! API key files: the file, its assertions, client_credentials, and their lifecycle.
//!
//! Assertions are signed by PyJWT with `cryptography` (`tests/interop/pyjwt_sign.py`), a
//! JOSE stack keygate does not use, and by `keygate client assertion`.

use crate::common::server::{keygate_bin, Options, Server};
use crate::interop::run_python;
use serde_json::{json, Value};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs `claims` with `pem` (optionally encrypted) through PyJWT.
async fn pyjwt(pem: &str, passphrase: Option<&str>, alg: &str, claims: Value) -> String {
    let input = json!({"op": "sign", "key_pem": pem, "passphrase": passphrase, "alg": alg,
        "claims": claims, "headers": {"typ": "JWT"}});
    tokio::task::spawn_blocking(move || run_python("pyjwt_sign.py", &input))
        .await
        .unwrap()
}

/// The claims of a well-formed assertion for `file`.
fn claims(file: &Value) -> Value {
    let id = file["accessID"].as_str().unwrap();
    let t = now();
    json!({"iss": id, "sub": id, "aud": file["adminRestApiUrl"], "iat": t, "exp": t + 300,
        "jti": uuid::Uuid::new_v4().to_string()})
}

async fn create(s: &Server, body: Value) -> reqwest::Response {
    s.post_json("/api/v1/key-files", &s.admin_key, body).await
}

async fn create_ok(s: &Server, body: Value) -> Value {
    let r = create(s, body).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

async fn status_with(s: &Server, token: &str) -> u16 {
    s.get_bearer("/api/v1/key-files", token)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_key_file_is_returned_once_and_its_metadata_never_carries_key_material() {
    let s = Server::start();
    let file = create_ok(
        &s,
        json!({"description": "billing export", "role": "read-only", "customer_name": "ACME"}),
    )
    .await;
    let keys: Vec<&str> = file
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        5,
        "exactly the fields docs/key-files.md documents: {keys:?}"
    );
    assert_eq!(file["customerName"], "ACME");
    assert_eq!(file["description"], "billing export");
    assert_eq!(file["adminRestApiUrl"], format!("{}/api/v1", s.base));
    let pem = file["accessKey"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    let id = file["accessID"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());

    for path in [
        "/api/v1/key-files".to_string(),
        format!("/api/v1/key-files/{id}"),
    ] {
        let r = s.get(&path, &s.admin_key).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("accessKey"),
            "{text}"
        );
        assert!(text.contains("\"algorithm\":\"ES256\""), "{text}");
    }
    // No log line ever carries the private key.
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!s.log_text().contains(body_line));
}

#[tokio::test]
async fn a_pyjwt_signed_assertion_authenticates_once_and_a_replay_is_refused() {
    let s = Server::start();
    let file = create_ok(&s, json!({"description": "d", "role": "read-only"})).await;
    let pem = file["accessKey"].as_str().unwrap();
    let token = pyjwt(pem, None, "ES256", claims(&file)).await;
    let r = s.get_bearer("/api/v1/key-files", &token).await;
    assert_eq!(r.status(), 200);
    // The jti is spent: the same assertion never works twice.
    let r = s.get_bearer("/api/v1/key-files", &token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // The role of the file applies: read-only may only read.
    let t2 = pyjwt(pem, None, "ES256", claims(&file)).await;
    let r = s
        .http
        .post(s.url("/api/v1/key-files"))
        .bearer_auth(&t2)
        .json(&json!({"description": "x", "role": "read-only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn assertions_that_break_a_rule_are_refused() {
    let s = Server::start();
    let file = create_ok(&s, json!({"description": "d", "role": "admin"})).await;
    let pem = file["accessKey"].as_str().unwrap().to_string();
    let id = file["accessID"].as_str().unwrap().to_string();
    let t = now();
    let base = claims(&file);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c["jti"] = json!(uuid::Uuid::new_v4().to_string());
        c
    };
    let mut without_jti = base.clone();
    without_jti.as_object_mut().unwrap().remove("jti");
    let cases = [
        ("lives longer than 60 minutes", with("exp", json!(t + 3601))),
        ("already expired", {
            let mut c = with("exp", json!(t - 600));
            c["iat"] = json!(t - 900);
            c
        }),
        ("issued in the future", {
            let mut c = with("iat", json!(t + 600));
            c["exp"] = json!(t + 900);
            c
        }),
        (
            "for another audience",
            with("aud", json!("https://elsewhere.example/api/v1")),
        ),
        (
            "sub is not the accessID",
            with("sub", json!("someone-else")),
        ),
        ("no jti", without_jti),
        ("unknown accessID", {
            let other = uuid::Uuid::new_v4().to_string();
            let mut c = with("iss", json!(other));
            c["sub"] = json!(other);
            c
        }),
    ];
    for (what, c) in cases {
        let token = pyjwt(&pem, None, "ES256", c).await;
        assert_eq!(status_with(&s, &token).await, 401, "{what}");
    }
    // The token endpoint's URL is an accepted audience too (RFC 7523).
    let token = pyjwt(
        &pem,
        None,
        "ES256",
        with("aud", json!(format!("{}/api/v1/auth/token", s.base))),
    )
    .await;
    assert_eq!(status_with(&s, &token).await, 200);
    // A key of another type, or alg none, is refused whatever it says.
    let other = tokio::task::spawn_blocking(|| {
        run_python("pyjwt_sign.py", &json!({"op": "keygen", "kind": "rsa"}))
    })
    .await
    .unwrap();
    let other: Value = serde_json::from_str(&other).unwrap();
    let token = pyjwt(
        other["private_pem"].as_str().unwrap(),
        None,
        "RS256",
        with("jti", json!("r1")),
    )
    .await;
    assert_eq!(
        status_with(&s, &token).await,
        401,
        "RS256 for an ES256 file"
    );
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none"})),
        b64(&with("jti", json!("n1")))
    );
    assert_eq!(status_with(&s, &none).await, 401, "alg none");
    let _ = id;
}

#[tokio::test]
async fn an_encrypted_rs256_file_works_with_pyjwt_and_the_cli_and_a_wrong_passphrase_fails_clearly()
{
    let s = Server::start();
    let pass = "correct horse battery staple";
    let file = create_ok(
        &s,
        json!({"description": "d", "role": "read-only", "algorithm": "RS256", "passphrase": pass}),
    )
    .await;
    let pem = file["accessKey"].as_str().unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
        "{pem}"
    );
    // OpenSSL (through cryptography) decrypts it: the format is standard PBES2.
    let token = pyjwt(pem, Some(pass), "RS256", claims(&file)).await;
    assert_eq!(status_with(&s, &token).await, 200);

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("file.json");
    std::fs::write(&key_file, file.to_string()).unwrap();
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, format!("{pass}\n")).unwrap();
    let out = std::process::Command::new(keygate_bin())
        .args(["client", "assertion", "--key-file"])
        .arg(&key_file)
        .arg("--passphrase-file")
        .arg(&pass_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(status_with(&s, &token).await, 200);

    std::fs::write(&pass_file, "not the passphrase\n").unwrap();
    let out = std::process::Command::new(keygate_bin())
        .args(["client", "assertion", "--key-file"])
        .arg(&key_file)
        .arg("--passphrase-file")
        .arg(&pass_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(out.stdout.is_empty());
    let out = std::process::Command::new(keygate_bin())
        .args(["client", "assertion", "--key-file"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--passphrase-file"));
}

#[tokio::test]
async fn client_credentials_trades_an_assertion_for_a_token_that_ends_with_the_file() {
    let s = Server::start();
    let file = create_ok(&s, json!({"description": "d", "role": "read-only"})).await;
    let id = file["accessID"].as_str().unwrap().to_string();
    let pem = file["accessKey"].as_str().unwrap().to_string();
    let mut c = claims(&file);
    c["aud"] = json!(format!("{}/api/v1/auth/token", s.base));
    let assertion = pyjwt(&pem, None, "ES256", c).await;
    let grant = |a: String| {
        let s = &s;
        async move {
            s.post_form(
                "/api/v1/auth/token",
                None,
                &[
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &a),
                ],
            )
            .await
        }
    };
    let r = grant(assertion.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().unwrap().to_string();
    let r = s.get_bearer("/api/v1/key-files", &access).await;
    assert_eq!(r.status(), 200);
    // Introspection names the file as the subject.
    let r = s
        .post_form(
            "/api/v1/auth/introspect",
            Some(("x-api-key", &s.admin_key)),
            &[("token", &access)],
        )
        .await;
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], id.as_str());

    // Replaying the assertion at the token endpoint is refused as RFC 6749 invalid_client.
    let r = grant(assertion).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    // Regenerating the file ends the token minted with it, at once.
    let r = s
        .post_json(
            &format!("/api/v1/key-files/{id}/regenerate"),
            &s.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.get_bearer("/api/v1/key-files", &access).await.status(),
        401
    );
}

#[tokio::test]
async fn regenerate_invalidates_the_old_file_at_once_and_delete_ends_the_new_one() {
    let s = Server::start();
    let file = create_ok(&s, json!({"description": "d", "role": "read-only"})).await;
    let id = file["accessID"].as_str().unwrap().to_string();
    let old_pem = file["accessKey"].as_str().unwrap().to_string();
    let r = s
        .http
        .post(s.url(&format!("/api/v1/key-files/{id}/regenerate")))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let new: Value = r.json().await.unwrap();
    assert_eq!(new["accessID"], id.as_str(), "the identity stays");
    let new_pem = new["accessKey"].as_str().unwrap().to_string();
    assert_ne!(new_pem, old_pem);
    let old = pyjwt(&old_pem, None, "ES256", claims(&file)).await;
    assert_eq!(
        status_with(&s, &old).await,
        401,
        "the previous file is dead"
    );
    let fresh = pyjwt(&new_pem, None, "ES256", claims(&new)).await;
    assert_eq!(status_with(&s, &fresh).await, 200);

    let r = s
        .delete(&format!("/api/v1/key-files/{id}"), &s.admin_key)
        .await;
    assert_eq!(r.status(), 204);
    let after = pyjwt(&new_pem, None, "ES256", claims(&new)).await;
    assert_eq!(status_with(&s, &after).await, 401);
    let r = s
        .get(&format!("/api/v1/key-files/{id}"), &s.admin_key)
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn patch_changes_description_and_role_without_a_new_key() {
    let s = Server::start();
    let file = create_ok(&s, json!({"description": "d", "role": "read-only"})).await;
    let id = file["accessID"].as_str().unwrap();
    let pem = file["accessKey"].as_str().unwrap();
    let r = s
        .patch_json(
            &format!("/api/v1/key-files/{id}"),
            &s.admin_key,
            json!({"description": "renamed", "role": "help-desk"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["description"], "renamed");
    assert_eq!(v["role"], "help-desk");
    // The same key now acts with the new role: help-desk may create key files.
    let token = pyjwt(pem, None, "ES256", claims(&file)).await;
    let r = s
        .http
        .post(s.url("/api/v1/key-files"))
        .bearer_auth(&token)
        .json(&json!({"description": "made by a file", "role": "read-only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn bring_your_own_key_stores_the_public_key_and_returns_no_access_key() {
    let s = Server::start();
    let pair = tokio::task::spawn_blocking(|| {
        run_python("pyjwt_sign.py", &json!({"op": "keygen", "kind": "ec"}))
    })
    .await
    .unwrap();
    let pair: Value = serde_json::from_str(&pair).unwrap();
    let file = create_ok(
        &s,
        json!({"description": "own key", "role": "read-only", "public_key_pem": pair["public_pem"]}),
    )
    .await;
    assert!(file.get("accessKey").is_none(), "{file}");
    let token = pyjwt(
        pair["private_pem"].as_str().unwrap(),
        None,
        "ES256",
        claims(&file),
    )
    .await;
    assert_eq!(status_with(&s, &token).await, 200);
    let id = file["accessID"].as_str().unwrap();
    let v: Value = s
        .get_json(&format!("/api/v1/key-files/{id}"), &s.admin_key)
        .await;
    assert_eq!(v["key_source"], "client");
}

#[tokio::test]
async fn bad_input_gets_a_clear_400_and_stores_nothing() {
    let s = Server::start();
    let pair = tokio::task::spawn_blocking(|| {
        run_python("pyjwt_sign.py", &json!({"op": "keygen", "kind": "ec"}))
    })
    .await
    .unwrap();
    let pair: Value = serde_json::from_str(&pair).unwrap();
    let cases = [
        (
            "malformed PEM",
            json!({"description": "d", "role": "read-only", "public_key_pem": "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n"}),
            "public_key_pem",
        ),
        (
            "a private key as the public key",
            json!({"description": "d", "role": "read-only", "public_key_pem": pair["private_pem"]}),
            "private key",
        ),
        (
            "a short passphrase",
            json!({"description": "d", "role": "read-only", "passphrase": "short"}),
            "passphrase",
        ),
        (
            "a passphrase with a client key",
            json!({"description": "d", "role": "read-only", "passphrase": "long enough passphrase", "public_key_pem": pair["public_pem"]}),
            "passphrase",
        ),
        (
            "an unknown role",
            json!({"description": "d", "role": "wizard"}),
            "unknown role",
        ),
        (
            "an unsupported algorithm",
            json!({"description": "d", "role": "read-only", "algorithm": "EdDSA"}),
            "ES256 or RS256",
        ),
        (
            "no description",
            json!({"description": " ", "role": "read-only"}),
            "description",
        ),
    ];
    for (what, body, needle) in cases {
        let r = create(&s, body).await;
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let detail = r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(detail.contains(needle), "{what}: {detail}");
    }
    let all: Vec<Value> = s.get_json("/api/v1/key-files", &s.admin_key).await;
    assert!(all.is_empty(), "{all:?}");
}

#[tokio::test]
async fn the_key_file_limit_answers_409_and_permissions_follow_the_role_rules() {
    let s = Server::start_with(Options {
        env: vec![("KEYGATE__KEY_FILES__MAX".into(), "2".into())],
        ..Options::default()
    });
    for _ in 0..2 {
        create_ok(&s, json!({"description": "d", "role": "read-only"})).await;
    }
    let r = create(&s, json!({"description": "d", "role": "read-only"})).await;
    assert_eq!(r.status(), 409);

    let s = Server::start();
    let (_, read_only) = s.create_key("read-only").await;
    let (_, help_desk) = s.create_key("help-desk").await;
    let body = json!({"description": "d", "role": "read-only"});
    let r = s
        .post_json("/api/v1/key-files", &read_only, body.clone())
        .await;
    assert_eq!(r.status(), 403);
    let r = s.post_json("/api/v1/key-files", &help_desk, body).await;
    assert_eq!(r.status(), 201);
    let r = s
        .post_json(
            "/api/v1/key-files",
            &help_desk,
            json!({"description": "d", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 403, "help-desk cannot mint an admin file");
    let r = s.get("/api/v1/key-files", &read_only).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_new_role_ends_tokens_minted_under_the_old_one_and_rekeying_keeps_spent_ids() {
    let s = Server::start();
    let pair = tokio::task::spawn_blocking(|| {
        run_python("pyjwt_sign.py", &json!({"op": "keygen", "kind": "ec"}))
    })
    .await
    .unwrap();
    let pair: Value = serde_json::from_str(&pair).unwrap();
    let private = pair["private_pem"].as_str().unwrap().to_string();
    let file = create_ok(
        &s,
        json!({"description": "own key", "role": "help-desk", "public_key_pem": pair["public_pem"]}),
    )
    .await;
    let id = file["accessID"].as_str().unwrap().to_string();
    let mut c = claims(&file);
    c["aud"] = json!(format!("{}/api/v1/auth/token", s.base));
    let assertion = pyjwt(&private, None, "ES256", c).await;
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.get_bearer("/api/v1/key-files", &access).await.status(),
        200
    );
    let r = s
        .patch_json(
            &format!("/api/v1/key-files/{id}"),
            &s.admin_key,
            json!({"role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.get_bearer("/api/v1/key-files", &access).await.status(),
        401,
        "a token carrying the old role ends with it"
    );
    // Registering the same client key again does not revive spent assertions.
    let spent = pyjwt(&private, None, "ES256", claims(&file)).await;
    assert_eq!(status_with(&s, &spent).await, 200);
    let r = s
        .post_json(
            &format!("/api/v1/key-files/{id}/regenerate"),
            &s.admin_key,
            json!({"public_key_pem": pair["public_pem"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(status_with(&s, &spent).await, 401);
}
