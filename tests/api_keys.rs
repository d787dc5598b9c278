//! API keys over real HTTP, against a real server and a real SoftHSM token.

use crate::common::expect_problem;
use crate::common::server::{Options, Server};
use serde_json::{json, Value};

#[tokio::test]
async fn an_api_key_can_be_created_used_listed_updated_regenerated_and_deleted() {
    let s = Server::start_with(Options {
        log_level: "debug".into(),
        ..Options::default()
    });

    // Create: 201, the secret once, with its hint.
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "ci", "description": "pipeline", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["cache-control"],
        "no-store",
        "a secret must not be cached"
    );
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["api_key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("kg_") && secret.len() == 69, "{secret}");
    for field in [
        "id",
        "name",
        "description",
        "role",
        "owner",
        "created_at",
        "expires_at",
        "api_key",
    ] {
        assert!(created.get(field).is_some(), "missing {field}");
    }
    assert_eq!(created["owner"], "root", "owner defaults to the caller");
    assert_eq!(created["role"], "admin");

    // Use it through both headers.
    assert_eq!(s.get("/api/v1/keys", &secret).await.status(), 200);
    let r = s
        .http
        .get(s.url("/api/v1/keys"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // List and get hide the secret but show hint and last use.
    let list_text = s
        .get("/api/v1/api-keys", &s.admin_key)
        .await
        .text()
        .await
        .unwrap();
    assert!(!list_text.contains(&secret), "list leaks the secret");
    let list: Value = serde_json::from_str(&list_text).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("api_key").is_none()));
    let got: Value = s
        .get(&format!("/api/v1/api-keys/{id}"), &s.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["hint"], secret[secret.len() - 4..]);
    assert!(
        got["last_used_at"].is_string(),
        "last_used_at set after use: {got}"
    );
    assert!(got.get("api_key").is_none());

    // Patch role and description: the secret keeps working.
    let r = s
        .patch_json(
            &format!("/api/v1/api-keys/{id}"),
            &s.admin_key,
            json!({"role": "read-only", "description": "now read-only"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["role"], "read-only");
    assert_eq!(patched["description"], "now read-only");
    assert_eq!(patched["name"], "ci", "unpatched fields stay");
    assert_eq!(s.get("/api/v1/keys", &secret).await.status(), 200);

    // Regenerate: the old secret stops at once, the new one works.
    let r = s
        .http
        .post(s.url(&format!("/api/v1/api-keys/{id}/regenerate")))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let regenerated: Value = r.json().await.unwrap();
    let new_secret = regenerated["api_key"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(regenerated["id"], id.as_str());
    expect_problem(s.get("/api/v1/keys", &secret).await, 401, "unauthenticated").await;
    assert_eq!(s.get("/api/v1/keys", &new_secret).await.status(), 200);

    // Delete: 204, then the key is gone and its secret refused.
    let r = s
        .delete(&format!("/api/v1/api-keys/{id}"), &s.admin_key)
        .await;
    assert_eq!(r.status(), 204);
    expect_problem(
        s.get("/api/v1/keys", &new_secret).await,
        401,
        "unauthenticated",
    )
    .await;
    expect_problem(
        s.get(&format!("/api/v1/api-keys/{id}"), &s.admin_key).await,
        404,
        "not-found",
    )
    .await;

    // Nothing secret reached the log, even at debug level.
    let log = s.log_text();
    for secret in [&secret, &new_secret, &s.admin_key] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
    let pin = std::fs::read_to_string(s.data_dir().join("pin")).unwrap();
    assert!(!log.contains(pin.trim()), "the PIN reached the log");
}

#[tokio::test]
async fn a_new_key_expires_after_one_year_by_default_or_when_asked() {
    let s = Server::start();
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "a", "role": "read-only"}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let created = time::OffsetDateTime::parse(
        v["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        v["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((expires - created).whole_days(), 365);

    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "b", "role": "read-only", "expires_at": "2099-01-02T03:04:05Z"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expires_at"], "2099-01-02T03:04:05Z");

    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "c", "role": "read-only", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    expect_problem(r, 400, "invalid-request").await;
}

/// Edits the store as another keygate process would (bumping `api_keys_version` in the
/// same transaction), then waits until the server has picked the change up.
async fn edit_store_like_another_process(s: &Server, sql: &str, id: &str) {
    let db = s.data_dir().join("keygate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sql).bind(id).execute(&mut *tx).await.unwrap();
    sqlx::query("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'api_keys_version'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
}

/// Polls until `path` answers `status` for `key`; a bounded wait, not a timing assertion.
async fn eventually_status(s: &Server, path: &str, key: &str, status: u16) -> reqwest::Response {
    for _ in 0..200 {
        let r = s.get(path, key).await;
        if r.status().as_u16() == status {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} never answered {status}");
}

#[tokio::test]
async fn an_expired_key_is_refused_like_an_unknown_one() {
    let s = Server::start();
    let (id, secret) = s.create_key("read-only").await;
    assert_eq!(s.get("/api/v1/keys", &secret).await.status(), 200);
    // Move its expiry into the past in the store: no sleeping until it expires.
    edit_store_like_another_process(
        &s,
        "UPDATE api_keys SET expires_at = 1000 WHERE id = $1",
        &id,
    )
    .await;
    let r = eventually_status(&s, "/api/v1/keys", &secret, 401).await;
    let body = expect_problem(r, 401, "unauthenticated").await;
    let unknown = "kg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let body2 = expect_problem(s.get("/api/v1/keys", unknown).await, 401, "unauthenticated").await;
    assert_eq!(
        body["detail"], body2["detail"],
        "expired and unknown keys look the same"
    );
}

#[tokio::test]
async fn a_key_deleted_by_another_process_stops_working() {
    let s = Server::start();
    let (id, secret) = s.create_key("read-only").await;
    assert_eq!(s.get("/api/v1/keys", &secret).await.status(), 200);
    edit_store_like_another_process(&s, "DELETE FROM api_keys WHERE id = $1", &id).await;
    eventually_status(&s, "/api/v1/keys", &secret, 401).await;
}

#[tokio::test]
async fn an_owner_may_hold_at_most_max_per_owner_keys() {
    let s = Server::start_with(Options {
        env: vec![("KEYGATE__API_KEYS__MAX_PER_OWNER".into(), "3".into())],
        ..Options::default()
    });
    // root already holds the bootstrap key.
    s.create_key("read-only").await;
    s.create_key("read-only").await;
    let before = s.key_count().await;
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "4th", "role": "read-only"}),
        )
        .await;
    expect_problem(r, 409, "conflict").await;
    assert_eq!(s.key_count().await, before);
}

#[tokio::test]
async fn concurrent_creations_never_exceed_the_per_owner_limit() {
    let s = Server::start_with(Options {
        env: vec![("KEYGATE__API_KEYS__MAX_PER_OWNER".into(), "5".into())],
        ..Options::default()
    });
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (http, url, key) = (
            s.http.clone(),
            s.url("/api/v1/api-keys"),
            s.admin_key.clone(),
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
    assert_eq!(created, 4, "5 minus the bootstrap key");
    assert_eq!(s.key_count().await, 5);
}

#[tokio::test]
async fn the_owner_must_be_a_known_principal() {
    let s = Server::start();
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "x", "role": "read-only", "owner": "nobody"}),
        )
        .await;
    expect_problem(r, 400, "invalid-request").await;
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "x", "role": "read-only", "owner": "root"}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn the_store_holds_only_a_mac_of_each_secret() {
    let s = Server::start();
    let (_, secret) = s.create_key("read-only").await;
    let db = std::fs::read(s.data_dir().join("keygate.db")).unwrap();
    let wal = std::fs::read(s.data_dir().join("keygate.db-wal")).unwrap_or_default();
    let needle = &secret.as_bytes()[3..];
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "secret found in the store files"
        );
    }
}

/// Issue 12 finding 11: a help-desk regenerate that overlapped an admin's role raise
/// handed help-desk the secret of what had just become an admin key, because the write
/// did not check that the key was still what the caller's rights were checked against.
/// The interleaving is replayed step by step on the store (no timing): the help-desk
/// request read the key as read-only, the admin's raise committed, then the help-desk
/// write lands with the role it saw.
#[tokio::test]
async fn api_key_writes_are_compare_and_set_on_the_role_the_caller_saw() {
    use keygate::store::api_keys::{ApiKeyRow, SecretDigest};
    use keygate::store::{Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}/k.db", dir.path().display()))
        .await
        .unwrap();
    let digest = |b: u8| SecretDigest {
        mac: vec![b; 32],
        mac_ring: "api-key-mac".into(),
        mac_version: 1,
        hint: format!("h{b}"),
        public_id: Some(format!("id{b}")),
    };
    let row = ApiKeyRow {
        id: "k1".into(),
        name: "ci".into(),
        description: String::new(),
        owner: "root".into(),
        role: "read-only".into(),
        hint: "h1".into(),
        mac_ring: "api-key-mac".into(),
        mac_version: 1,
        created_at: 1,
        expires_at: i64::MAX,
        last_used_at: None,
        public_id: Some("id1".into()),
        created_by: Some("root".into()),
    };
    store.insert_api_key(&row, &digest(1), 10).await.unwrap();

    // 1. The help-desk request reads the key and checks its rights: read-only, fine.
    let seen = store.get_api_key("k1").await.unwrap().role;
    assert_eq!(seen, "read-only");
    // 2. Meanwhile an admin raises it to admin (checked against read-only: it was).
    let raised = store
        .update_api_key("k1", "read-only", None, None, Some("admin"))
        .await
        .unwrap();
    assert_eq!(raised.role, "admin");
    // 3. The help-desk writes land with what they saw, and all are refused.
    let e = store
        .replace_api_key_secret("k1", &seen, &digest(2))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    let e = store
        .update_api_key("k1", &seen, Some("renamed"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    let e = store
        .delete_api_key("k1", &seen, "api-key.delete")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    // The admin key kept its secret and its name.
    let (k, mac) = store
        .list_api_keys_with_macs()
        .await
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.id == "k1")
        .unwrap();
    assert_eq!(
        (k.role.as_str(), k.name.as_str(), mac),
        ("admin", "ci", vec![1; 32])
    );
    // A key that is gone is not found, not a conflict.
    store
        .delete_api_key("k1", "admin", "api-key.delete")
        .await
        .unwrap();
    let e = store
        .replace_api_key_secret("k1", "admin", &digest(3))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound), "{e:?}");
}

/// Over HTTP each write re-reads the key and sets only what it checked: a sequence of
/// role change, regenerate and delete each succeeds on the key as it then is, and a key
/// already gone is 404 (a lost compare-and-set is 409, see the test above).
#[tokio::test]
async fn sequential_api_key_writes_each_check_the_key_as_it_then_is() {
    let s = Server::start();
    let (id, _) = s.create_key("read-only").await;
    let path = format!("/api/v1/api-keys/{id}");
    let r = s
        .patch_json(&path, &s.admin_key, json!({"role": "help-desk"}))
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .post_json(&format!("{path}/regenerate"), &s.admin_key, json!({}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.delete(&path, &s.admin_key).await.status(), 204);
    expect_problem(s.delete(&path, &s.admin_key).await, 404, "not-found").await;
}
