//! `keygate restore --force` over a newer store never brings back a privilege, an IdP or
//! a key that store took away after the backup (`docs/operations.md`, "Restoring over a
//! newer store"). Each test reproduces the attack: back up, take the thing away, restore
//! the backup over the store, and prove the old privilege, IdP or key is refused.

use crate::common::expect_problem;
use crate::common::server::{keygate_bin, Options, Server, PASSWORD};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

fn keygate(dir: &Path, args: &[&str]) -> Output {
    Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run keygate")
}

fn ok(out: &Output, what: &str) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The issuer must not change with the port a restarted test server gets.
fn options(env: &[(&str, &str)]) -> Options {
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push((
        "KEYGATE__TOKENS__ISSUER".into(),
        "https://keygate.test".into(),
    ));
    Options {
        env,
        ..Options::default()
    }
}

/// Backs up the server's store into `files`; returns the backup's path.
fn backup(s: &Server, files: &tempfile::TempDir) -> std::path::PathBuf {
    let out = files.path().join("b.tar");
    let data = s.data_dir();
    ok(
        &keygate(
            &data,
            &["backup", "--out", out.to_str().expect("utf-8 path")],
        ),
        "backup",
    );
    out
}

/// Stops the server, restores `backup` over its store with `--force`, checks the chain,
/// and starts it again; returns the restarted server and what `restore` printed.
fn restore_over(s: Server, backup: &Path, opts: Options) -> (Server, String) {
    let dir = s.stop();
    let out = ok(
        &keygate(
            dir.path(),
            &[
                "restore",
                "--from",
                backup.to_str().expect("utf-8 path"),
                "--force",
            ],
        ),
        "restore --force",
    );
    ok(&keygate(dir.path(), &["audit", "verify"]), "audit verify");
    (Server::start_in(dir, opts), out)
}

async fn sign(s: &Server, key: &str) -> reqwest::Response {
    s.post_json(
        "/api/v1/keys/pay/sign",
        key,
        json!({"claims": {"sub": "device"}, "audience": "https://api.example"}),
    )
    .await
}

/// A custom token minted with `key`.
async fn mint(s: &Server, key: &str) -> reqwest::Response {
    s.post_form(
        "/api/v1/auth/token",
        Some(("x-api-key", key)),
        &[
            ("grant_type", "custom_token"),
            ("subject", "svc"),
            ("expires_in", "3600"),
            ("role", "read-only"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_user_demoted_after_the_backup_stays_demoted() {
    let s = Server::start_with(options(&[]));
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "alice", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let files = tempfile::tempdir().unwrap();
    let b = backup(&s, &files);

    // Alice's admin role is taken away after the backup.
    let r = s
        .patch_json(
            "/api/v1/users/alice",
            &s.admin_key,
            json!({"role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let (s, out) = restore_over(s, &b, options(&[]));
    assert!(out.contains("1 user roles"), "{out}");
    let token = s.login("alice", PASSWORD).await;
    let r = s
        .send_bearer(
            reqwest::Method::POST,
            "/api/v1/users",
            &token,
            json!({"username": "mallory", "password": PASSWORD, "role": "read-only"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
}

#[tokio::test]
async fn a_member_removed_from_a_group_after_the_backup_stays_removed() {
    let s = Server::start_with(options(&[]));
    s.create_ring("pay", "ES256").await;
    let gw = s.principal("gw", "gateway").await;
    let r = s
        .post_json("/api/v1/groups", &s.admin_key, json!({"name": "payments"}))
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .post_json(
            "/api/v1/groups/payments/members",
            &s.admin_key,
            json!({"principal": "gw"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .post_json(
            "/api/v1/groups/payments/grants",
            &s.admin_key,
            json!({"resource": "ring:pay", "permissions": ["sign"]}),
        )
        .await;
    assert_eq!(r.status(), 201);

    assert_eq!(sign(&s, &gw).await.status(), 200, "a member signs on pay");
    let files = tempfile::tempdir().unwrap();
    let b = backup(&s, &files);

    let r = s
        .delete("/api/v1/groups/payments/members/gw", &s.admin_key)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(sign(&s, &gw).await.status(), 403);

    let (s, out) = restore_over(s, &b, options(&[]));
    assert!(out.contains("1 group memberships removed"), "{out}");
    expect_problem(sign(&s, &gw).await, 403, "forbidden").await;
}

/// A P-256 key of a test IdP registered by its PEM public key.
struct Idp {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
}

impl Idp {
    const ISSUER: &'static str = "https://idp.restore.example";

    fn new() -> Idp {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        Idp {
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn pem(&self) -> String {
        use aws_lc_rs::signature::KeyPair;
        let public = keygate::hardware::PublicKey::ec(
            keygate::hardware::Algorithm::ES256,
            self.pair.public_key().as_ref().to_vec(),
        )
        .unwrap();
        pkcs8::der::pem::encode_string(
            "PUBLIC KEY",
            pkcs8::LineEnding::LF,
            &public.spki_der().unwrap(),
        )
        .unwrap()
    }

    /// A fresh token of this IdP for `sub` in the group mapped to read-only.
    fn token(&self) -> String {
        use keygate::services::tokens::jws;
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss": Self::ISSUER, "aud": "keygate-api", "sub": "svc-1",
                            "iat": t, "exp": t + 600, "groups": ["readers"]});
        let input = jws::signing_input(&json!({"alg": "ES256", "typ": "JWT"}), &claims).unwrap();
        let sig = self
            .pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        jws::finish(input, sig.as_ref())
    }
}

#[tokio::test]
async fn an_idp_deleted_after_the_backup_stays_deleted() {
    let s = Server::start_with(options(&[]));
    let idp = Idp::new();
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &s.admin_key,
            json!({"name": "corp", "issuer": Idp::ISSUER, "audience": "keygate-api",
                   "public_key_pem": idp.pem(), "role_claim": "groups",
                   "role_mapping": {"readers": "read-only"}}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let oauth_id = r.json::<Value>().await.unwrap()["oauth_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.get_bearer("/api/v1/keys", &idp.token()).await.status(),
        200
    );
    let files = tempfile::tempdir().unwrap();
    let b = backup(&s, &files);

    // The IdP is deleted after the backup (its signing key leaked, say).
    let r = s
        .delete(&format!("/api/v1/oauth-servers/{oauth_id}"), &s.admin_key)
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let admin = s.admin_key.clone();

    let (s, out) = restore_over(s, &b, options(&[]));
    assert!(out.contains("1 IdPs dropped"), "{out}");
    expect_problem(
        s.get_bearer("/api/v1/keys", &idp.token()).await,
        401,
        "unauthenticated",
    )
    .await;
    let servers: Vec<Value> = s.get_json("/api/v1/oauth-servers", &admin).await;
    assert!(servers.is_empty(), "{servers:?}");
}

#[tokio::test]
async fn a_key_version_compromised_after_the_backup_stays_compromised() {
    let env = [("KEYGATE__APPROVALS__REGENERATE__REQUIRED", "0")];
    let s = Server::start_with(options(&env));
    let admin = s.admin_key.clone();

    let r = mint(&s, &admin).await;
    assert_eq!(r.status(), 200);
    let old = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let before: Vec<Value> = s.get_json("/api/v1/keys", &admin).await;
    let old_kid = before
        .iter()
        .find(|v| v["ring"] == "jwt-default" && v["state"] == "active")
        .map(|v| v["kid"].clone())
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let b = backup(&s, &files);

    // The token key leaks after the backup: regenerate marks v1 compromised.
    let r = s
        .post_json("/api/v1/keys/jwt-default/regenerate", &admin, json!({}))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v2: Value = r.json().await.unwrap();
    let v1 = v2["version"].as_i64().unwrap() - 1;
    assert_eq!(s.get_bearer("/api/v1/keys", &old).await.status(), 401);

    let (s, out) = restore_over(s, &b, options(&env));
    assert!(out.contains("2 key versions"), "{out}");
    expect_problem(
        s.get_bearer("/api/v1/keys", &old).await,
        401,
        "unauthenticated",
    )
    .await;
    let versions: Vec<Value> = s.get_json("/api/v1/keys", &admin).await;
    let state = |n: i64| {
        versions
            .iter()
            .find(|v| v["ring"] == "jwt-default" && v["version"] == n)
            .map(|v| v["state"].clone())
    };
    assert_eq!(state(v1), Some(json!("compromised")));
    assert_eq!(state(v1 + 1), Some(json!("active")));
    let jwks: Value = s.get_json("/.well-known/jwks.json", &admin).await;
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(
        !kids.contains(&&old_kid),
        "the compromised key is not published"
    );
    assert!(kids.contains(&&v2["kid"]), "its replacement is");
    let r = mint(&s, &admin).await;
    assert_eq!(r.status(), 200);
    let new = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.get_bearer("/api/v1/keys", &new).await.status(), 200);
}

#[tokio::test]
async fn an_approval_rejected_after_the_backup_stays_rejected() {
    let s = Server::start_with(options(&[]));
    let alice = s.principal("alice", "super-admin").await;
    let bob = s.principal("bob", "super-admin").await;
    let carol = s.principal("carol", "super-admin").await;
    s.create_ring("pay", "ES256").await;
    let r = s
        .post_json("/api/v1/keys/pay/regenerate", &alice, json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let files = tempfile::tempdir().unwrap();
    let b = backup(&s, &files);

    // Bob rejects the request after the backup.
    let r = s
        .post_json(&format!("/api/v1/approvals/{id}/reject"), &bob, json!({}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "rejected");

    let (s, out) = restore_over(s, &b, options(&[]));
    assert!(out.contains("1 approvals"), "{out}");
    let a: Value = s.get_json(&format!("/api/v1/approvals/{id}"), &carol).await;
    assert_eq!(a["state"], "rejected", "{a}");
    // Two approvals would have regenerated the ring: the request is closed.
    for key in [&bob, &carol] {
        let r = s
            .post_json(&format!("/api/v1/approvals/{id}/approve"), key, json!({}))
            .await;
        expect_problem(r, 409, "conflict").await;
    }
    let versions: Vec<Value> = s.get_json("/api/v1/keys", &carol).await;
    assert!(
        versions
            .iter()
            .filter(|v| v["ring"] == "pay")
            .all(|v| v["state"] != "compromised"),
        "{versions:?}"
    );
}
