//! Tokens over real HTTP: the token endpoint, bearer access tokens, revocation,
//! introspection, discovery, the signing service and rotation.

use crate::common::expect_problem;
use crate::common::server::Server;
use serde_json::{json, Value};

const TOKEN: &str = "/api/v1/auth/token";

/// Asserts an RFC 6749 §5.2 error; returns the body.
async fn expect_oauth_error(r: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    body
}

/// A custom token for `subject` with `role`, issued by the bootstrap super-admin.
async fn custom_token(s: &Server, subject: &str, role: &str, ttl: &str) -> String {
    let r = s
        .post_form(
            TOKEN,
            Some(("x-api-key", &s.admin_key)),
            &[
                ("grant_type", "custom_token"),
                ("subject", subject),
                ("expires_in", ttl),
                ("role", role),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body.get("refresh_token").is_none(),
        "custom tokens have no refresh token"
    );
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_custom_token_authenticates_api_calls_with_its_role_enforced() {
    let s = Server::start();
    let ro = custom_token(&s, "viewer", "read-only", "300").await;
    assert_eq!(s.get_bearer("/api/v1/keys", &ro).await.status(), 200);
    let r = s
        .http
        .post(s.url("/api/v1/api-keys"))
        .bearer_auth(&ro)
        .json(&json!({"name": "x", "role": "read-only"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 403, "forbidden").await;

    let admin = custom_token(&s, "root", "admin", "300").await;
    // The token's role manages keys, but its subject is only a name its minter chose: it
    // is not root, so it makes nothing in root's name (issue 12, finding 4).
    let r = s
        .http
        .post(s.url("/api/v1/api-keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "made with a token", "role": "gateway"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "ops", "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .http
        .post(s.url("/api/v1/api-keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "made with a token", "role": "read-only", "owner": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn the_token_endpoint_takes_json_too_and_adds_the_audience() {
    let s = Server::start();
    let r = s
        .post_json(
            TOKEN,
            &s.admin_key,
            json!({"grant_type": "custom_token", "subject": "svc", "expires_in": 120,
                   "audience": ["https://api.example"], "claims": {"tenant": "t1", "scope": "read"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expires_in"], 120);
    let token = body["access_token"].as_str().unwrap();
    let (_, gw) = s.create_key("gateway").await;
    let r = s
        .post_form(
            "/api/v1/auth/introspect",
            Some(("x-api-key", &gw)),
            &[("token", token)],
        )
        .await;
    let i: Value = r.json().await.unwrap();
    assert_eq!(i["active"], true);
    assert_eq!(i["aud"], json!([s.base.clone(), "https://api.example"]));
    assert_eq!(i["scope"], "read");
    assert_eq!(
        i["role"], "read-only",
        "a non-user subject defaults to read-only"
    );
    assert_eq!(i["token_type"], "access_token");
}

#[tokio::test]
async fn token_endpoint_refusals_are_rfc_6749_errors() {
    let s = Server::start();
    let admin = Some(("x-api-key", s.admin_key.as_str()));
    let r = s.post_form(TOKEN, None, &[("grant_type", "magic")]).await;
    expect_oauth_error(r, 400, "unsupported_grant_type").await;
    let r = s.post_form(TOKEN, None, &[("username", "x")]).await;
    expect_oauth_error(r, 400, "invalid_request").await;
    let r = s
        .post_form(TOKEN, None, &[("grant_type", "refresh_token")])
        .await;
    expect_oauth_error(r, 400, "invalid_request").await;
    let r = s
        .post_form(
            TOKEN,
            admin,
            &[("grant_type", "custom_token"), ("expires_in", "60")],
        )
        .await;
    expect_oauth_error(r, 400, "invalid_request").await;
    for ttl in ["0", "-1", "86401", "ten"] {
        let r = s
            .post_form(
                TOKEN,
                admin,
                &[
                    ("grant_type", "custom_token"),
                    ("subject", "x"),
                    ("expires_in", ttl),
                ],
            )
            .await;
        expect_oauth_error(r, 400, "invalid_request").await;
    }
    let r = s
        .post_form(
            TOKEN,
            None,
            &[("grant_type", "password"), ("grant_type", "password")],
        )
        .await;
    expect_oauth_error(r, 400, "invalid_request").await;
    let r = s
        .http
        .post(s.url(TOKEN))
        .header("content-type", "text/plain")
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    expect_oauth_error(r, 400, "invalid_request").await;
    let r = s
        .post_form(
            TOKEN,
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "kgr_nope"),
            ],
        )
        .await;
    expect_oauth_error(r, 400, "invalid_grant").await;
}

#[tokio::test]
async fn custom_tokens_need_credentials_and_tokens_custom() {
    let s = Server::start();
    let pairs = [
        ("grant_type", "custom_token"),
        ("subject", "x"),
        ("expires_in", "60"),
    ];
    let r = s.post_form(TOKEN, None, &pairs).await;
    assert!(r.headers().contains_key("www-authenticate"));
    expect_oauth_error(r, 401, "invalid_client").await;
    let r = s
        .post_form(TOKEN, Some(("x-api-key", "kg_wrong")), &pairs)
        .await;
    expect_oauth_error(r, 401, "invalid_client").await;
    let (_, gw) = s.create_key("gateway").await;
    let r = s.post_form(TOKEN, Some(("x-api-key", &gw)), &pairs).await;
    expect_oauth_error(r, 403, "unauthorized_client").await;
    let (_, hd) = s.create_key("help-desk").await;
    let r = s.post_form(TOKEN, Some(("x-api-key", &hd)), &pairs).await;
    expect_oauth_error(r, 403, "unauthorized_client").await;
    // An admin may not mint a token above its own role.
    let (_, admin) = s.create_key("admin").await;
    let mut above = pairs.to_vec();
    above.push(("role", "super-admin"));
    let r = s
        .post_form(TOKEN, Some(("x-api-key", &admin)), &above)
        .await;
    expect_oauth_error(r, 403, "unauthorized_client").await;
}

#[tokio::test]
async fn malformed_or_forged_bearer_jwts_are_refused_with_401_problems() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let s = Server::start();
    let good = custom_token(&s, "svc", "read-only", "300").await;
    let parts: Vec<&str> = good.split('.').collect();
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let mut none = header.clone();
    none["alg"] = json!("none");
    let mut mismatch = header.clone();
    mismatch["alg"] = json!("RS256");
    let mut unknown = header.clone();
    unknown["kid"] = json!("unknown");
    let mut huge = header.clone();
    huge["x"] = json!("a".repeat(5000));
    let cases = [
        ("bad base64", format!("{}.{}.!!!", parts[0], parts[1])),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{good}.x")),
        (
            "huge header",
            format!("{}.{}.{}", enc(huge), parts[1], parts[2]),
        ),
        ("alg none", format!("{}.{}.", enc(none.clone()), parts[1])),
        (
            "alg none signed",
            format!("{}.{}.{}", enc(none), parts[1], parts[2]),
        ),
        (
            "alg mismatch",
            format!("{}.{}.{}", enc(mismatch), parts[1], parts[2]),
        ),
        (
            "unknown kid",
            format!("{}.{}.{}", enc(unknown), parts[1], parts[2]),
        ),
        ("not a jwt", "abc".to_string()),
    ];
    for (what, token) in cases {
        let r = s.get_bearer("/api/v1/keys", &token).await;
        let b = expect_problem(r, 401, "unauthenticated").await;
        assert!(b["detail"].is_string(), "{what}");
    }
    assert_eq!(s.get_bearer("/api/v1/keys", &good).await.status(), 200);
}

#[tokio::test]
async fn revoked_tokens_and_keys_stop_working_and_revoke_is_200_for_anything_unknown() {
    let s = Server::start();
    let t = custom_token(&s, "svc", "read-only", "300").await;
    for junk in ["not-a-token", "kgr_AAAA", "a.b.c", "kg_not-a-live-key"] {
        let r = s
            .post_form("/api/v1/auth/revoke", None, &[("token", junk)])
            .await;
        assert_eq!(r.status(), 200, "{junk}");
    }
    let r = s
        .http
        .post(s.url("/api/v1/auth/revoke"))
        .json(&json!({"token": t, "token_type_hint": "access_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expect_problem(
        s.get_bearer("/api/v1/keys", &t).await,
        401,
        "unauthenticated",
    )
    .await;
    let r = s.post_form("/api/v1/auth/revoke", None, &[]).await;
    expect_oauth_error(r, 400, "invalid_request").await;
    // An API key presented to revoke is deleted: whoever holds a leaked key can kill it.
    let (id, leaked) = s.create_key("read-only").await;
    let r = s
        .post_form("/api/v1/auth/revoke", None, &[("token", &leaked)])
        .await;
    assert_eq!(r.status(), 200);
    expect_problem(s.get("/api/v1/keys", &leaked).await, 401, "unauthenticated").await;
    let r = s.get(&format!("/api/v1/api-keys/{id}"), &s.admin_key).await;
    expect_problem(r, 404, "not-found").await;
    assert_eq!(
        s.get("/api/v1/keys", &s.admin_key).await.status(),
        200,
        "other keys work"
    );
}

#[tokio::test]
async fn introspection_is_exact_for_inactive_tokens_and_recognises_api_keys() {
    let s = Server::start();
    let (_, gw) = s.create_key("gateway").await;
    let (_, ro) = s.create_key("read-only").await;
    let auth = Some(("x-api-key", gw.as_str()));
    for junk in ["nope", "kgr_nope", "kg_nope", "a.b.c"] {
        let r = s
            .post_form("/api/v1/auth/introspect", auth, &[("token", junk)])
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"active": false}),
            "{junk}"
        );
    }
    let r = s
        .post_form("/api/v1/auth/introspect", auth, &[("token", &ro)])
        .await;
    let i: Value = r.json().await.unwrap();
    assert_eq!(i["active"], true);
    assert_eq!(i["token_type"], "api_key");
    assert_eq!(i["role"], "read-only");
    assert_eq!(i["sub"], "root");
    assert!(i["exp"].is_i64() && i["iat"].is_i64());

    let r = s
        .post_form(
            "/api/v1/auth/introspect",
            Some(("x-api-key", &ro)),
            &[("token", &gw)],
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .post_form("/api/v1/auth/introspect", None, &[("token", &gw)])
        .await;
    expect_problem(r, 401, "unauthenticated").await;
    let r = s.post_form("/api/v1/auth/introspect", auth, &[]).await;
    expect_problem(r, 400, "invalid-request").await;
}

#[tokio::test]
async fn discovery_names_the_endpoints_and_the_jwks_cache_fits_the_publish_delay() {
    let s = Server::start();
    let r = s
        .http
        .get(s.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["issuer"], s.base);
    assert_eq!(d["jwks_uri"], format!("{}/.well-known/jwks.json", s.base));
    assert_eq!(d["token_endpoint"], format!("{}/api/v1/auth/token", s.base));
    assert_eq!(
        d["revocation_endpoint"],
        format!("{}/api/v1/auth/revoke", s.base)
    );
    assert_eq!(
        d["introspection_endpoint"],
        format!("{}/api/v1/auth/introspect", s.base)
    );
    for g in [
        "password",
        "refresh_token",
        "custom_token",
        "client_credentials",
    ] {
        assert!(
            d["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(g)),
            "{g}"
        );
    }
    assert!(d["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("private_key_jwt")));
    let r = s
        .http
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
}

#[tokio::test]
async fn a_jwks_cache_longer_than_the_publish_delay_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::common::server::keygate_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["keys", "list"])
        .env("KEYGATE__JWKS__MAX_AGE", "\"1h\"")
        .env("KEYGATE__ROTATION__PUBLISH_DELAY", "\"10m\"")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("jwks.max_age"), "{err}");
}

#[tokio::test]
async fn the_signing_service_signs_for_granted_callers_only() {
    let s = Server::start();
    s.create_ring("gw-sign", "ES256").await;
    let body =
        json!({"claims": {"sub": "device-7", "tenant": "t"}, "audience": "https://gw.example"});
    let r = s
        .post_json("/api/v1/keys/gw-sign/sign", &s.admin_key, body.clone())
        .await;
    assert_eq!(r.status(), 200);
    let signed: Value = r.json().await.unwrap();
    assert!(signed["token"].as_str().unwrap().split('.').count() == 3);
    let jwks: Value = s.get_json("/.well-known/jwks.json", &s.admin_key).await;
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["kid"] == signed["kid"]));
    // Not an access token: it does not authenticate, and introspects inactive.
    let t = signed["token"].as_str().unwrap();
    let claims = crate::common::tokens::claims_of(t);
    assert_eq!(claims["iss"], format!("{}/rings/gw-sign", s.base));
    expect_problem(
        s.get_bearer("/api/v1/keys", t).await,
        401,
        "unauthenticated",
    )
    .await;

    let (_, gw) = s.create_key("gateway").await;
    let r = s
        .post_json("/api/v1/keys/gw-sign/sign", &gw, body.clone())
        .await;
    expect_problem(r, 403, "forbidden").await;
    for bad in [
        json!({"claims": {"iss": "me"}, "audience": "https://gw"}),
        json!({"claims": {"exp": 1}, "audience": "https://gw"}),
        json!({"claims": {}, "audience": "https://gw", "typ": "at+jwt"}),
        json!({"claims": {}}),
        json!({"claims": {}, "audience": s.base.clone()}),
        json!({"claims": {}, "audience": "https://gw", "expires_in": 999999}),
        json!({"claims": "x", "audience": "https://gw"}),
    ] {
        let r = s
            .post_json("/api/v1/keys/gw-sign/sign", &s.admin_key, bad.clone())
            .await;
        expect_problem(r, 400, "invalid-request").await;
    }
    let r = s
        .post_json("/api/v1/keys/no-such-ring/sign", &s.admin_key, body)
        .await;
    expect_problem(r, 404, "not-found").await;
}

/// Issue 12 finding 6: the signing service signed with the access-token ring, so a
/// signed token carried the access tokens' `kid` and `iss` and only `typ` told them
/// apart. Now the access-token and audit rings never sign for callers, access tokens
/// verify only under `tokens.ring`, and each ring signs as `<issuer>/rings/<ring>`.
#[tokio::test]
async fn the_signing_service_never_signs_with_the_access_token_or_audit_ring() {
    let s = Server::start();
    let attack = json!({"claims": {"sub": "root", "role": "super-admin"},
                        "audience": "https://downstream.example"});
    for ring in ["jwt-default", "audit"] {
        let r = s
            .post_json(
                &format!("/api/v1/keys/{ring}/sign"),
                &s.admin_key,
                attack.clone(),
            )
            .await;
        expect_problem(r, 400, "invalid-request").await;
    }
    // A ring made for signing signs under its own issuer and its own kid.
    s.create_ring("partner", "ES256").await;
    let r = s
        .post_json("/api/v1/keys/partner/sign", &s.admin_key, attack.clone())
        .await;
    assert_eq!(r.status(), 200);
    let signed: Value = r.json().await.unwrap();
    let token = signed["token"].as_str().unwrap();
    let claims = crate::common::tokens::claims_of(token);
    assert_eq!(claims["iss"], format!("{}/rings/partner", s.base));
    let access = s
        .post_form(
            "/api/v1/auth/token",
            Some(("x-api-key", &s.admin_key)),
            &[
                ("grant_type", "custom_token"),
                ("subject", "svc"),
                ("expires_in", "60"),
            ],
        )
        .await;
    assert_eq!(access.status(), 200);
    let access: Value = access.json().await.unwrap();
    let access_claims = crate::common::tokens::claims_of(access["access_token"].as_str().unwrap());
    assert_ne!(claims["iss"], access_claims["iss"]);
    assert_ne!(
        crate::common::tokens::header_of(token)["kid"],
        crate::common::tokens::header_of(access["access_token"].as_str().unwrap())["kid"]
    );
    // Presented as an access token, it names no access-token key.
    expect_problem(
        s.get_bearer("/api/v1/keys", token).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn rotation_over_http_publishes_first_and_rotate_now_switches_signing() {
    let s = Server::start();
    let r = s
        .post_json("/api/v1/keys/jwt-default/rotate", &s.admin_key, json!({}))
        .await;
    assert_eq!(r.status(), 201);
    let v2: Value = r.json().await.unwrap();
    assert_eq!(
        (v2["version"].as_i64(), v2["state"].as_str()),
        (Some(2), Some("pending"))
    );
    let jwks: Value = s.get_json("/.well-known/jwks.json", &s.admin_key).await;
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "pending is published"
    );
    let r = s
        .post_json("/api/v1/keys/jwt-default/rotate", &s.admin_key, json!({}))
        .await;
    expect_problem(r, 409, "conflict").await;

    // Rotate-now needs one approval by default (docs/lifecycle.md); this server runs
    // it at once.
    let s2 = Server::start_with(crate::common::server::Options {
        env: vec![(
            "KEYGATE__APPROVALS__ROTATE-NOW__REQUIRED".into(),
            "0".into(),
        )],
        ..Default::default()
    });
    let r = s2
        .post_json(
            "/api/v1/keys/jwt-default/rotate",
            &s2.admin_key,
            json!({"immediate": true}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["state"], "active");
    let t = custom_token(&s2, "svc", "read-only", "60").await;
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            t.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], v["kid"]);
    let (_, ro) = s2.create_key("read-only").await;
    let r = s2
        .post_json("/api/v1/keys/jwt-default/rotate", &ro, json!({}))
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s2
        .post_json("/api/v1/keys/api-key-mac/rotate", &s2.admin_key, json!({}))
        .await;
    expect_problem(r, 400, "invalid-request").await;
}

/// A custom token minted with `key`, for `subject`, valid `ttl` seconds.
async fn mint_with(s: &Server, key: &str, subject: &str, ttl: &str) -> reqwest::Response {
    s.post_form(
        TOKEN,
        Some(("x-api-key", key)),
        &[
            ("grant_type", "custom_token"),
            ("subject", subject),
            ("expires_in", ttl),
            ("role", "read-only"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_token_minted_with_an_api_key_dies_with_the_key_and_cannot_outlive_it() {
    let s = Server::start();
    for end in ["delete", "regenerate", "revoke"] {
        let (id, key) = s.create_key("admin").await;
        let r = mint_with(&s, &key, "svc", "3600").await;
        assert_eq!(r.status(), 200);
        let t = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(s.get_bearer("/api/v1/keys", &t).await.status(), 200);
        let status = match end {
            "delete" => s
                .delete(&format!("/api/v1/api-keys/{id}"), &s.admin_key)
                .await
                .status(),
            "regenerate" => s
                .post_json(
                    &format!("/api/v1/api-keys/{id}/regenerate"),
                    &s.admin_key,
                    json!({}),
                )
                .await
                .status(),
            _ => s
                .post_form("/api/v1/auth/revoke", None, &[("token", &key)])
                .await
                .status(),
        };
        assert!(status.is_success(), "{end}: {status}");
        expect_problem(
            s.get_bearer("/api/v1/keys", &t).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    // A key that expires in an hour cannot mint a day-long token.
    let in_an_hour = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "short", "role": "admin",
                   "expires_at": in_an_hour.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await;
    let short = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    expect_oauth_error(
        mint_with(&s, &short, "svc", "86400").await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(mint_with(&s, &short, "svc", "600").await.status(), 200);
}

#[tokio::test]
async fn nobody_but_a_super_admin_mints_a_token_in_roots_name() {
    let s = Server::start();
    let (_, admin) = s.create_key("admin").await;
    let r = mint_with(&s, &admin, "root", "60").await;
    expect_oauth_error(r, 403, "unauthorized_client").await;
    assert_eq!(
        mint_with(&s, &s.admin_key, "root", "60").await.status(),
        200
    );
}
