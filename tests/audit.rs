//! The audit layer: every state change's entry commits in the transaction of the change,
//! a change whose entry cannot be written fails as a whole (and is counted), and refused
//! requests are aggregated into one entry per (source, actor, reason, minute).

use crate::common::server::{keygate_bin, Options, Server};
use serde_json::{json, Value};
use std::path::Path;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn db(dir: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("keygate.db").display()))
        .await
        .unwrap()
}

fn audit_verify(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["audit", "verify"])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A counter's value in Prometheus text (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn each_change_writes_its_own_entry_naming_the_caller_and_the_request() {
    let s = Server::start();
    let r = s
        .http
        .post(s.url("/api/v1/users"))
        .header("x-api-key", &s.admin_key)
        .header("x-request-id", "req-audit-1")
        .json(&json!({"username": "audited", "role": "read-only",
                      "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (id, _) = s.create_key("read-only").await;
    assert_eq!(
        s.delete(&format!("/api/v1/api-keys/{id}"), &s.admin_key)
            .await
            .status(),
        204
    );
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &s.admin_key).await;
    let find = |action: &str, target: &str| {
        log.iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no {action} {target} in {log:?}"))
            .clone()
    };
    let user = find("user.create", "audited");
    assert_eq!(
        (&user["actor"], &user["request_id"], &user["count"]),
        (&json!("root"), &json!("req-audit-1"), &json!(1))
    );
    assert!(user["auth_method"]
        .as_str()
        .unwrap()
        .starts_with("api-key:"));
    find("api-key.create", &id);
    find("api-key.delete", &id);
    // No second, after-the-fact entry per request any more.
    assert!(
        !log.iter()
            .any(|e| e["action"].as_str().unwrap().starts_with("http:POST")),
        "{log:?}"
    );
    let metrics = s.metrics().await;
    assert_eq!(counter(&metrics, "keygate_audit_after_the_fact_total"), 0.0);
}

#[tokio::test]
async fn a_change_whose_audit_entry_cannot_be_written_fails_as_a_whole() {
    let s = Server::start();
    let admin = s.admin_key.clone();
    let dir = s.stop();
    // The audit log refuses every new entry, as a full or broken disk would.
    let pool = db(dir.path()).await;
    sqlx::query(
        "CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log
         BEGIN SELECT RAISE(ABORT, 'audit log unwritable'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let s = Server::start_in(dir, Options::default());
    let r = s
        .post_json(
            "/api/v1/users",
            &admin,
            json!({"username": "ghost", "role": "read-only"}),
        )
        .await;
    assert!(r.status().is_server_error(), "{}", r.status());
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "a problem, not a success"
    );
    // Nothing changed: the user does not exist.
    assert_eq!(s.get("/api/v1/users/ghost", &admin).await.status(), 404);
    let metrics = s.metrics().await;
    assert!(
        counter(&metrics, "keygate_audit_write_failures_total") >= 1.0,
        "{metrics}"
    );
    // The log says so too (stderr is read by another thread: give it a moment).
    let mut logged = false;
    for _ in 0..50 {
        logged = s.log_text().contains("could not write an audit entry");
        if logged {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged, "{}", s.log_text());
}

#[tokio::test]
async fn refused_requests_become_one_entry_per_source_reason_and_minute_and_cost_nothing_more() {
    let s = Server::start();
    let before: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &s.admin_key).await;
    const N: usize = 25;
    let first_minute = now() / 60;
    for i in 0..N {
        // Garbage credentials: well-formed and malformed API keys, and a bad bearer.
        let r = match i % 3 {
            0 => s.get("/api/v1/keys", &format!("kg_{:0>43}", i)).await,
            1 => s.get("/api/v1/keys", "not-a-key").await,
            _ => s.get_bearer("/api/v1/keys", "a.b.c").await,
        };
        assert_eq!(r.status(), 401);
    }
    let last_minute = now() / 60;
    // The buckets are written when their minute ends, or (here) at shutdown.
    let dir = s.stop();
    let pool = db(dir.path()).await;
    let rows: Vec<(String, Option<String>, i64, i64, String)> = sqlx::query_as(
        "SELECT actor, source, count, time, outcome FROM audit_log
         WHERE action = 'http:GET /api/v1/keys' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), N as i64, "{rows:?}");
    let minutes = (last_minute - first_minute + 1) as usize;
    assert!(rows.len() <= minutes, "one row per minute: {rows:?}");
    let mut keys: Vec<(&Option<String>, i64)> = rows.iter().map(|r| (&r.1, r.3)).collect();
    keys.dedup();
    assert_eq!(keys.len(), rows.len(), "one row per (source, minute)");
    for (actor, source, _, time, outcome) in &rows {
        assert_eq!(
            (actor.as_str(), source.as_deref(), outcome.as_str()),
            ("anonymous", Some("127.0.0.1"), "401")
        );
        assert_eq!(time % 60, 0, "the bucket's minute");
    }
    // The flood cost no entry beyond its buckets.
    assert_eq!(total as usize, before.len() + rows.len());
    let (ok, out) = audit_verify(dir.path());
    assert!(
        ok,
        "aggregated entries are part of the verified chain: {out}"
    );
}
