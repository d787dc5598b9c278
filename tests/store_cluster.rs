//! Several keygate processes on one PostgreSQL database and one SoftHSM token: the
//! store's transactional rules hold across processes (docs/deployment.md, "Several
//! replicas on PostgreSQL").
//!
//! These run only against PostgreSQL: `./ci/pg.sh cargo test --test keygate store_cluster`
//! (ci/test.sh does). Without `KEYGATE_TEST_PG_URL` they print a notice and pass, unless
//! `KEYGATE_TEST_REQUIRE_PG=1` (set by ci/test.sh) makes the missing cluster a failure.

use crate::common::server::{fresh_pg_database, keygate_bin, pg_admin_url, Options, Server};
use serde_json::{json, Value};
use std::path::Path;

const TOKEN: &str = "/api/v1/auth/token";
const PASSWORD: &str = "correct horse battery";

/// The test cluster's admin URL, or `None` (after saying so) when there is none.
fn cluster() -> Option<String> {
    let url = pg_admin_url();
    if url.is_none() {
        assert!(
            std::env::var("KEYGATE_TEST_REQUIRE_PG").as_deref() != Ok("1"),
            "KEYGATE_TEST_REQUIRE_PG=1 but KEYGATE_TEST_PG_URL is not set (run under ci/pg.sh)"
        );
        eprintln!("store_cluster: KEYGATE_TEST_PG_URL is not set; run under ci/pg.sh");
    }
    url
}

async fn db(url: &str) -> sqlx::PgPool {
    sqlx::PgPool::connect(url)
        .await
        .expect("connect to the test database")
}

/// A data directory holding a SoftHSM dev token (made by a first start, then stopped).
fn token_dir() -> tempfile::TempDir {
    Server::start().stop()
}

/// Two replicas on one fresh database and one token; the first issued the bootstrap key.
fn two_replicas(env: Vec<(String, String)>) -> (Server, Server, String, tempfile::TempDir) {
    let admin = cluster().expect("checked by the caller");
    let dir = token_dir();
    let url = fresh_pg_database(&admin);
    let a = Server::start_replica(
        dir.path(),
        &url,
        Options {
            env: env.clone(),
            ..Options::default()
        },
    );
    let b = Server::start_replica(
        dir.path(),
        &url,
        Options {
            env,
            ..Options::default()
        },
    );
    assert!(
        !a.admin_key.is_empty(),
        "the first replica issues the bootstrap key"
    );
    assert!(b.admin_key.is_empty(), "the second finds it issued");
    (a, b, url, dir)
}

fn audit_verify(dir: &Path, url: &str) -> (bool, String) {
    let out = std::process::Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["audit", "verify"])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE__STORE__URL", url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn add_user(s: &Server, name: &str) {
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": name, "password": PASSWORD, "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201, "create {name}");
}

/// Logs `name` in on `s`; the token response.
async fn login(http: &reqwest::Client, base: &str, name: &str) -> reqwest::Response {
    http.post(format!("{base}{TOKEN}"))
        .form(&[
            ("grant_type", "password"),
            ("username", name),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
}

async fn refresh(s: &Server, rt: &str) -> reqwest::Response {
    s.post_form(
        TOKEN,
        None,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await
}

#[tokio::test]
async fn three_replicas_started_at_once_on_an_empty_database_make_one_set_of_everything() {
    let Some(admin) = cluster() else { return };
    let dir = token_dir();
    let url = fresh_pg_database(&admin);
    let replicas: Vec<Server> = std::thread::scope(|scope| {
        let started: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| Server::start_replica(dir.path(), &url, Options::default())))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let issuers: Vec<&Server> = replicas
        .iter()
        .filter(|s| !s.admin_key.is_empty())
        .collect();
    assert_eq!(
        issuers.len(),
        1,
        "exactly one replica prints a bootstrap key"
    );

    let pool = db(&url).await;
    let rings: Vec<String> = sqlx::query_scalar("SELECT name FROM rings ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rings, ["api-key-mac", "audit", "jwt-default"]);
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_versions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(versions, 3, "one key per built-in ring");
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "one bootstrap key");
    // Every migration applied once, successfully.
    let (n, distinct, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT version), COUNT(*) FILTER (WHERE NOT success)
         FROM _sqlx_migrations",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((n, failed), (distinct, 0));
    assert_eq!(
        n,
        keygate::store::postgres::MIGRATOR.iter().count() as i64,
        "every migration applied"
    );
    // Every replica serves the same rings.
    for s in &replicas {
        let r = s.get("/api/v1/keys", &issuers[0].admin_key).await;
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
        }
        assert_eq!(reqwest::get(s.url("/readyz")).await.unwrap().status(), 200);
    }
    let (ok, out) = audit_verify(dir.path(), &url);
    assert!(ok, "audit verify: {out}");
}

#[tokio::test]
async fn twenty_four_concurrent_logins_over_two_replicas_leave_exactly_five_sessions() {
    if cluster().is_none() {
        return;
    }
    // Every login comes from 127.0.0.1: attempts count toward the per-(name, source)
    // lockout before the password is checked, so raise it above 24.
    let (a, b, url, _dir) = two_replicas(vec![
        ("KEYGATE__USERS__MAX_FAILED_LOGINS".into(), "100".into()),
        (
            "KEYGATE__USERS__MAX_FAILED_LOGINS_PER_NAME".into(),
            "100".into(),
        ),
    ]);
    add_user(&a, "ann").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (http, base) = (s.http.clone(), s.base.clone());
        tasks.push(tokio::spawn(async move {
            login(&http, &base, "ann").await.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200, "every login succeeds");
    }
    let pool = db(&url).await;
    let (live, evicted): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE revoked_at IS NULL),
                COUNT(*) FILTER (WHERE revoked_reason = 'session-limit')
         FROM sessions WHERE username = 'ann'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((live, evicted), (5, 19));
}

#[tokio::test]
async fn a_refresh_token_spent_on_one_replica_and_replayed_on_the_other_ends_the_session() {
    if cluster().is_none() {
        return;
    }
    let (a, b, _url, _dir) = two_replicas(Vec::new());
    add_user(&a, "bo").await;
    let v: Value = login(&a.http, &a.base, "bo").await.json().await.unwrap();
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&a, &rt).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let rt2 = v["refresh_token"].as_str().unwrap().to_string();
    // The replay on B is refused and ends the session, so A refuses the new token too.
    assert_eq!(refresh(&b, &rt).await.status(), 400);
    assert_eq!(refresh(&a, &rt2).await.status(), 400);

    // One token exchanged on both replicas at once: exactly one exchange wins.
    let v: Value = login(&b.http, &b.base, "bo").await.json().await.unwrap();
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let (ra, rb) = tokio::join!(refresh(&a, &rt), refresh(&b, &rt));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
}

#[tokio::test]
async fn concurrent_key_creations_on_two_replicas_never_exceed_the_per_owner_limit() {
    if cluster().is_none() {
        return;
    }
    let (a, b, url, _dir) = two_replicas(vec![(
        "KEYGATE__API_KEYS__MAX_PER_OWNER".into(),
        "5".into(),
    )]);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (http, url, key) = (
            s.http.clone(),
            s.url("/api/v1/api-keys"),
            a.admin_key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("x-api-key", key)
                .json(&json!({"name": format!("k{i}"), "role": "read-only"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => created += 1,
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // root already held the bootstrap key.
    assert_eq!(created, 4);
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE owner = 'root'")
        .fetch_one(&db(&url).await)
        .await
        .unwrap();
    assert_eq!(held, 5);
}

#[tokio::test]
async fn concurrent_audited_writes_on_two_replicas_leave_one_chain_that_verifies() {
    if cluster().is_none() {
        return;
    }
    let (a, b, url, dir) = two_replicas(vec![(
        "KEYGATE__API_KEYS__MAX_PER_OWNER".into(),
        "100".into(),
    )]);
    let mut tasks = Vec::new();
    for i in 0..30 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (http, url, key) = (
            s.http.clone(),
            s.url("/api/v1/api-keys"),
            a.admin_key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("x-api-key", key)
                .json(&json!({"name": format!("k{i}"), "role": "read-only"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let pool = db(&url).await;
    let (n, max, distinct): (i64, i64, i64) =
        sqlx::query_as("SELECT COUNT(*), MAX(seq), COUNT(DISTINCT prev_hash) FROM audit_log")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, max, "no gaps in the sequence");
    assert_eq!(distinct, n, "no two entries share a predecessor: no forks");
    let (ok, out) = audit_verify(dir.path(), &url);
    assert!(ok, "audit verify: {out}");
}

#[tokio::test]
async fn a_replica_refuses_a_database_whose_schema_is_newer_than_it_knows() {
    if cluster().is_none() {
        return;
    }
    let (a, _b, url, dir) = two_replicas(Vec::new());
    drop(a);
    // A newer keygate migrated the database.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&db(&url).await)
    .await
    .unwrap();
    sqlx::query("UPDATE meta SET value = '99.0.0' WHERE key = 'keygate_version'")
        .execute(&db(&url).await)
        .await
        .unwrap();
    let out = std::process::Command::new(keygate_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--insecure-http",
        ])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE__STORE__URL", &url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("schema version 9999") && text.contains("keygate 99.0.0"),
        "{text}"
    );
}

#[tokio::test]
async fn leases_on_postgresql_end_by_the_database_clock_not_by_a_replicas() {
    let Some(admin) = cluster() else { return };
    let url = fresh_pg_database(&admin);
    let a = keygate::store::Store::open(&url).await.unwrap();
    let b = keygate::store::Store::open(&url).await.unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let year = 365 * 86_400;
    // Replica A's clock runs a year ahead when it takes a one-minute lease.
    assert!(a.take_lease("rotation", "a", now + year, 60).await.unwrap());
    // B's clock, two years ahead, says that lease ended long ago; the database's clock
    // says it has a minute left, so B does not get it.
    assert!(!b
        .take_lease("rotation", "b", now + 2 * year, 60)
        .await
        .unwrap());
    // The holder renews whatever its clock says.
    assert!(a.take_lease("rotation", "a", now - year, 60).await.unwrap());
    assert!(!b.take_lease("rotation", "b", now, 60).await.unwrap());
}
