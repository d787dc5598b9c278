//! Local users over real HTTP, against a real server and a real SoftHSM token: create,
//! list, read, change and delete; who may manage whom; keys owned by users; changing
//! one's own password; and the password grant's lockout, per source address as well as
//! per name (issue 12 finding 10). The sessions the password grant opens are in
//! `sessions`; the rules behind the lockout are also unit-tested in
//! `src/services/login_throttle.rs`.

use crate::common::expect_problem;
use crate::common::server::{Options, Server};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

async fn create_user(s: &Server, key: &str, body: Value) -> reqwest::Response {
    s.post_json("/api/v1/users", key, body).await
}

/// Creates an API key owned by `owner` as the bootstrap admin; returns its secret.
async fn key_owned_by(s: &Server, owner: &str, role: &str) -> String {
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": format!("{owner}'s key"), "role": role, "owner": owner}),
        )
        .await;
    assert_eq!(r.status(), 201, "key for {owner}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["owner"], owner);
    v["api_key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_user_can_be_created_listed_read_changed_and_deleted() {
    let s = Server::start_with(Options {
        log_level: "debug".into(),
        ..Options::default()
    });

    // Create: 201 with the user, never the password or its hash.
    let r = create_user(
        &s,
        &s.admin_key,
        json!({"username": "alice", "password": PASSWORD, "role": "help-desk", "groups": []}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(PASSWORD) && !text.contains("argon2"),
        "{text}"
    );
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["username"], "alice");
    assert_eq!(created["role"], "help-desk");
    assert_eq!(created["groups"], json!([]));
    assert_eq!(created["has_password"], true);
    assert!(created["updated_at"].is_null(), "{created}");
    assert!(created.get("password").is_none() && created.get("password_hash").is_none());
    time::OffsetDateTime::parse(
        created["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    // A user without a password cannot use the password grant, but exists.
    let r = create_user(
        &s,
        &s.admin_key,
        json!({"username": "svc.bot@example.com", "role": "gateway"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let bot: Value = r.json().await.unwrap();
    assert_eq!(bot["has_password"], false);

    // List and get.
    let r = s.get("/api/v1/users", &s.admin_key).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("argon2"), "the list leaks a hash: {text}");
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "svc.bot@example.com"]);
    let got: Value = s.get_json("/api/v1/users/alice", &s.admin_key).await;
    assert_eq!(got, created);
    let got: Value = s
        .get_json("/api/v1/users/svc.bot@example.com", &s.admin_key)
        .await;
    assert_eq!(got["role"], "gateway");

    // Patch: 200 with the updated object.
    let r = s
        .patch_json(
            "/api/v1/users/alice",
            &s.admin_key,
            json!({"role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["role"], "read-only");
    assert_eq!(patched["has_password"], true);
    assert!(patched["updated_at"].is_string(), "{patched}");
    let new_password = "an entirely new passphrase";
    let r = s
        .patch_json(
            "/api/v1/users/svc.bot@example.com",
            &s.admin_key,
            json!({"password": new_password}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["has_password"], true);
    assert_eq!(patched["role"], "gateway", "unpatched fields stay");

    // Delete: 204, then gone.
    assert_eq!(
        s.delete("/api/v1/users/alice", &s.admin_key).await.status(),
        204
    );
    expect_problem(
        s.get("/api/v1/users/alice", &s.admin_key).await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        s.delete("/api/v1/users/alice", &s.admin_key).await,
        404,
        "not-found",
    )
    .await;
    let r = s
        .patch_json(
            "/api/v1/users/alice",
            &s.admin_key,
            json!({"role": "admin"}),
        )
        .await;
    expect_problem(r, 404, "not-found").await;

    // No password, hash or key reached the log, even at debug level.
    let log = s.log_text();
    for secret in [PASSWORD, new_password, &s.admin_key] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    assert!(
        !log.contains("$argon2id$"),
        "a password hash reached the log"
    );
}

#[tokio::test]
async fn a_taken_username_is_a_conflict() {
    let s = Server::start();
    let body = json!({"username": "dup", "role": "read-only"});
    assert_eq!(
        create_user(&s, &s.admin_key, body.clone()).await.status(),
        201
    );
    let r = create_user(&s, &s.admin_key, body).await;
    expect_problem(r, 409, "conflict").await;
}

#[tokio::test]
async fn malformed_users_and_passwords_are_400() {
    let s = Server::start();
    let long_name = "n".repeat(129);
    let long_password = "p".repeat(1025);
    let bad_bodies = [
        json!({"username": "", "role": "read-only"}),
        json!({"username": "root", "role": "read-only"}),
        json!({"username": "-dash", "role": "read-only"}),
        json!({"username": "oidc:1234", "role": "read-only"}),
        json!({"username": "with space", "role": "read-only"}),
        json!({"username": "slash/name", "role": "read-only"}),
        json!({"username": long_name, "role": "read-only"}),
        json!({"username": "u1", "password": "too short", "role": "read-only"}),
        json!({"username": "u1", "password": long_password, "role": "read-only"}),
        json!({"username": "u1", "role": "read-only", "groups": ["ops"]}),
        json!({"username": "u1", "role": "read-only", "password_hash": "x"}),
        json!({"username": "u1", "role": "root"}),
        json!({"username": "u1"}),
        json!({"username": 5, "role": "read-only"}),
        json!({"username": "u1", "role": "read-only", "password": 123456789012345_u64}),
        json!({"username": "u1", "role": "read-only", "groups": "ops"}),
    ];
    for body in bad_bodies {
        let r = create_user(&s, &s.admin_key, body.clone()).await;
        let problem = expect_problem(r, 400, "invalid-request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            !detail.contains("too short"),
            "detail echoes the password: {detail}"
        );
    }
    let r = create_user(
        &s,
        &s.admin_key,
        json!({"username": "u1", "role": "read-only", "groups": ["ops"]}),
    )
    .await;
    let problem = expect_problem(r, 400, "invalid-request").await;
    assert_eq!(problem["detail"], "no group \"ops\"");
    let r = create_user(
        &s,
        &s.admin_key,
        json!({"username": "root", "role": "read-only"}),
    )
    .await;
    let problem = expect_problem(r, 400, "invalid-request").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("reserved"),
        "{problem}"
    );

    // Exactly the minimum (12 by default) is enough; an empty groups list is fine.
    let r = create_user(
        &s,
        &s.admin_key,
        json!({"username": "u1", "password": "twelve chars", "role": "read-only", "groups": []}),
    )
    .await;
    assert_eq!(r.status(), 201);

    for body in [
        json!({"password": "short"}),
        json!({"groups": ["ops"]}),
        json!({"role": "nobody"}),
        json!({"username": "renamed"}),
        json!({"role": 3}),
    ] {
        let r = s.patch_json("/api/v1/users/u1", &s.admin_key, body).await;
        expect_problem(r, 400, "invalid-request").await;
    }
    let r = s.get_json::<Value>("/api/v1/users", &s.admin_key).await;
    assert_eq!(
        r.as_array().unwrap().len(),
        1,
        "nothing else was created: {r}"
    );
}

#[tokio::test]
async fn nobody_manages_users_above_their_own_role() {
    let s = Server::start();
    let (_, admin) = s.create_key("admin").await;
    let (_, help) = s.create_key("help-desk").await;
    let (_, ro) = s.create_key("read-only").await;
    let (_, gw) = s.create_key("gateway").await;
    let cases = [
        (&help, "admin", 403),
        (&help, "gateway", 403),
        (&help, "help-desk", 201),
        (&help, "read-only", 201),
        (&admin, "super-admin", 403),
        (&admin, "admin", 201),
        (&admin, "gateway", 201),
        (&s.admin_key, "super-admin", 201),
    ];
    for (i, (caller, role, want)) in cases.into_iter().enumerate() {
        let r = create_user(
            &s,
            caller,
            json!({"username": format!("u{i}"), "role": role}),
        )
        .await;
        assert_eq!(r.status().as_u16(), want, "creating a {role} user");
    }
    // u7 is the super-admin: an admin can neither change nor delete it, nor promote anyone.
    let r = s
        .patch_json("/api/v1/users/u7", &admin, json!({"role": "admin"}))
        .await;
    expect_problem(r, 403, "forbidden").await;
    expect_problem(s.delete("/api/v1/users/u7", &admin).await, 403, "forbidden").await;
    let r = s
        .patch_json("/api/v1/users/u5", &admin, json!({"role": "super-admin"}))
        .await;
    expect_problem(r, 403, "forbidden").await;
    // help-desk may not demote an admin (it must cover the current role too).
    let r = s
        .patch_json("/api/v1/users/u5", &help, json!({"role": "read-only"}))
        .await;
    expect_problem(r, 403, "forbidden").await;

    // read-only reads but never writes; gateway does neither.
    let r = create_user(&s, &ro, json!({"username": "x", "role": "read-only"})).await;
    expect_problem(r, 403, "forbidden").await;
    assert_eq!(s.get("/api/v1/users", &ro).await.status(), 200);
    assert_eq!(s.get("/api/v1/users/u2", &ro).await.status(), 200);
    expect_problem(s.get("/api/v1/users", &gw).await, 403, "forbidden").await;
    let r = create_user(&s, &gw, json!({"username": "x", "role": "gateway"})).await;
    expect_problem(r, 403, "forbidden").await;
    // Without users:write the answer is 403 whether or not the user exists.
    expect_problem(
        s.delete("/api/v1/users/nobody", &gw).await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(s.delete("/api/v1/users/u2", &gw).await, 403, "forbidden").await;
}

#[tokio::test]
async fn an_api_key_can_be_owned_by_a_user_and_dies_with_them() {
    let s = Server::start();
    // The owner must be an existing principal.
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "k", "role": "read-only", "owner": "bob"}),
        )
        .await;
    expect_problem(r, 400, "invalid-request").await;
    let r = create_user(
        &s,
        &s.admin_key,
        json!({"username": "bob", "role": "admin"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let bob_key = key_owned_by(&s, "bob", "read-only").await;
    let (_, other) = s.create_key("read-only").await;
    assert_eq!(s.get("/api/v1/keys", &bob_key).await.status(), 200);
    let keys_before = s.key_count().await;

    assert_eq!(
        s.delete("/api/v1/users/bob", &s.admin_key).await.status(),
        204
    );
    // At once: no waiting for the background refresh.
    expect_problem(
        s.get("/api/v1/keys", &bob_key).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(s.key_count().await, keys_before - 1);
    assert_eq!(
        s.get("/api/v1/keys", &other).await.status(),
        200,
        "other keys stay"
    );
}

#[tokio::test]
async fn users_may_change_their_own_password_but_not_delete_themselves() {
    let s = Server::start();
    let r = create_user(
        &s,
        &s.admin_key,
        json!({"username": "carol", "password": PASSWORD, "role": "admin"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        create_user(
            &s,
            &s.admin_key,
            json!({"username": "dave", "role": "read-only"})
        )
        .await
        .status(),
        201
    );
    // A gateway key has no users:write, but it acts as carol: with her current password it
    // may change it. Acting in her name alone is not enough (the key could have been
    // minted for her by somebody else).
    let carol_gw = key_owned_by(&s, "carol", "gateway").await;
    for body in [
        json!({"password": "carol's new passphrase"}),
        json!({"password": "carol's new passphrase", "current_password": "a wrong guess"}),
    ] {
        let r = s.patch_json("/api/v1/users/carol", &carol_gw, body).await;
        expect_problem(r, 403, "forbidden").await;
    }
    let r = s
        .patch_json(
            "/api/v1/users/carol",
            &carol_gw,
            json!({"password": "carol's new passphrase", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["updated_at"].is_string());
    // ...but nothing else, and nobody else's.
    let r = s
        .patch_json(
            "/api/v1/users/carol",
            &carol_gw,
            json!({"password": "carol's newer passphrase", "role": "gateway",
                   "current_password": "carol's new passphrase"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .patch_json(
            "/api/v1/users/dave",
            &carol_gw,
            json!({"password": "dave's new passphrase", "current_password": "whatever it is"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .patch_json(
            "/api/v1/users/carol",
            &carol_gw,
            json!({"password": "short", "current_password": "carol's new passphrase"}),
        )
        .await;
    expect_problem(r, 400, "invalid-request").await;

    // An admin key acting as carol still cannot delete carol: 409, and carol stays.
    let carol_admin = key_owned_by(&s, "carol", "admin").await;
    let r = s.delete("/api/v1/users/carol", &carol_admin).await;
    expect_problem(r, 409, "conflict").await;
    assert_eq!(
        s.get("/api/v1/users/carol", &s.admin_key).await.status(),
        200
    );
    assert_eq!(
        s.delete("/api/v1/users/dave", &carol_admin).await.status(),
        204
    );
}

#[tokio::test]
async fn keys_in_another_users_name_need_the_right_to_manage_that_user() {
    let s = Server::start();
    for (name, role) in [
        ("boss", "super-admin"),
        ("lead", "admin"),
        ("intern", "read-only"),
    ] {
        let r = create_user(&s, &s.admin_key, json!({"username": name, "role": role})).await;
        assert_eq!(r.status(), 201);
    }
    let (_, help) = s.create_key("help-desk").await;
    for owner in ["boss", "lead"] {
        let r = s
            .post_json(
                "/api/v1/api-keys",
                &help,
                json!({"name": "x", "role": "read-only", "owner": owner}),
            )
            .await;
        expect_problem(r, 403, "forbidden").await;
    }
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &help,
            json!({"name": "x", "role": "read-only", "owner": "intern"}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// A client of the server that connects from `ip` (any 127.0.0.0/8 address works on
/// loopback), so tests can speak from several source addresses.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn password_login(
    s: &crate::common::server::Server,
    from: &reqwest::Client,
    user: &str,
    password: &str,
) -> u16 {
    let body = format!(
        "grant_type=password&username={}&password={}",
        crate::common::server::form_encode(user),
        crate::common::server::form_encode(password)
    );
    from.post(s.url("/api/v1/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Issue 12 finding 10: six anonymous wrong passwords for a user locked the account,
/// and its owner's right password was refused. Now failures count per (name, source),
/// per source and per name from all sources: one address guessing cannot lock the
/// owner out of a login from another address, and an administrator can clear a lockout.
#[tokio::test]
async fn wrong_passwords_from_one_source_do_not_lock_the_owner_out_from_another() {
    let s = crate::common::server::Server::start_with(crate::common::server::Options {
        env: vec![
            ("KEYGATE__USERS__MAX_FAILED_LOGINS".into(), "3".into()),
            (
                "KEYGATE__USERS__MAX_FAILED_LOGINS_PER_SOURCE".into(),
                "6".into(),
            ),
        ],
        ..Default::default()
    });
    const RIGHT: &str = "correct horse battery";
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "alice", "password": RIGHT, "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let attacker = client_from("127.0.0.2");
    let owner = client_from("127.0.0.3");

    // Far more wrong passwords than any limit, from one address.
    for _ in 0..10 {
        assert_eq!(
            password_login(&s, &attacker, "alice", "guess guess guess").await,
            400
        );
    }
    // That address is locked out, even with the right password ...
    assert_eq!(password_login(&s, &attacker, "alice", RIGHT).await, 400);
    // ... the owner, elsewhere, is not.
    assert_eq!(password_login(&s, &owner, "alice", RIGHT).await, 200);

    // One address guessing many names is locked out of all of them.
    let sprayer = client_from("127.0.0.4");
    for i in 0..6 {
        let name = format!("user{i}");
        assert_eq!(
            password_login(&s, &sprayer, &name, "guess guess guess").await,
            400
        );
    }
    assert_eq!(password_login(&s, &sprayer, "alice", RIGHT).await, 400);
    assert_eq!(password_login(&s, &owner, "alice", RIGHT).await, 200);

    // An administrator clears alice's lockouts: her (name, source) lock is gone, so
    // 127.0.0.5, locked for alice after three failures, logs in at once.
    let helper = client_from("127.0.0.5");
    for _ in 0..3 {
        password_login(&s, &helper, "alice", "typo typo typo").await;
    }
    assert_eq!(password_login(&s, &helper, "alice", RIGHT).await, 400);
    let r = s.delete("/api/v1/users/alice/lockout", &s.admin_key).await;
    assert_eq!(r.status(), 204);
    assert_eq!(password_login(&s, &helper, "alice", RIGHT).await, 200);
    let (_, ro) = s.create_key("read-only").await;
    crate::common::expect_problem(
        s.delete("/api/v1/users/alice/lockout", &ro).await,
        403,
        "forbidden",
    )
    .await;
    crate::common::expect_problem(
        s.delete("/api/v1/users/nobody/lockout", &s.admin_key).await,
        404,
        "not-found",
    )
    .await;
}
