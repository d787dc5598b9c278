//! Key lifecycle: M-of-N approvals, regeneration, destruction, scheduled rotation and
//! the tamper-evident audit log. Servers are the real binary on a fresh SoftHSM token;
//! scheduled rotation runs in-process with a driven clock.

use crate::common::expect_problem;
use crate::common::server::{keygate_bin, Options, Server};
use crate::common::tokens::{fixture, T0};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

async fn versions(s: &Server, ring: &str) -> Vec<Value> {
    let all: Vec<Value> = s.get_json("/api/v1/keys", &s.admin_key).await;
    all.into_iter().filter(|v| v["ring"] == ring).collect()
}

async fn state_of(s: &Server, ring: &str, version: i64) -> String {
    versions(s, ring)
        .await
        .iter()
        .find(|v| v["version"] == version)
        .map(|v| v["state"].as_str().unwrap().to_string())
        .unwrap()
}

async fn approve(s: &Server, key: &str, id: &str) -> reqwest::Response {
    s.post_json(&format!("/api/v1/approvals/{id}/approve"), key, json!({}))
        .await
}

fn keygate(dir: &Path, args: &[&str]) -> Output {
    Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "error")
        .output()
        .expect("run keygate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Regenerates `ring` through two approvals; returns the compromised version.
async fn regenerate_with_approvals(s: &Server, ring: &str, keys: &[&str; 3]) -> i64 {
    let old = versions(s, ring).await[0]["version"].as_i64().unwrap();
    let r = s
        .post_json(
            &format!("/api/v1/keys/{ring}/regenerate"),
            keys[0],
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(approve(s, keys[1], &id).await.status(), 200);
    let a: Value = approve(s, keys[2], &id).await.json().await.unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    old
}

#[tokio::test]
async fn destroy_needs_two_approvals_from_others_and_runs_once_they_arrive() {
    let s = Server::start();
    let alice = s.principal("alice", "super-admin").await;
    let bob = s.principal("bob", "super-admin").await;
    let carol = s.principal("carol", "super-admin").await;
    s.create_ring("pay", "ES256").await;
    let v1 = regenerate_with_approvals(&s, "pay", &[&alice, &bob, &carol]).await;
    assert_eq!(state_of(&s, "pay", v1).await, "compromised");

    let r = s
        .post_json(
            &format!("/api/v1/keys/pay/versions/{v1}/destroy"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (
            a["operation"].as_str(),
            a["state"].as_str(),
            a["required"].as_i64()
        ),
        (Some("destroy"), Some("pending"), Some(2))
    );
    assert_eq!(a["approvals"], json!([]));
    let id = a["approval_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    expect_problem(approve(&s, &alice, &id).await, 403, "forbidden").await;
    let a: Value = approve(&s, &bob, &id).await.json().await.unwrap();
    assert_eq!(a["state"], "pending", "one approval is not enough");
    assert_eq!(state_of(&s, "pay", v1).await, "compromised");
    expect_problem(approve(&s, &bob, &id).await, 409, "conflict").await;

    let r = approve(&s, &carol, &id).await;
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "executed", "{a}");
    let approvers: Vec<&str> = a["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["principal"].as_str().unwrap())
        .collect();
    assert_eq!(approvers, ["bob", "carol"]);
    assert_eq!(state_of(&s, "pay", v1).await, "destroyed");
    expect_problem(approve(&s, &carol, &id).await, 409, "conflict").await;

    let listed: Vec<Value> = s.get_json("/api/v1/approvals", &bob).await;
    assert!(listed.iter().any(|x| x["approval_id"] == id.as_str()));
    let one: Value = s.get_json(&format!("/api/v1/approvals/{id}"), &bob).await;
    assert_eq!(one["state"], "executed");

    // The log holds every step, in order, and verifies.
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &s.admin_key).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    let pos = |a: &str| actions.iter().rposition(|x| *x == a).unwrap();
    assert!(pos("approval.request:destroy") < pos("approval.approve:destroy"));
    assert!(pos("approval.approve:destroy") < pos("key.destroy"));
    assert!(pos("key.destroy") < pos("approval.executed:destroy"));
    let dir = s.stop();
    let out = keygate(dir.path(), &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("audit log OK"));
}

#[tokio::test]
async fn refused_approvals_change_nothing() {
    let s = Server::start_with(Options {
        env: vec![("KEYGATE__APPROVALS__DESTROY__TTL".into(), "1s".into())],
        ..Default::default()
    });
    let alice = s.principal("alice", "super-admin").await;
    let bob = s.principal("bob", "super-admin").await;
    let carol = s.principal("carol", "super-admin").await;
    let (_, admin) = s.create_key("admin").await;
    s.create_ring("web", "ES256").await;

    // Destroying the active version: refused before any request is recorded.
    let r = s
        .post_json("/api/v1/keys/web/versions/1/destroy", &alice, json!({}))
        .await;
    let p = expect_problem(r, 409, "conflict").await;
    assert!(p["detail"].as_str().unwrap().contains("active"), "{p}");
    let r = s
        .post_json("/api/v1/keys/web/versions/9/destroy", &alice, json!({}))
        .await;
    expect_problem(r, 404, "not-found").await;
    let r = s
        .post_json("/api/v1/keys/web/versions/1/destroy", &admin, json!({}))
        .await;
    expect_problem(r, 403, "forbidden").await;
    // Only carol's enrolment (a change of who approves) was ever requested.
    let all: Vec<Value> = s.get_json("/api/v1/approvals", &alice).await;
    assert!(
        all.iter().all(|a| a["operation"] == "change-approvers"),
        "{all:?}"
    );
    assert_eq!(state_of(&s, "web", 1).await, "active");

    let unknown = uuid::Uuid::new_v4().to_string();
    expect_problem(approve(&s, &bob, &unknown).await, 404, "not-found").await;

    // A request that expires: approving it afterwards is a conflict and runs nothing.
    let v1 = regenerate_with_approvals(&s, "web", &[&alice, &bob, &carol]).await;
    let r = s
        .post_json(
            &format!("/api/v1/keys/web/versions/{v1}/destroy"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    // An admin is not an approver under the default `role:super-admin`.
    expect_problem(approve(&s, &admin, &id).await, 403, "forbidden").await;
    // The TTL is one second; after two, the request is past it whatever the clock says.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let p = expect_problem(approve(&s, &bob, &id).await, 409, "conflict").await;
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    let a: Value = s.get_json(&format!("/api/v1/approvals/{id}"), &bob).await;
    assert_eq!(a["state"], "expired");
    assert_eq!(a["approvals"], json!([]));
    assert_eq!(state_of(&s, "web", v1).await, "compromised");
}

#[tokio::test]
async fn concurrent_approvals_run_the_operation_exactly_once() {
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
            "2".into(),
        )],
        ..Default::default()
    });
    let req = s.principal("req", "super-admin").await;
    let mut approvers = Vec::new();
    for n in ["a1", "a2", "a3", "a4"] {
        approvers.push(s.principal(n, "super-admin").await);
    }
    s.create_ring("race", "ES256").await;
    let r = s
        .post_json("/api/v1/keys/race/regenerate", &req, json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (r1, r2, r3, r4) = tokio::join!(
        approve(&s, &approvers[0], &id),
        approve(&s, &approvers[1], &id),
        approve(&s, &approvers[2], &id),
        approve(&s, &approvers[3], &id)
    );
    let results = [r1, r2, r3, r4];
    let statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let a: Value = s.get_json(&format!("/api/v1/approvals/{id}"), &req).await;
    assert_eq!(a["state"], "executed", "{a}");
    let vs = versions(&s, "race").await;
    assert_eq!(vs.len(), 2, "exactly one new version: {vs:?}");
    let states: Vec<&str> = vs.iter().map(|v| v["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["compromised", "active"]);
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &req).await;
    let executed = log
        .iter()
        .filter(|e| e["action"] == "approval.executed:regenerate")
        .count();
    assert_eq!(executed, 1);
}

#[tokio::test]
async fn regenerating_a_jwt_ring_refuses_every_token_its_old_version_signed() {
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
            "0".into(),
        )],
        ..Default::default()
    });
    let mint = || async {
        let r = s
            .post_form(
                "/api/v1/auth/token",
                Some(("x-api-key", &s.admin_key)),
                &[
                    ("grant_type", "custom_token"),
                    ("subject", "svc"),
                    ("expires_in", "600"),
                    ("role", "read-only"),
                ],
            )
            .await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old = mint().await;
    assert_eq!(s.get_bearer("/api/v1/keys", &old).await.status(), 200);
    let old_kid = versions(&s, "jwt-default").await[0]["kid"].clone();

    let r = s
        .post_json(
            "/api/v1/keys/jwt-default/regenerate",
            &s.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["version"].as_i64(), v["state"].as_str()),
        (Some(2), Some("active"))
    );

    expect_problem(
        s.get_bearer("/api/v1/keys", &old).await,
        401,
        "unauthenticated",
    )
    .await;
    let jwks: Value = s.get_json("/.well-known/jwks.json", &s.admin_key).await;
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(
        !kids.contains(&&old_kid),
        "the compromised key left the JWKS"
    );
    assert!(kids.contains(&&v["kid"]));
    let new = mint().await;
    assert_eq!(s.get_bearer("/api/v1/keys", &new).await.status(), 200);
}

#[tokio::test]
async fn api_key_mac_regeneration_needs_force_and_an_approval() {
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__REGENERATE__REQUIRED".into(),
            "0".into(),
        )],
        ..Default::default()
    });
    let r = s
        .post_json(
            "/api/v1/keys/api-key-mac/regenerate",
            &s.admin_key,
            json!({}),
        )
        .await;
    let p = expect_problem(r, 400, "invalid-request").await;
    assert!(
        p["detail"].as_str().unwrap().contains("every API key"),
        "{p}"
    );
    let r = s
        .post_json(
            "/api/v1/keys/api-key-mac/regenerate",
            &s.admin_key,
            json!({"force": true}),
        )
        .await;
    assert_eq!(
        r.status(),
        202,
        "at least one approval even when 0 is configured"
    );
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["required"], 1);
    // Nothing changed: the admin key still works.
    assert_eq!(s.get("/api/v1/keys", &s.admin_key).await.status(), 200);
    let r = s
        .post_json("/api/v1/keys/audit/regenerate", &s.admin_key, json!({}))
        .await;
    expect_problem(r, 400, "invalid-request").await;
}

#[tokio::test]
async fn rotate_now_waits_for_one_approval_by_default() {
    let s = Server::start();
    let bob = s.principal("bob", "super-admin").await;
    let r = s
        .post_json(
            "/api/v1/keys/jwt-default/rotate",
            &s.admin_key,
            json!({"immediate": true}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (a["operation"].as_str(), a["required"].as_i64()),
        (Some("rotate-now"), Some(1))
    );
    let done: Value = approve(&s, &bob, a["approval_id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["state"], "executed", "{done}");
    let states: Vec<String> = versions(&s, "jwt-default")
        .await
        .iter()
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["retiring", "active"]);
}

#[tokio::test]
async fn the_audit_log_is_for_admins_and_read_only_and_its_keys_are_not_in_the_jwks() {
    let s = Server::start();
    let (_, ro) = s.create_key("read-only").await;
    let (_, gw) = s.create_key("gateway").await;
    let log: Vec<Value> = s.get_json("/api/v1/audit?after=0&limit=5", &ro).await;
    assert!(!log.is_empty() && log.len() <= 5);
    for w in log.windows(2) {
        assert_eq!(
            w[1]["seq"].as_i64().unwrap(),
            w[0]["seq"].as_i64().unwrap() + 1
        );
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
    // Written in the transaction that created the key, naming who did it.
    let create = log
        .iter()
        .rev()
        .find(|e| e["action"] == "api-key.create")
        .expect("key creation is logged");
    assert_eq!(create["outcome"], "ok");
    assert_eq!(create["actor"], "root");
    assert!(create["request_id"].is_string());
    expect_problem(s.get("/api/v1/audit", &gw).await, 403, "forbidden").await;
    expect_problem(
        s.get("/api/v1/audit?limit=0", &ro).await,
        400,
        "invalid-request",
    )
    .await;
    // A refused request is an entry too.
    let r = s
        .get(
            "/api/v1/keys",
            "kg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .await;
    assert_eq!(r.status(), 401);
    // Refusals are aggregated per minute: the entry appears once its minute is over
    // (see audit_aggregation tests), not per request.

    let audit_keys: Value = s
        .http
        .get(s.url("/api/v1/audit/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = audit_keys["keys"][0]["kid"].clone();
    assert_eq!(audit_keys["keys"][0]["crv"], "P-256");
    let jwks: Value = s.get_json("/.well-known/jwks.json", &ro).await;
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["kid"] != kid));
}

/// Runs `keygate audit verify` on a fresh copy of the data directory (same SoftHSM
/// token) whose store has `tamper` applied.
async fn verify_after(dir: &Path, tamper: &str) -> (bool, String) {
    let case = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(case.path().join("softhsm")).unwrap();
    for f in ["pin", "so-pin", "softhsm/softhsm2.conf"] {
        std::fs::copy(dir.join(f), case.path().join(f)).unwrap();
    }
    let db = case.path().join("keygate.db");
    std::fs::copy(dir.join("keygate.db.orig"), &db).unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    for stmt in tamper.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(stmt).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let out = keygate(case.path(), &["audit", "verify"]);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[tokio::test]
async fn audit_verify_names_the_first_edited_deleted_or_reordered_entry() {
    let s = Server::start_with(Options {
        env: vec![("KEYGATE__AUDIT__CHECKPOINT_EVERY".into(), "4".into())],
        ..Default::default()
    });
    for _ in 0..6 {
        s.create_key("read-only").await;
    }
    let dir = s.stop();
    let db = dir.path().join("keygate.db");
    // A consistent single-file copy to restore before each case.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    let cps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The first checkpoint past entry 3, which a truncation to 3 entries cannot hide.
    let covering: i64 =
        sqlx::query_scalar("SELECT COALESCE(MIN(seq), 0) FROM audit_checkpoints WHERE seq >= 4")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert!(
        n >= 6 && cps >= 1 && covering >= 4,
        "{n} entries, {cps} checkpoints"
    );
    std::fs::copy(&db, dir.path().join("keygate.db.orig")).unwrap();

    let (ok, out) = verify_after(dir.path(), "").await;
    assert!(ok, "{out}");

    let (ok, out) = verify_after(
        dir.path(),
        "UPDATE audit_log SET outcome = '200' WHERE seq = 3",
    )
    .await;
    assert!(!ok);
    assert!(out.contains("BROKEN at seq 3:"), "{out}");

    let (ok, out) = verify_after(dir.path(), "DELETE FROM audit_log WHERE seq = 4").await;
    assert!(!ok);
    assert!(out.contains("BROKEN at seq 4:"), "{out}");

    // Swap entries 2 and 3 (seq numbers exchanged, hashes kept).
    let (ok, out) = verify_after(
        dir.path(),
        "UPDATE audit_log SET seq = -1 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = -1",
    )
    .await;
    assert!(!ok);
    assert!(out.contains("BROKEN at seq 2:"), "{out}");

    // An entry whose stored hash was replaced.
    let (ok, out) = verify_after(
        dir.path(),
        "UPDATE audit_log SET hash = zeroblob(32) WHERE seq = 5",
    )
    .await;
    assert!(!ok);
    assert!(out.contains("BROKEN at seq 5:"), "{out}");

    // Deleting the newest entries is caught by the head and the signed checkpoint.
    let (ok, out) = verify_after(
        dir.path(),
        "DELETE FROM audit_log WHERE seq >= 4; UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3)",
    )
    .await;
    assert!(!ok);
    assert!(out.contains(&format!("BROKEN at seq {covering}:")), "{out}");

    // A forged checkpoint signature.
    let (ok, out) = verify_after(
        dir.path(),
        "UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE seq = (SELECT MIN(seq) FROM audit_checkpoints)",
    )
    .await;
    assert!(!ok);
    assert!(out.contains("signature does not verify"), "{out}");
}

#[tokio::test]
async fn an_approval_edited_in_the_database_fails_verification_and_does_not_run() {
    let s = Server::start();
    let alice = s.principal("alice", "super-admin").await;
    let bob = s.principal("bob", "super-admin").await;
    s.create_ring("edit", "ES256").await;
    let r = s
        .post_json("/api/v1/keys/edit/regenerate", &alice, json!({}))
        .await;
    let id = r.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = s.stop();
    let db = dir.path().join("keygate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE approvals SET required = 1 WHERE id = $1")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let out = keygate(dir.path(), &["audit", "verify"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("request's signature does not verify"),
        "{}",
        text(&out.stdout)
    );

    let s = Server::start_in(dir, Options::default());
    let a: Value = approve(&s, &bob, &id).await.json().await.unwrap();
    assert_eq!(a["state"], "failed", "{a}");
    let all: Vec<Value> = s.get_json("/api/v1/keys", &alice).await;
    let edit: Vec<&Value> = all.iter().filter(|v| v["ring"] == "edit").collect();
    assert_eq!(edit.len(), 1, "nothing ran: {edit:?}");
    assert_eq!(edit[0]["state"], "active");
}

#[tokio::test]
async fn destroy_removes_the_key_from_the_hardware() {
    use keygate::store::audit::AuditActor;
    let f = fixture().await;
    let actor = AuditActor::scheduler();
    let v1 = f.keys.active(&f.ring).unwrap();
    let e = f
        .keys
        .destroy_version(&f.ring, 1, &actor, T0)
        .await
        .unwrap_err();
    assert!(matches!(e, keygate::keys::KeysError::Conflict(_)), "{e:?}");
    f.keys.regenerate(&f.ring, &actor, T0).await.unwrap();
    assert_eq!(
        f.keys.version(&f.ring, 1).unwrap().state,
        keygate::keys::KeyState::Compromised
    );
    assert!(f.keys.verifying_key(&v1.kid).is_none());
    f.keys
        .destroy_version(&f.ring, 1, &actor, T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        f.keys.version(&f.ring, 1).unwrap().state,
        keygate::keys::KeyState::Destroyed
    );
    let backend = crate::common::hsm::backend();
    let gone = keygate::hardware::Backend::public_key(&*backend, &v1.locator);
    assert!(
        matches!(gone, Err(keygate::hardware::HardwareError::KeyNotFound(_))),
        "{gone:?}"
    );
    let (seq, _) = f.store.audit_head().await.unwrap();
    let log = f.store.audit_entries(0, 100).await.unwrap();
    assert_eq!(log.len() as i64, seq);
    // The fixture's rings were created first, each with its own entry.
    assert_eq!(
        log.iter()
            .map(|e| e.action.as_str())
            .filter(|a| *a != "ring.create")
            .collect::<Vec<_>>(),
        ["key.regenerate", "key.destroy"]
    );
}

#[tokio::test]
async fn scheduled_rotation_runs_the_full_cycle_once_across_replicas() {
    use keygate::keys::rotation::{RotationTimes, Transition};
    const DAY: i64 = 86_400;
    let f = fixture().await;
    let times = RotationTimes {
        publish_delay: 600,
        retire_after: DAY + 60,
    };
    let ring = f.ring.clone();
    let period = |r: &str| (r == ring).then_some(90 * DAY);
    let kids = |f: &crate::common::tokens::Fixture| -> Vec<String> {
        f.keys.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .filter(|kid| f.keys.verifying_key(kid).is_some_and(|v| v.ring == f.ring))
            .collect()
    };
    let v1 = f.keys.active(&f.ring).unwrap().kid.clone();
    assert_eq!(kids(&f), vec![v1.clone()]);

    // Not due yet.
    let t = T0 + 90 * DAY - 1;
    assert!(f
        .keys
        .run_schedule(period, "replica-a", 30, t)
        .await
        .unwrap()
        .is_empty());

    // Due: replica A takes the lease and creates v2 (pending, published); B finds the
    // lease held and does nothing.
    let t = T0 + 90 * DAY;
    let done = f
        .keys
        .run_schedule(period, "replica-a", 30, t)
        .await
        .unwrap();
    assert_eq!(
        done,
        [Transition::Created {
            ring: f.ring.clone(),
            version: 2
        }]
    );
    assert!(f
        .keys
        .run_schedule(period, "replica-b", 30, t)
        .await
        .unwrap()
        .is_empty());
    assert!(f
        .store
        .take_lease("key-rotation", "replica-b", t + 1, 30)
        .await
        .is_ok_and(|won| !won));
    let v2 = f.keys.version(&f.ring, 2).unwrap().kid.clone();
    assert_eq!(
        kids(&f),
        [v1.clone(), v2.clone()],
        "pending is published before it signs"
    );
    assert_eq!(f.keys.active(&f.ring).unwrap().version, 1);
    // Running again while v2 is pending creates nothing more.
    assert!(f
        .keys
        .run_schedule(period, "replica-a", 30, t + 5)
        .await
        .unwrap()
        .is_empty());

    // After the publish delay v2 signs and v1 is retiring, still published.
    f.keys.advance(times, t + 599).await.unwrap();
    assert_eq!(f.keys.active(&f.ring).unwrap().version, 1);
    let done = f.keys.advance(times, t + 600).await.unwrap();
    assert_eq!(
        done,
        [Transition::Activated {
            ring: f.ring.clone(),
            version: 2
        }]
    );
    assert_eq!(
        f.keys.version(&f.ring, 1).unwrap().state,
        keygate::keys::KeyState::Retiring
    );
    assert_eq!(kids(&f), [v1.clone(), v2.clone()]);

    // Once the longest token v1 can have signed has expired, v1 is retired and leaves.
    f.keys.advance(times, t + 600 + DAY + 59).await.unwrap();
    assert_eq!(kids(&f).len(), 2);
    let done = f.keys.advance(times, t + 600 + DAY + 60).await.unwrap();
    assert_eq!(
        done,
        [Transition::Retired {
            ring: f.ring.clone(),
            version: 1
        }]
    );
    assert_eq!(kids(&f), vec![v2.clone()]);
    assert_eq!(
        f.keys.version(&f.ring, 1).unwrap().state,
        keygate::keys::KeyState::Retired
    );

    // The lease expired long ago: B may now do the next rotation, 90 days after v2
    // became active.
    assert!(f
        .keys
        .run_schedule(period, "replica-b", 30, t + 600 + 90 * DAY - 1)
        .await
        .unwrap()
        .is_empty());
    let done = f
        .keys
        .run_schedule(period, "replica-b", 30, t + 600 + 90 * DAY)
        .await
        .unwrap();
    assert_eq!(
        done,
        [Transition::Created {
            ring: f.ring.clone(),
            version: 3
        }]
    );

    let log = f.store.audit_entries(0, 100).await.unwrap();
    // After the fixture's own ring.create entries.
    let actions: Vec<&str> = log
        .iter()
        .map(|e| e.action.as_str())
        .filter(|a| *a != "ring.create")
        .collect();
    assert_eq!(
        actions,
        ["key.rotate", "key.activate", "key.retire", "key.rotate"]
    );
    assert!(log
        .iter()
        .filter(|e| e.action != "ring.create")
        .all(|e| e.actor == "keygate" && e.auth_method == "scheduler"));
}

#[tokio::test]
async fn custom_tokens_cannot_vote_and_approver_groups_are_guarded() {
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__REGENERATE__APPROVERS".into(),
            "group:key-officers".into(),
        )],
        ..Options::default()
    });
    s.create_ring("pay", "ES256").await;
    let alice = s.principal("alice", "super-admin").await;
    let r = s
        .post_json("/api/v1/keys/pay/regenerate", &alice, json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();

    // A custom token for another subject proves nobody's identity: it may not vote.
    let r = s
        .post_json(
            "/api/v1/auth/token",
            &alice,
            json!({"grant_type": "custom_token", "subject": "x1", "expires_in": 300, "role": "super-admin"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let minted = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .http
        .post(s.url(&format!("/api/v1/approvals/{id}/approve")))
        .bearer_auth(&minted)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // An admin manages groups, but not the members of an approver group.
    s.post_json(
        "/api/v1/groups",
        &s.admin_key,
        json!({"name": "key-officers"}),
    )
    .await;
    let admin = s.principal("adam", "admin").await;
    let r = s
        .post_json(
            "/api/v1/groups/key-officers/members",
            &admin,
            json!({"principal": "adam"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = s
        .post_json(
            "/api/v1/groups/key-officers/members",
            &s.admin_key,
            json!({"principal": "bob"}),
        )
        .await;
    assert_eq!(r.status(), 201, "a super-admin may");
}

/// A key-version state this keygate does not know is corrupt data, refused where the
/// store reads it, not a string the layers above compare against.
#[tokio::test]
async fn an_unknown_stored_key_state_is_corrupt_at_the_store_boundary() {
    let s = Server::start();
    let dir = s.stop();
    let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let store = keygate::store::Store::open(&url).await.unwrap();
    let versions = store.list_key_versions().await.unwrap();
    assert!(versions
        .iter()
        .all(|v| v.state == keygate::keys::KeyState::Active));
    // The table's CHECK would refuse it: damage (or a store written by a newer keygate)
    // does not ask.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE key_versions SET state = 'half-destroyed' WHERE ring = 'jwt-default'")
        .execute(&mut *conn)
        .await
        .unwrap();
    match store.list_key_versions().await {
        Err(keygate::store::StoreError::Corrupt(m)) => {
            assert!(m.contains("half-destroyed"), "{m}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// An approved request whose server was killed mid-execution stays `executing` in the
/// store. The next start resolves it: long stuck means `failed` (never run twice), with
/// an audit entry; one that only just started is left to whoever runs it.
#[tokio::test]
async fn a_request_left_executing_by_a_killed_server_is_failed_at_the_next_start() {
    let s = Server::start();
    let mut ids = Vec::new();
    for ring in ["jwt-default", "stuck-recently"] {
        if ring != "jwt-default" {
            s.create_ring(ring, "ES256").await;
        }
        let r = s
            .post_json(
                &format!("/api/v1/keys/{ring}/rotate"),
                &s.admin_key,
                json!({"immediate": true}),
            )
            .await;
        assert_eq!(r.status(), 202);
        let a: Value = r.json().await.unwrap();
        ids.push(a["approval_id"].as_str().unwrap().to_string());
    }
    let admin = s.admin_key.clone();
    // The state a kill -9 between the last vote and the end of the run leaves.
    let dir = s.kill9();
    let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (id, since) in [(&ids[0], now - 3600), (&ids[1], now)] {
        sqlx::query("UPDATE approvals SET state = 'executing', decided_at = $2 WHERE id = $1")
            .bind(id)
            .bind(since)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let s = Server::start_in(dir, Options::default());
    let get = |id: String| {
        let (s, admin) = (&s, admin.clone());
        async move {
            let r = s.get(&format!("/api/v1/approvals/{id}"), &admin).await;
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let mut a = get(ids[0].clone()).await;
    for _ in 0..100 {
        if a["state"] != "executing" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        a = get(ids[0].clone()).await;
    }
    assert_eq!(a["state"], "failed", "{a}");
    assert!(
        a["outcome"].as_str().unwrap().starts_with("interrupted"),
        "{a}"
    );
    let recent = get(ids[1].clone()).await;
    assert_eq!(recent["state"], "executing", "{recent}");
    let all: Vec<Value> = s.get_json("/api/v1/keys", &admin).await;
    let states: Vec<&str> = all
        .iter()
        .filter(|v| v["ring"] == "jwt-default")
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active"], "not run again");
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &admin).await;
    assert!(
        log.iter()
            .any(|e| e["action"] == "approval.interrupted:rotate-now"
                && e["target"] == format!("approval:{}", ids[0])
                && e["actor"] == "keygate"),
        "an audit entry records the interrupted request"
    );
}
