//! Several replicas on one store and one SoftHSM token behave as one service
//! (docs/deployment.md, "Replicas and the change feed").
//!
//! Every test starts three `keygate serve` processes (one, for the connection budget) on
//! one shared store (a SQLite file in WAL mode, a fresh PostgreSQL database on the
//! PostgreSQL pass, or `KEYGATE_TEST_CLUSTER_STORE_URL`) and one token directory, and
//! speaks HTTP (and the CLI) only.
//!
//! "Within one second" is checked as a bounded wait of [`PROPAGATION`]: one second plus
//! one poll interval of the change feed (`api_keys.refresh_interval`, 250 ms), polling
//! every 50 ms. A change that has not arrived by then fails the test; nothing asserts how
//! fast anything was.

use crate::common::cluster::{admin_key, eventually, DrivenClock, Shared};
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
    cluster_on(Shared::new(""), env).await
}

/// [`cluster`] on `shared`.
async fn cluster_on(shared: Shared, env: &[(&str, &str)]) -> (Shared, Vec<Server>) {
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

async fn approve(s: &Server, key: &str, id: &str) -> reqwest::Response {
    s.post_json(&format!("/api/v1/approvals/{id}/approve"), key, json!({}))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_voted_on_different_replicas_execute_exactly_once() {
    let (_shared, r) = cluster(&[("KEYGATE__APPROVALS__REGENERATE__REQUIRED", "2")]).await;
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    let req = a.principal("req", "super-admin").await;
    let mut voters = Vec::new();
    for n in ["v1", "v2", "v3"] {
        voters.push(a.principal(n, "super-admin").await);
    }
    a.create_ring("race", "ES256").await;
    let resp = a
        .post_json("/api/v1/keys/race/regenerate", &req, json!({}))
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Every voter's own key is known on every replica before the votes race.
    for (s, key) in [(a, &voters[0]), (b, &voters[1]), (c, &voters[2])] {
        assert!(
            all_answer(
                &[s],
                200,
                &format!("/api/v1/approvals/{id}"),
                Cred::ApiKey(key)
            )
            .await
        );
    }
    let (r1, r2, r3) = tokio::join!(
        approve(a, &voters[0], &id),
        approve(b, &voters[1], &id),
        approve(c, &voters[2], &id)
    );
    let statuses: Vec<u16> = [r1, r2, r3].iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let approval: Value = c.get_json(&format!("/api/v1/approvals/{id}"), &req).await;
    assert_eq!(approval["state"], "executed", "{approval}");
    let expected = vec![
        ("race".to_string(), 1, "compromised".to_string()),
        ("race".to_string(), 2, "active".to_string()),
    ];
    for s in [a, b, c] {
        let race = || async {
            versions(s, &req)
                .await
                .into_iter()
                .filter(|v| v.0 == "race")
                .collect::<Vec<_>>()
        };
        assert!(
            eventually(PROPAGATION, || async { race().await == expected }).await,
            "exactly one new version, on every replica: {:?}",
            race().await
        );
    }
    let log: Vec<Value> = b.get_json("/api/v1/audit?limit=1000", &req).await;
    let executed = log
        .iter()
        .filter(|e| e["action"] == "approval.executed:regenerate")
        .count();
    assert_eq!(executed, 1);
}

fn audit_verify(shared: &Shared) -> (bool, String) {
    let out = shared.cli(&["audit", "verify"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Creates an API key on `base` as `admin`; its id when acknowledged (201).
async fn create_key_at(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    n: usize,
) -> Option<String> {
    let r = http
        .post(format!("{base}/api/v1/api-keys"))
        .header("x-api-key", admin)
        .json(&json!({"name": format!("load {n}"), "role": "read-only"}))
        .send()
        .await
        .ok()?;
    if r.status() != 201 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["id"].as_str().map(str::to_string)
}

const MANY_KEYS: (&str, &str) = ("KEYGATE__API_KEYS__MAX_PER_OWNER", "100000");

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_audited_writes_on_three_replicas_leave_one_chain_that_verifies() {
    let (shared, r) = cluster(&[MANY_KEYS]).await;
    let admin = r[0].admin_key.clone();
    let mut tasks = Vec::new();
    for (i, s) in r.iter().enumerate() {
        for j in 0..15 {
            let (http, base, admin) = (s.http.clone(), s.base.clone(), admin.clone());
            tasks.push(tokio::spawn(async move {
                create_key_at(&http, &base, &admin, i * 100 + j).await
            }));
        }
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap().is_some() {
            created += 1;
        }
    }
    assert_eq!(created, 45, "every audited write succeeded");
    assert_eq!(r[2].key_count().await, 46);
    let (ok, out) = audit_verify(&shared);
    assert!(ok, "one chain, no gap, no fork: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_one_replica_under_load_loses_nothing_acknowledged() {
    let (shared, mut r) = cluster(&[MANY_KEYS]).await;
    let admin = r[0].admin_key.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, String)>::new()));
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (i, s) in r.iter().enumerate() {
        for w in 0..2 {
            let (http, base, admin) = (s.http.clone(), s.base.clone(), admin.clone());
            let (stop, acked, killed) = (stop.clone(), acked.clone(), killed.clone());
            load.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let after_kill = killed.load(std::sync::atomic::Ordering::Relaxed);
                    if let Some(id) =
                        create_key_at(&http, &base, &admin, i * 100_000 + w * 10_000 + n).await
                    {
                        acked
                            .lock()
                            .unwrap()
                            .push((usize::from(after_kill) * 10 + i, id));
                    } else if i == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
    }
    let acked_count = || acked.lock().unwrap().len();
    assert!(eventually(Duration::from_secs(30), || async { acked_count() >= 30 }).await);
    let victim = r.remove(0);
    let _ = victim.kill9();
    killed.store(true, std::sync::atomic::Ordering::Relaxed);
    let at_kill = acked_count();
    // The survivors keep acknowledging writes after the kill.
    assert!(
        eventually(Duration::from_secs(30), || async {
            acked_count() >= at_kill + 30
        })
        .await,
        "B and C keep serving"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().any(|(tag, _)| *tag >= 10),
        "writes were acknowledged after the kill"
    );
    // Every acknowledged key exists, whichever replica acknowledged it.
    let listed: std::collections::HashSet<String> = r[0]
        .get_json::<Vec<Value>>("/api/v1/api-keys", &admin)
        .await
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&(usize, String)> = acked
        .iter()
        .filter(|(_, id)| !listed.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let (ok, out) = audit_verify(&shared);
    assert!(ok, "{out}");
    // The killed replica comes back on the same store and token and serves at once.
    let back = shared.start_one(&[MANY_KEYS]);
    assert_eq!(back.get("/api/v1/api-keys", &admin).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_cannot_read_the_change_feed_turns_unready_and_refuses_until_it_can() {
    let (shared, r) = cluster(&[("KEYGATE__CLUSTER__MAX_STALENESS", "1s")]).await;
    let b = &r[1];
    let (_, key) = b.create_key("read-only").await;
    assert_eq!(b.get("/readyz", "").await.status(), 200);
    if !shared.store_url.starts_with("sqlite:") {
        // Cutting one store off is engine-specific; this cut renames the feed's head on SQLite.
        return;
    }
    // The feed becomes unreadable for every replica (as when the store is unreachable).
    let db = sqlx::SqlitePool::connect(&shared.store_url).await.unwrap();
    sqlx::query("ALTER TABLE change_head RENAME TO change_head_away")
        .execute(&db)
        .await
        .unwrap();
    // Bounded wait: max_staleness (1 s) + one poll + margin.
    let stale = eventually(Duration::from_secs(3), || async {
        b.get("/readyz", "").await.status() == 503
    })
    .await;
    assert!(
        stale,
        "readyz answers 503 once the last apply is older than max_staleness"
    );
    let p = crate::common::expect_problem(b.get("/api/v1/keys", &key).await, 503, "replica-stale")
        .await;
    assert!(
        p["detail"].as_str().unwrap().contains("max_staleness"),
        "{p}"
    );
    assert_eq!(b.get("/healthz", "").await.status(), 200, "still alive");
    sqlx::query("ALTER TABLE change_head_away RENAME TO change_head")
        .execute(&db)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            b.get("/readyz", "").await.status() == 200
        })
        .await,
        "ready again once an apply succeeds"
    );
    assert_eq!(b.get("/api/v1/keys", &key).await.status(), 200);
}

/// Stops (`SIGSTOP`) or resumes (`SIGCONT`) a replica's process.
fn signal(s: &Server, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &s.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Deletes every change row, as the purge job does to rows older than the feed's
/// retention while a replica is cut off for longer than that.
async fn purge_the_whole_feed(store_url: &str) {
    if store_url.starts_with("sqlite:") {
        let db = sqlx::SqlitePool::connect(store_url).await.unwrap();
        sqlx::query("DELETE FROM changes")
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    } else {
        let db = sqlx::PgPool::connect(store_url).await.unwrap();
        sqlx::query("DELETE FROM changes")
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
    }
}

/// Regression (attacker review): a replica that fell behind by more than the feed's
/// retention found no row after its position, called itself current, and kept accepting
/// an API key deleted meanwhile. It must notice the purged gap and reload everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_whose_unread_changes_were_purged_reloads_instead_of_trusting_its_caches() {
    let (shared, r) = cluster(&[]).await;
    let (a, b) = (&r[0], &r[1]);
    let (id, key) = a.create_key("read-only").await;
    assert!(all_answer(&[b], 200, "/api/v1/keys", Cred::ApiKey(&key)).await);
    signal(b, "-STOP");
    let deleted = a
        .delete(&format!("/api/v1/api-keys/{id}"), &a.admin_key)
        .await
        .status();
    purge_the_whole_feed(&shared.store_url).await;
    signal(b, "-CONT");
    assert_eq!(deleted, 204);
    assert!(
        all_answer(&[b], 401, "/api/v1/keys", Cred::ApiKey(&key)).await,
        "the replica reloads its API-key index once it finds its unread changes purged"
    );
    assert_eq!(b.get("/readyz", "").await.status(), 200);
}

/// Password grant for `name` at `base`: the access token, when the login succeeded.
async fn login_at(http: &reqwest::Client, base: &str, name: &str) -> Option<String> {
    let r = http
        .post(format!("{base}/api/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", name),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["access_token"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_four_concurrent_logins_over_three_replicas_leave_exactly_five_sessions() {
    // Every login comes from 127.0.0.1 and counts toward the per-(name, source) lockout
    // before its password is checked: raise it above 24.
    let (_shared, r) = cluster(&[
        ("KEYGATE__USERS__MAX_FAILED_LOGINS", "100"),
        ("KEYGATE__USERS__MAX_FAILED_LOGINS_PER_NAME", "100"),
    ])
    .await;
    create_user(&r[0], "ann", "read-only").await;
    let mut logins = Vec::new();
    for i in 0..24 {
        let s = &r[i % 3];
        let (http, base) = (s.http.clone(), s.base.clone());
        logins.push(tokio::spawn(
            async move { login_at(&http, &base, "ann").await },
        ));
    }
    let mut tokens = Vec::new();
    for l in logins {
        tokens.push(l.await.unwrap().expect("every login succeeds"));
    }
    // The cap (sessions.max_per_user, 5) evicted the 19 oldest sessions; their tokens are
    // refused on every replica, whichever replica opened or evicted them.
    for s in &r {
        let live = || async {
            let mut n = 0;
            for t in &tokens {
                if s.get_bearer("/api/v1/keys", t).await.status() == 200 {
                    n += 1;
                }
            }
            n
        };
        assert!(
            eventually(PROPAGATION, || async { live().await == 5 }).await,
            "exactly five sessions stay live, on every replica: {} of 24 accepted",
            live().await
        );
    }
    // And the user's own listing, on each replica, names five sessions.
    for s in &r {
        let mut listed = None;
        for t in &tokens {
            let resp = s.get_bearer("/api/v1/auth/sessions", t).await;
            if resp.status() == 200 {
                listed = Some(resp.json::<Vec<Value>>().await.unwrap().len());
                break;
            }
        }
        assert_eq!(listed, Some(5));
    }
}

/// `(version, state)` of every version of `ring`, as `replica` lists them.
async fn ring_versions(replica: &Server, key: &str, ring: &str) -> Vec<(i64, String)> {
    versions(replica, key)
        .await
        .into_iter()
        .filter(|v| v.0 == ring)
        .map(|v| (v.1, v.2))
        .collect()
}

/// Scheduled rotation (`rotation.period`) on replicas: libfaketime drives the three
/// replicas' wall clocks past the period together ([`DrivenClock`]). Every replica then
/// finds the ring due; the `key-rotation` lease lets exactly one of them create the next
/// version. On PostgreSQL that lease ends by the database's clock, which the test leaves
/// alone, so the replicas are 91 days ahead of their database, as a replica with a wrong
/// clock would be; on SQLite it ends by the replicas' (driven) clock.
#[tokio::test(flavor = "multi_thread")]
async fn scheduled_rotation_with_the_clock_driven_past_the_period_produces_exactly_one_new_version()
{
    let shared = Shared::new(
        "[rotation]\nperiod = \"90d\"\npublish_delay = \"2s\"\n[jwks]\nmax_age = \"1s\"\n",
    );
    let clock = DrivenClock::new(shared.path());
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (_shared, r) = cluster_on(shared, &env).await;
    let admin = r[0].admin_key.clone();
    for s in &r {
        assert_eq!(
            ring_versions(s, &admin, "jwt-default").await,
            [(1, "active".to_string())],
            "not due yet"
        );
    }

    clock.set("+91d");
    // A guard against a hang, not a timing: the replicas re-read the clock within a second,
    // check rotation every second, publish for two, and then the feed propagates.
    let rotated = [(1, "retiring".to_string()), (2, "active".to_string())];
    for s in &r {
        assert!(
            eventually(Duration::from_secs(30), || async {
                ring_versions(s, &admin, "jwt-default").await == rotated
            })
            .await,
            "one new version, published and then signing, on every replica: {:?}",
            ring_versions(s, &admin, "jwt-default").await
        );
    }
    let log: Vec<Value> = r[1].get_json("/api/v1/audit?limit=1000", &admin).await;
    let by_scheduler = |action: &str| {
        log.iter()
            .filter(|e| e["action"] == action && e["auth_method"] == "scheduler")
            .count()
    };
    assert_eq!(by_scheduler("key.rotate"), 1, "one replica rotated");
    assert_eq!(by_scheduler("key.activate"), 1, "activated once");
}

/// The store's write lock, held from outside keygate (as another replica's long write
/// transaction would hold it) until dropped.
#[allow(dead_code)] // held for its lock, never read
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

async fn hold_write_lock(store_url: &str) -> WriteLock {
    use sqlx::Connection;
    if store_url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(store_url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .await
            .unwrap();
        WriteLock::Sqlite(c)
    } else {
        let mut c = sqlx::PgConnection::connect(store_url).await.unwrap();
        // The key every keygate write transaction locks (src/store/postgres.rs).
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(keygate::store::postgres::LOCK_CLASS)
            .bind(keygate::store::postgres::WRITE_LOCK)
            .execute(&mut c)
            .await
            .unwrap();
        WriteLock::Postgres(c)
    }
}

/// `/readyz` as a load balancer's health check sees it: its status, or 0 when it did not
/// answer within the check's timeout (2 s).
async fn health_check(s: &Server) -> u16 {
    match tokio::time::timeout(Duration::from_secs(2), s.get("/readyz", "")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// The change-feed applier and `/readyz` have their own store connection: writers that
/// take every connection of the pool (here two, queued on the write lock) do not hold
/// the feed back, so the replica does not turn stale and its health check does not flap.
#[tokio::test(flavor = "multi_thread")]
async fn writers_that_exhaust_the_pool_do_not_turn_a_replica_stale() {
    let shared = Shared::new("");
    let r = shared.start(
        1,
        &[
            ("KEYGATE__STORE__MAX_CONNECTIONS", "2"),
            ("KEYGATE__CLUSTER__MAX_STALENESS", "1s"),
        ],
    );
    let a = &r[0];
    let admin = admin_key(&r);
    assert_eq!(health_check(a).await, 200);
    let lock = hold_write_lock(&shared.store_url).await;
    // Two writers hold the pool's two connections waiting for the lock; four more wait
    // for those connections.
    let writers: Vec<_> = (0..6)
        .map(|n| {
            let (http, base, admin) = (a.http.clone(), a.base.clone(), admin.clone());
            tokio::spawn(async move { create_key_at(&http, &base, &admin, n).await })
        })
        .collect();
    // Watch for over twice cluster.max_staleness while the pool stays exhausted (the
    // writers give up only after 5 s).
    let mut seen = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen.push(health_check(a).await);
    }
    let waiting = writers.iter().filter(|w| !w.is_finished()).count();
    drop(lock);
    assert_eq!(
        waiting, 6,
        "the writers were still queued: the pool was exhausted"
    );
    assert!(seen.iter().all(|s| *s == 200), "health checks: {seen:?}");
    for w in writers {
        let _ = w.await.unwrap();
    }
    assert!(
        create_key_at(&a.http, &a.base, &admin, 100).await.is_some(),
        "writes go through once the lock is released"
    );
}
