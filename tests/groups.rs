//! Groups and grants: who may view, sign with, rotate or administer which ring.
//! An action needs its permission on every resource it touches.

use crate::common::server::Server;
use serde_json::{json, Value};

async fn sign(s: &Server, key: &str, ring: &str, aud: &str) -> u16 {
    s.post_json(
        &format!("/api/v1/keys/{ring}/sign"),
        key,
        json!({"claims": {"sub": "device"}, "audience": aud}),
    )
    .await
    .status()
    .as_u16()
}

async fn rotate(s: &Server, key: &str, ring: &str) -> u16 {
    s.post_json(&format!("/api/v1/keys/{ring}/rotate"), key, json!({}))
        .await
        .status()
        .as_u16()
}

async fn grant(s: &Server, group: &str, ring: &str, perms: &[&str]) {
    let r = s
        .post_json(
            &format!("/api/v1/groups/{group}/grants"),
            &s.admin_key,
            json!({"resource": format!("ring:{ring}"), "permissions": perms}),
        )
        .await;
    assert_eq!(r.status(), 201, "grant {perms:?} on {ring}");
}

async fn visible_rings(s: &Server, key: &str) -> Result<Vec<String>, u16> {
    let r = s.get("/api/v1/keys", key).await;
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let v: Vec<Value> = r.json().await.unwrap();
    let mut rings: Vec<String> = v
        .iter()
        .map(|x| x["ring"].as_str().unwrap().into())
        .collect();
    rings.dedup();
    Ok(rings)
}

#[tokio::test]
async fn each_grant_allows_exactly_its_permission_on_exactly_its_ring() {
    let s = Server::start();
    s.create_ring("g-a", "ES256").await;
    s.create_ring("g-b", "ES256").await;
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

    // Nothing granted yet: refused for each permission.
    assert_eq!(sign(&s, &gw, "g-a", "https://api.example").await, 403);
    assert_eq!(rotate(&s, &gw, "g-a").await, 403);
    assert_eq!(visible_rings(&s, &gw).await, Err(403));

    grant(&s, "payments", "g-a", &["sign"]).await;
    assert_eq!(sign(&s, &gw, "g-a", "https://api.example").await, 200);
    assert_eq!(
        sign(&s, &gw, "g-b", "https://api.example").await,
        403,
        "other ring"
    );
    assert_eq!(rotate(&s, &gw, "g-a").await, 403, "sign is not rotate");
    assert_eq!(visible_rings(&s, &gw).await, Err(403), "sign is not view");

    grant(&s, "payments", "g-a", &["view"]).await;
    assert_eq!(visible_rings(&s, &gw).await, Ok(vec!["g-a".to_string()]));
    assert_eq!(
        sign(&s, &gw, "g-a", "https://api.example").await,
        403,
        "a grant replaces the earlier one"
    );

    grant(&s, "payments", "g-a", &["rotate"]).await;
    assert_eq!(rotate(&s, &gw, "g-a").await, 201);
    assert_eq!(rotate(&s, &gw, "g-b").await, 403);

    grant(&s, "payments", "g-b", &["admin"]).await;
    assert_eq!(sign(&s, &gw, "g-b", "https://api.example").await, 200);
    assert_eq!(rotate(&s, &gw, "g-b").await, 201);
    let mut rings = visible_rings(&s, &gw).await.unwrap();
    rings.sort();
    assert_eq!(rings, ["g-b"], "g-a now has only rotate");

    // Leaving the group takes every grant away.
    let r = s
        .delete("/api/v1/groups/payments/members/gw", &s.admin_key)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(sign(&s, &gw, "g-b", "https://api.example").await, 403);
}

#[tokio::test]
async fn signing_for_an_audience_that_is_a_ring_needs_sign_on_both() {
    let s = Server::start();
    s.create_ring("g-src", "ES256").await;
    s.create_ring("g-dst", "ES256").await;
    let gw = s.principal("gw", "gateway").await;
    let r = s
        .post_json(
            "/api/v1/groups",
            &s.admin_key,
            json!({"name": "g", "description": "gateways"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    s.post_json(
        "/api/v1/groups/g/members",
        &s.admin_key,
        json!({"principal": "gw"}),
    )
    .await;
    grant(&s, "g", "g-src", &["sign"]).await;
    assert_eq!(sign(&s, &gw, "g-src", "ring:g-dst").await, 403);
    grant(&s, "g", "g-dst", &["sign"]).await;
    assert_eq!(sign(&s, &gw, "g-src", "ring:g-dst").await, 200);
}

#[tokio::test]
async fn the_creator_of_a_ring_holds_admin_on_it() {
    let s = Server::start();
    // A custom role that may create rings but holds no ring-wide sign or rotate.
    let r = s
        .post_json(
            "/api/v1/roles",
            &s.admin_key,
            json!({"name": "ring-maker", "permissions": ["keys:create"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let maker = s.principal("maker", "ring-maker").await;
    let r = s
        .post_json(
            "/api/v1/keys",
            &maker,
            json!({"ring": "mine", "algorithm": "ES256"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    s.create_ring("theirs", "ES256").await;
    assert_eq!(sign(&s, &maker, "mine", "https://api.example").await, 200);
    assert_eq!(rotate(&s, &maker, "mine").await, 201);
    assert_eq!(
        visible_rings(&s, &maker).await,
        Ok(vec!["mine".to_string()])
    );
    assert_eq!(sign(&s, &maker, "theirs", "https://api.example").await, 403);
}

#[tokio::test]
async fn users_carry_their_groups_and_nobody_hands_out_what_they_do_not_hold() {
    let s = Server::start();
    s.create_ring("g-a", "ES256").await;
    s.post_json("/api/v1/groups", &s.admin_key, json!({"name": "ops"}))
        .await;
    grant(&s, "ops", "g-a", &["admin"]).await;
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "bob", "role": "gateway", "groups": ["ops"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["groups"], json!(["ops"]));
    let v: Value = s.get_json("/api/v1/users/bob", &s.admin_key).await;
    assert_eq!(v["groups"], json!(["ops"]));
    let g: Value = s.get_json("/api/v1/groups/ops", &s.admin_key).await;
    assert_eq!(g["members"][0]["principal"], "bob");
    assert_eq!(g["grants"][0]["resource"], "ring:g-a");

    // An unknown group stores nothing.
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "carol", "role": "gateway", "groups": ["nope"]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        s.get("/api/v1/users/carol", &s.admin_key).await.status(),
        404
    );

    // A role that may manage groups but holds no ring permission cannot grant any.
    s.post_json(
        "/api/v1/roles",
        &s.admin_key,
        json!({"name": "group-clerk", "permissions": ["groups:read", "groups:write"]}),
    )
    .await;
    let clerk = s.principal("clerk", "group-clerk").await;
    let r = s
        .post_json(
            "/api/v1/groups/ops/grants",
            &clerk,
            json!({"resource": "ring:g-a", "permissions": ["sign"]}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = s
        .post_json(
            "/api/v1/groups/ops/members",
            &clerk,
            json!({"principal": "clerk"}),
        )
        .await;
    assert_eq!(
        r.status(),
        403,
        "joining ops would hand the clerk admin on g-a"
    );
    let (_, help_desk) = s.create_key("help-desk").await;
    let r = s
        .post_json("/api/v1/groups", &help_desk, json!({"name": "x"}))
        .await;
    assert_eq!(r.status(), 403);

    // Bad grants are clear 400s.
    for (body, what) in [
        (
            json!({"resource": "ring:missing", "permissions": ["view"]}),
            "unknown ring",
        ),
        (
            json!({"resource": "user:bob", "permissions": ["view"]}),
            "not a ring",
        ),
        (
            json!({"resource": "ring:g-a", "permissions": ["fly"]}),
            "unknown permission",
        ),
    ] {
        let r = s
            .post_json("/api/v1/groups/ops/grants", &s.admin_key, body)
            .await;
        assert_eq!(r.status(), 400, "{what}");
    }
    // Deleting the user drops the membership; a new bob starts with no groups.
    assert_eq!(
        s.delete("/api/v1/users/bob", &s.admin_key).await.status(),
        204
    );
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "bob", "role": "gateway"}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["groups"], json!([]));
}

#[tokio::test]
async fn what_belongs_to_a_name_needs_a_credential_that_proves_the_name() {
    let s = Server::start();
    s.create_ring("g-a", "ES256").await;
    let gw = s.principal("gw", "gateway").await;
    s.post_json("/api/v1/groups", &s.admin_key, json!({"name": "signers"}))
        .await;
    s.post_json(
        "/api/v1/groups/signers/members",
        &s.admin_key,
        json!({"principal": "gw"}),
    )
    .await;
    grant(&s, "signers", "g-a", &["sign"]).await;
    assert_eq!(sign(&s, &gw, "g-a", "https://api.example").await, 200);

    // A custom token naming "gw" as its subject proves nothing about gw: it signs with
    // its role alone. The minter holds tokens:custom but not gw's grant.
    s.post_json(
        "/api/v1/roles",
        &s.admin_key,
        json!({"name": "minter", "permissions": ["tokens:custom", "tokens:introspect"]}),
    )
    .await;
    let minter = s.principal("minter", "minter").await;
    let r = s
        .post_json(
            "/api/v1/auth/token",
            &minter,
            json!({"grant_type": "custom_token", "subject": "gw", "expires_in": 300, "role": "gateway"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .http
        .post(s.url("/api/v1/keys/g-a/sign"))
        .bearer_auth(&token)
        .json(&json!({"claims": {}, "audience": "https://api.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // help-desk manages gateway users' keys, but a key in gw's name would carry gw's
    // sign grant, which help-desk does not hold.
    let (_, help_desk) = s.create_key("help-desk").await;
    s.post_json(
        "/api/v1/roles",
        &s.admin_key,
        json!({"name": "desk-plus", "permissions": ["api-keys:read", "api-keys:write", "users:read", "users:write", "tokens:introspect", "keys:read"]}),
    )
    .await;
    let desk = s.principal("desk", "desk-plus").await;
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &desk,
            json!({"name": "x", "role": "gateway", "owner": "gw"}),
        )
        .await;
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    let _ = help_desk;

    // UUIDs are key-file accessIDs, never usernames.
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": uuid::Uuid::new_v4().to_string(), "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_deleted_creator_leaves_no_ownership_behind_for_a_later_namesake() {
    let s = Server::start();
    s.post_json(
        "/api/v1/roles",
        &s.admin_key,
        json!({"name": "ring-maker", "permissions": ["keys:create"]}),
    )
    .await;
    let maker = s.principal("maker", "ring-maker").await;
    let r = s
        .post_json(
            "/api/v1/keys",
            &maker,
            json!({"ring": "mine", "algorithm": "ES256"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        s.delete("/api/v1/users/maker", &s.admin_key).await.status(),
        204
    );
    let again = s.principal("maker", "ring-maker").await;
    assert_eq!(sign(&s, &again, "mine", "https://api.example").await, 403);
}
