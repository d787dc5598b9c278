//! Several replicas on one store and one SoftHSM token behave as one service
//! (docs/deployment.md, "Replicas and the change feed").
//!
//! Every test starts three `keygate serve` processes on one shared store (a SQLite file in
//! WAL mode, or `KEYGATE_TEST_CLUSTER_STORE_URL`) and one token directory, and speaks
//! HTTP (and the CLI) only.
//!
//! "Within one second" is checked as a bounded wait of [`PROPAGATION`]: one second plus
//! one poll interval of the change feed (`api_keys.refresh_interval`, 250 ms), polling
//! every 50 ms. A change that has not arrived by then fails the test; nothing asserts how
//! fast anything was.

use crate::common::cluster::{admin_key, eventually, Shared};
use crate::common::server::{keygate_bin, Server, PASSWORD};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use keygate::hardware::{Algorithm, PublicKey};
use keygate::services::tokens::jws;
use serde_json::{json, Value};
use std::time::Duration;

/// One second plus one poll interval of the change feed.
const PROPAGATION: Duration = Duration::from_millis(1250);

/// `(ring, version, state)` of every key version, as `replica` lists them.
async fn versions(replica: &Server, key: &str) -> Vec<(String, i64, String)> {
    let r = replica.get("/api/v1/keys", key).await;
    assert_eq!(r.status(), 200);
    let mut v: Vec<(String, i64, String)> = r
        .json::<Vec<Value>>()
        .await
        .unwrap()
        .into_iter()
        .map(|k| {
            (
                k["ring"].as_str().unwrap().to_string(),
                k["version"].as_i64().unwrap(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_started_at_once_on_an_empty_store_create_one_set_of_default_rings() {
    let shared = Shared::new("");
    let replicas = shared.start(3, &[]);
    let admin = admin_key(&replicas);
    let expected = vec![
        ("api-key-mac".to_string(), 1, "active".to_string()),
        ("audit".to_string(), 1, "active".to_string()),
        ("jwt-default".to_string(), 1, "active".to_string()),
    ];
    for r in &replicas {
        // The replica that issued the key may have done so after the others loaded their
        // index: the key reaches them through the change feed.
        assert!(
            eventually(PROPAGATION, || async {
                r.get("/api/v1/keys", &admin).await.status() == 200
            })
            .await,
            "the bootstrap key works on every replica"
        );
        assert_eq!(
            versions(r, &admin).await,
            expected,
            "one version of each ring"
        );
    }
    // The keys the losing replicas generated were destroyed again: the token holds exactly
    // the keys the store names.
    let out = shared.cli(&["keys", "reconcile"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reconcile: {text}");
    assert!(
        !text.contains("which no key version in the store names"),
        "{text}"
    );
}

/// Three replicas of a fresh cluster with `env`, each holding the bootstrap key once it
/// authenticates everywhere.
async fn cluster(env: &[(&str, &str)]) -> (Shared, Vec<Server>) {
    let shared = Shared::new("");
    let mut replicas = shared.start(3, env);
    let admin = admin_key(&replicas);
    for r in &mut replicas {
        r.admin_key = admin.clone();
    }
    for r in &replicas {
        assert!(
            eventually(PROPAGATION, || async {
                r.get("/api/v1/keys", &admin).await.status() == 200
            })
            .await,
            "the bootstrap key reaches every replica"
        );
    }
    (shared, replicas)
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Cred<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
}

async fn status_of(s: &Server, path: &str, cred: Cred<'_>) -> u16 {
    match cred {
        Cred::ApiKey(k) => s.get(path, k).await,
        Cred::Bearer(t) => s.get_bearer(path, t).await,
    }
    .status()
    .as_u16()
}

/// Whether every replica in `others` answers `status` to `GET path` within [`PROPAGATION`].
async fn all_answer(others: &[&Server], status: u16, path: &str, cred: Cred<'_>) -> bool {
    for s in others {
        if !eventually(PROPAGATION, || async {
            status_of(s, path, cred).await == status
        })
        .await
        {
            return false;
        }
    }
    true
}

async fn create_user(s: &Server, name: &str, role: &str) {
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": name, "password": PASSWORD, "role": role}),
        )
        .await;
    assert_eq!(r.status(), 201, "create user {name}");
}

/// Password grant on `s`: (access token, refresh token).
async fn login(s: &Server, name: &str) -> (String, String) {
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[
                ("grant_type", "password"),
                ("username", name),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 200, "login {name}");
    let v: Value = r.json().await.unwrap();
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn revoke(s: &Server, token: &str) {
    let r = s
        .post_form("/api/v1/auth/revoke", None, &[("token", token)])
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_or_a_session_ended_on_one_replica_is_refused_by_the_others() {
    let (_shared, r) = cluster(&[]).await;
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    create_user(a, "ann", "read-only").await;

    // An access token revoked on A.
    let (access, _) = login(a, "ann").await;
    for s in [b, c] {
        assert_eq!(s.get_bearer("/api/v1/keys", &access).await.status(), 200);
    }
    revoke(a, &access).await;
    assert!(
        all_answer(&[b, c], 401, "/api/v1/keys", Cred::Bearer(&access)).await,
        "a revoked access token is refused on every replica within a second"
    );

    // A session ended on A by revoking its refresh token: its access tokens die too.
    let (access, refresh) = login(a, "ann").await;
    assert_eq!(b.get_bearer("/api/v1/keys", &access).await.status(), 200);
    revoke(a, &refresh).await;
    assert!(
        all_answer(&[b, c], 401, "/api/v1/keys", Cred::Bearer(&access)).await,
        "the ended session's access token is refused on every replica within a second"
    );

    // A session logged out on B (its own DELETE of itself), opened on C.
    let (access, _) = login(c, "ann").await;
    let resp = b.get_bearer("/api/v1/auth/sessions", &access).await;
    assert_eq!(resp.status(), 200);
    let sessions: Vec<Value> = resp.json().await.unwrap();
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{sessions:?}");
    let id = current[0]["id"].as_str().unwrap();
    let resp = b
        .http
        .delete(b.url(&format!("/api/v1/auth/sessions/{id}")))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(
        all_answer(&[a, c], 401, "/api/v1/keys", Cred::Bearer(&access)).await,
        "a session ended on B is refused on A and C within a second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_deleted_on_one_replica_stops_working_on_the_others() {
    let (_shared, r) = cluster(&[]).await;
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    let (id, key) = a.create_key("read-only").await;
    assert!(
        all_answer(&[b, c], 200, "/api/v1/keys", Cred::ApiKey(&key)).await,
        "a new key reaches every replica"
    );
    assert_eq!(
        a.delete(&format!("/api/v1/api-keys/{id}"), &a.admin_key)
            .await
            .status(),
        204
    );
    assert!(
        all_answer(&[b, c], 401, "/api/v1/keys", Cred::ApiKey(&key)).await,
        "a deleted key is refused on every replica within a second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_changed_on_one_replica_applies_on_the_others() {
    let (_shared, r) = cluster(&[]).await;
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    let resp = a
        .post_json(
            "/api/v1/roles",
            &a.admin_key,
            json!({"name": "auditor", "permissions": ["keys:read"]}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let resp = a
        .post_json(
            "/api/v1/api-keys",
            &a.admin_key,
            json!({"name": "k", "role": "auditor"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let key = resp.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(all_answer(&[b, c], 200, "/api/v1/keys", Cred::ApiKey(&key)).await);
    let resp = a
        .patch_json(
            "/api/v1/roles/auditor",
            &a.admin_key,
            json!({"permissions": ["users:read"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        all_answer(&[b, c], 403, "/api/v1/keys", Cred::ApiKey(&key)).await,
        "the narrowed role applies on every replica within a second"
    );
    assert!(all_answer(&[b, c], 200, "/api/v1/users", Cred::ApiKey(&key)).await);
}

/// A P-256 key of a test IdP: its public key as PEM, and ES256 tokens.
struct Idp {
    pair: EcdsaKeyPair,
}

impl Idp {
    const ISSUER: &'static str = "https://idp.cluster.test";

    fn new() -> Idp {
        Idp {
            pair: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn pem(&self) -> String {
        let public =
            PublicKey::ec(Algorithm::ES256, self.pair.public_key().as_ref().to_vec()).unwrap();
        let der = public.spki_der().unwrap();
        pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::LineEnding::LF, &der).unwrap()
    }

    fn token(&self, sub: &str, roles: Value) -> String {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({"iss": Idp::ISSUER, "sub": sub, "aud": "keygate-api", "iat": t,
                            "exp": t + 300, "roles": roles});
        let input = jws::signing_input(&json!({"alg": "ES256", "typ": "JWT"}), &claims).unwrap();
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        jws::finish(input, sig.as_ref())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idp_deleted_on_one_replica_is_refused_by_the_others() {
    let (_shared, r) = cluster(&[]).await;
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    let idp = Idp::new();
    let resp = a
        .post_json(
            "/api/v1/oauth-servers",
            &a.admin_key,
            json!({"name": "corp", "issuer": Idp::ISSUER, "public_key_pem": idp.pem(),
                   "audience": "keygate-api", "role_mapping": {"readers": "read-only"}}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let oauth_id = resp.json::<Value>().await.unwrap()["oauth_id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = idp.token("svc-1", json!(["readers"]));
    assert!(
        all_answer(&[b, c], 200, "/api/v1/keys", Cred::Bearer(&token)).await,
        "a registered IdP reaches every replica"
    );
    let resp = a
        .delete(&format!("/api/v1/oauth-servers/{oauth_id}"), &a.admin_key)
        .await;
    assert_eq!(resp.status(), 204);
    assert!(
        all_answer(&[b, c], 401, "/api/v1/keys", Cred::Bearer(&token)).await,
        "tokens of a deleted IdP are refused on every replica within a second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_token_spent_on_one_replica_and_replayed_on_another_ends_the_session() {
    let (_shared, r) = cluster(&[]).await;
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    create_user(a, "ann", "read-only").await;
    let (_, first) = login(a, "ann").await;
    let resp = a
        .post_form(
            "/api/v1/auth/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", &first)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let (access, second) = (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_eq!(c.get_bearer("/api/v1/keys", &access).await.status(), 200);

    // The spent token replayed on B: refused, and the whole session ends.
    let resp = b
        .post_form(
            "/api/v1/auth/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", &first)],
        )
        .await;
    assert_eq!(resp.status(), 400);
    let resp = c
        .post_form(
            "/api/v1/auth/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", &second)],
        )
        .await;
    assert_eq!(
        resp.status(),
        400,
        "the rotated refresh token died with its session"
    );
    assert!(
        all_answer(&[a, b, c], 401, "/api/v1/keys", Cred::Bearer(&access)).await,
        "the session's access token is refused on every replica within a second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_assertion_used_on_one_replica_is_refused_on_another() {
    let (shared, r) = cluster(&[]).await;
    let (a, b) = (&r[0], &r[1]);
    let resp = a
        .post_json(
            "/api/v1/key-files",
            &a.admin_key,
            json!({"description": "export", "role": "read-only"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let file: Value = resp.json().await.unwrap();
    let path = shared.path().join("file.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let assertion = || {
        let out = std::process::Command::new(keygate_bin())
            .args(["client", "assertion", "--key-file"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let used = assertion();
    assert_eq!(a.get_bearer("/api/v1/key-files", &used).await.status(), 200);
    for s in &r {
        assert_eq!(
            s.get_bearer("/api/v1/key-files", &used).await.status(),
            401,
            "a spent assertion id is refused on every replica"
        );
    }
    // A fresh assertion of the same file still works on B: the file is live there.
    let fresh = assertion();
    assert!(all_answer(&[b], 200, "/api/v1/key-files", Cred::Bearer(&fresh)).await);
}
