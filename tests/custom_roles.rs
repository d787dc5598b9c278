//! Custom roles (`/api/v1/roles`): lists of permissions that work everywhere a built-in
//! role does, and change at once for everyone holding them.

use crate::common::server::Server;
use serde_json::{json, Value};

async fn key_with_role(s: &Server, role: &str) -> (String, String) {
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "k", "role": role}),
        )
        .await;
    assert_eq!(r.status(), 201, "key with role {role}");
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().into(),
        v["api_key"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn the_built_in_roles_are_listed_with_their_permissions() {
    let s = Server::start();
    let roles: Vec<Value> = s.get_json("/api/v1/roles", &s.admin_key).await;
    let names: Vec<&str> = roles.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["super-admin", "admin", "help-desk", "read-only", "gateway"]
    );
    assert!(roles.iter().all(|r| r["builtin"] == true));
    let gateway = &roles[4];
    assert_eq!(gateway["permissions"], json!(["tokens:introspect"]));
}

#[tokio::test]
async fn a_custom_role_grants_exactly_its_permissions_and_a_change_applies_at_once() {
    let s = Server::start();
    let r = s
        .post_json(
            "/api/v1/roles",
            &s.admin_key,
            json!({"name": "auditor", "description": "reads keys and users",
                   "permissions": ["keys:read", "users:read"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let role: Value = r.json().await.unwrap();
    assert_eq!(role["builtin"], false);
    assert_eq!(role["permissions"], json!(["keys:read", "users:read"]));

    let (id, key) = key_with_role(&s, "auditor").await;
    assert_eq!(s.get("/api/v1/keys", &key).await.status(), 200);
    assert_eq!(s.get("/api/v1/users", &key).await.status(), 200);
    assert_eq!(s.get("/api/v1/api-keys", &key).await.status(), 403);
    let r = s
        .post_json(
            "/api/v1/keys",
            &key,
            json!({"ring": "x", "algorithm": "ES256"}),
        )
        .await;
    assert_eq!(r.status(), 403);

    let r = s
        .patch_json(
            "/api/v1/roles/auditor",
            &s.admin_key,
            json!({"permissions": ["users:read"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.get("/api/v1/keys", &key).await.status(),
        403,
        "applies at once"
    );
    assert_eq!(s.get("/api/v1/users", &key).await.status(), 200);

    // A role still held cannot be deleted; once nobody holds it, it can.
    let r = s.delete("/api/v1/roles/auditor", &s.admin_key).await;
    assert_eq!(r.status(), 409);
    assert_eq!(
        s.delete(&format!("/api/v1/api-keys/{id}"), &s.admin_key)
            .await
            .status(),
        204
    );
    assert_eq!(
        s.delete("/api/v1/roles/auditor", &s.admin_key)
            .await
            .status(),
        204
    );
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "k", "role": "auditor"}),
        )
        .await;
    assert_eq!(r.status(), 400, "a deleted role cannot be assigned");
}

#[tokio::test]
async fn nobody_makes_a_role_stronger_than_their_own_and_bad_roles_get_clear_errors() {
    let s = Server::start();
    let (_, help_desk) = s.create_key("help-desk").await;
    let (_, admin) = s.create_key("admin").await;
    let r = s
        .post_json(
            "/api/v1/roles",
            &help_desk,
            json!({"name": "x", "permissions": ["users:read"]}),
        )
        .await;
    assert_eq!(r.status(), 403, "help-desk lacks roles:write");
    let r = s
        .post_json(
            "/api/v1/roles",
            &admin,
            json!({"name": "destroyer", "permissions": ["keys:destroy"]}),
        )
        .await;
    assert_eq!(r.status(), 403, "admin does not hold keys:destroy");
    let detail = r.json::<Value>().await.unwrap()["detail"].to_string();
    assert!(detail.contains("keys:destroy"), "{detail}");

    for (body, status) in [
        (json!({"name": "admin", "permissions": ["keys:read"]}), 409),
        (
            json!({"name": "Bad Name", "permissions": ["keys:read"]}),
            400,
        ),
        (json!({"name": "ok", "permissions": ["keys:fly"]}), 400),
        (json!({"name": "ok", "permissions": []}), 400),
    ] {
        let r = s.post_json("/api/v1/roles", &admin, body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
    }
    let r = s
        .patch_json(
            "/api/v1/roles/admin",
            &s.admin_key,
            json!({"description": "x"}),
        )
        .await;
    assert_eq!(r.status(), 409, "built-in roles are fixed");
    let r = s.get("/api/v1/roles/nope", &admin).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn users_can_hold_custom_roles_and_their_tokens_carry_them() {
    let s = Server::start();
    let r = s
        .post_json(
            "/api/v1/roles",
            &s.admin_key,
            json!({"name": "key-viewer", "permissions": ["keys:read"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "vera", "password": "a long enough password", "role": "key-viewer"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[
                ("grant_type", "password"),
                ("username", "vera"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.get_bearer("/api/v1/keys", &token).await.status(), 200);
    assert_eq!(s.get_bearer("/api/v1/users", &token).await.status(), 403);
}
