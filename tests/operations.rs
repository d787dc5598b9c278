//! Health, readiness, metrics and the OpenAPI document.

use crate::common::server::Server;
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness_report_the_token() {
    let s = Server::start();
    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["backends"]["hsm"]["status"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_time_hardware_calls() {
    let s = Server::start();
    assert_eq!(s.get("/api/v1/keys", &s.admin_key).await.status(), 200);
    // The main listener does not serve metrics to API clients; the ops listener does.
    let main = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404);
    assert_eq!(
        main.headers()["content-type"],
        "application/problem+json",
        "a plain 404 problem"
    );
    let text = s.metrics().await;
    assert!(
        text.contains(
            r#"keygate_http_requests_total{route="/api/v1/keys",method="GET",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains("keygate_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"keygate_hardware_call_duration_seconds_bucket{op="mac""#),
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let s = Server::start();
    let doc: Value = s
        .http
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/api/v1/keys", "get"),
        ("/api/v1/keys", "post"),
        ("/api/v1/api-keys", "get"),
        ("/api/v1/api-keys", "post"),
        ("/api/v1/api-keys/{id}", "get"),
        ("/api/v1/api-keys/{id}", "patch"),
        ("/api/v1/api-keys/{id}", "delete"),
        ("/api/v1/api-keys/{id}/regenerate", "post"),
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{username}", "get"),
        ("/api/v1/users/{username}", "patch"),
        ("/api/v1/users/{username}", "delete"),
        ("/api/v1/users/{username}/lockout", "delete"),
        ("/.well-known/openid-configuration", "get"),
        ("/api/v1/keys/{ring}/rotate", "post"),
        ("/api/v1/keys/{ring}/sign", "post"),
        ("/api/v1/auth/token", "post"),
        ("/api/v1/auth/revoke", "post"),
        ("/api/v1/auth/introspect", "post"),
        ("/api/v1/auth/sessions", "get"),
        ("/api/v1/auth/sessions/{id}", "delete"),
        ("/api/v1/key-files", "get"),
        ("/api/v1/key-files", "post"),
        ("/api/v1/key-files/{access_id}", "get"),
        ("/api/v1/key-files/{access_id}", "patch"),
        ("/api/v1/key-files/{access_id}", "delete"),
        ("/api/v1/key-files/{access_id}/regenerate", "post"),
        ("/api/v1/roles", "get"),
        ("/api/v1/roles", "post"),
        ("/api/v1/roles/{name}", "get"),
        ("/api/v1/roles/{name}", "patch"),
        ("/api/v1/roles/{name}", "delete"),
        ("/api/v1/groups", "get"),
        ("/api/v1/groups", "post"),
        ("/api/v1/groups/{name}", "get"),
        ("/api/v1/groups/{name}", "patch"),
        ("/api/v1/groups/{name}", "delete"),
        ("/api/v1/groups/{name}/members", "get"),
        ("/api/v1/groups/{name}/members", "post"),
        ("/api/v1/groups/{name}/members/{principal}", "delete"),
        ("/api/v1/groups/{name}/grants", "get"),
        ("/api/v1/groups/{name}/grants", "post"),
        ("/api/v1/groups/{name}/grants/{resource}", "delete"),
        ("/api/v1/oauth-servers", "get"),
        ("/api/v1/oauth-servers", "post"),
        ("/api/v1/oauth-servers/{oauth_id}", "get"),
        ("/api/v1/oauth-servers/{oauth_id}", "patch"),
        ("/api/v1/oauth-servers/{oauth_id}", "delete"),
        ("/api/v1/keys/{ring}/regenerate", "post"),
        ("/api/v1/keys/{ring}/versions/{version}/destroy", "post"),
        ("/api/v1/keys/{ring}/versions/{version}/attestation", "get"),
        ("/api/v1/approvals", "get"),
        ("/api/v1/approvals/{id}", "get"),
        ("/api/v1/approvals/{id}/approve", "post"),
        ("/api/v1/approvals/{id}/reject", "post"),
        ("/api/v1/approvals/{id}/redeem", "post"),
        ("/api/v1/audit", "get"),
        ("/api/v1/audit/keys", "get"),
        ("/api/v1/tls", "get"),
        ("/api/v1/tls/reload", "post"),
        ("/api/v1/ca-profiles", "get"),
        ("/api/v1/ca-profiles", "post"),
        ("/api/v1/ca-profiles/{name}", "get"),
        ("/api/v1/ca-profiles/{name}", "patch"),
        ("/api/v1/ca-profiles/{name}", "delete"),
    ];
    for (p, m) in expected {
        assert!(
            paths.get(p).and_then(|o| o.get(m)).is_some(),
            "{m} {p} missing from OpenAPI"
        );
    }
    let schemas = &doc["components"]["schemas"];
    for s in [
        "UserView",
        "CreateUser",
        "UpdateUser",
        "TokenResponse",
        "Introspection",
        "OAuthServerView",
    ] {
        assert!(schemas[s].is_object(), "schema {s} missing");
    }
    assert!(
        schemas["UserView"]["properties"].get("password").is_none(),
        "a view never carries a password"
    );
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/http/routes/mod.rs"
    ))
    .unwrap();
    let routed = src.matches(".route(").count();
    let documented: std::collections::BTreeSet<&str> = expected.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        routed,
        documented.len(),
        "a route was added without updating this test and the OpenAPI document"
    );
}

#[tokio::test]
async fn readiness_and_requests_answer_503_when_the_token_disappears() {
    let s = Server::start();
    // A key never used before: its MAC must come from the token, not the verify cache.
    let (_, fresh) = s.create_key("read-only").await;
    let tokens = s.data_dir().join("softhsm/tokens");
    let gone = s.data_dir().join("softhsm/tokens.gone");
    std::fs::rename(&tokens, &gone).unwrap();
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    crate::common::expect_problem(r, 503, "hardware-unavailable").await;
    let r = s.get("/api/v1/keys", &fresh).await;
    crate::common::expect_problem(r, 503, "hardware-unavailable").await;
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200,
        "liveness stays up"
    );
    std::fs::rename(&gone, &tokens).unwrap();
}
