//! Built-in roles, enforced on every route.

use crate::common::expect_problem;
use crate::common::server::Server;
use serde_json::json;

#[tokio::test]
async fn a_read_only_key_may_get_but_never_change_anything() {
    let s = Server::start();
    let (ro_id, ro) = s.create_key("read-only").await;
    assert_eq!(s.get("/api/v1/keys", &ro).await.status(), 200);
    assert_eq!(s.get("/api/v1/api-keys", &ro).await.status(), 200);
    let before = s.key_count().await;
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &ro,
            json!({"name": "x", "role": "read-only"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .patch_json(
            &format!("/api/v1/api-keys/{ro_id}"),
            &ro,
            json!({"description": "x"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    expect_problem(
        s.delete(&format!("/api/v1/api-keys/{ro_id}"), &ro).await,
        403,
        "forbidden",
    )
    .await;
    let r = s
        .post_json(
            "/api/v1/keys",
            &ro,
            json!({"ring": "x", "algorithm": "ES256"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    assert_eq!(s.key_count().await, before);
}

#[tokio::test]
async fn nobody_can_create_a_key_with_a_role_above_their_own() {
    let s = Server::start();
    let (_, admin) = s.create_key("admin").await;
    let (_, help) = s.create_key("help-desk").await;
    let cases = [
        (&admin, "super-admin", 403),
        (&admin, "admin", 201),
        (&admin, "gateway", 201),
        (&help, "admin", 403),
        (&help, "gateway", 403),
        (&help, "help-desk", 201),
        (&help, "read-only", 201),
    ];
    for (caller, role, want) in cases {
        let r = s
            .post_json(
                "/api/v1/api-keys",
                caller,
                json!({"name": "x", "role": role}),
            )
            .await;
        assert_eq!(r.status().as_u16(), want, "creating {role}");
    }
}

#[tokio::test]
async fn an_admin_cannot_touch_a_super_admin_key_or_promote_one() {
    let s = Server::start();
    let (_, admin) = s.create_key("admin").await;
    let (sa_id, _) = s.create_key("super-admin").await;
    let (ro_id, _) = s.create_key("read-only").await;
    expect_problem(
        s.delete(&format!("/api/v1/api-keys/{sa_id}"), &admin).await,
        403,
        "forbidden",
    )
    .await;
    let r = s
        .patch_json(
            &format!("/api/v1/api-keys/{ro_id}"),
            &admin,
            json!({"role": "super-admin"}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .http
        .post(s.url(&format!("/api/v1/api-keys/{sa_id}/regenerate")))
        .header("x-api-key", &admin)
        .send()
        .await
        .unwrap();
    expect_problem(r, 403, "forbidden").await;
}

#[tokio::test]
async fn a_gateway_key_cannot_read_keys_or_api_keys() {
    let s = Server::start();
    let (_, gw) = s.create_key("gateway").await;
    expect_problem(s.get("/api/v1/keys", &gw).await, 403, "forbidden").await;
    expect_problem(s.get("/api/v1/api-keys", &gw).await, 403, "forbidden").await;
    // Public documents stay public.
    assert_eq!(
        s.http
            .get(s.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
