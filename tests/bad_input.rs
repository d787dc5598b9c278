//! Bad input gets the right problem+json status and changes nothing.

use crate::common::expect_problem;
use crate::common::server::Server;
use serde_json::json;

#[tokio::test]
async fn requests_without_credentials_get_401_with_a_bearer_challenge() {
    let s = Server::start();
    let r = s.http.get(s.url("/api/v1/keys")).send().await.unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    expect_problem(r, 401, "unauthenticated").await;
}

/// Credentials that do not authenticate, malformed or not, are 401 ("no valid
/// credentials"); a request that carries two credentials is malformed (400).
#[tokio::test]
async fn ambiguous_credentials_get_400_and_invalid_ones_401() {
    let s = Server::start();
    type Case<'a> = (Vec<(&'a str, String)>, u16, &'a str);
    let key = s.admin_key.clone();
    let cases: Vec<Case> = vec![
        (vec![("x-api-key", "nope".into())], 401, "unauthenticated"),
        (
            vec![("x-api-key", format!("{}!", &key[..45]))],
            401,
            "unauthenticated",
        ),
        (
            vec![("authorization", "Bearer".into())],
            401,
            "unauthenticated",
        ),
        (
            vec![("authorization", "Bearer a b".into())],
            401,
            "unauthenticated",
        ),
        (
            vec![("authorization", "Basic dXNlcjpwYXNz".into())],
            401,
            "unauthenticated",
        ),
        (
            vec![("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.".into())],
            401,
            "unauthenticated",
        ),
        (
            vec![(
                "x-api-key",
                "kg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            )],
            401,
            "unauthenticated",
        ),
        (
            vec![
                ("authorization", format!("Bearer {key}")),
                ("x-api-key", key.clone()),
            ],
            400,
            "malformed-credentials",
        ),
        (
            vec![("x-api-key", key.clone()), ("x-api-key", key.clone())],
            400,
            "malformed-credentials",
        ),
    ];
    for (headers, status, slug) in cases {
        let mut req = s.http.get(s.url("/api/v1/keys"));
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        let www = r.headers().get("www-authenticate").is_some();
        expect_problem(r, status, slug).await;
        assert!(www, "{headers:?} must carry WWW-Authenticate");
    }
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_creates_nothing() {
    let s = Server::start();
    let before = s.key_count().await;
    let big = "x".repeat(70 * 1024);
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": big, "role": "read-only"}),
        )
        .await;
    expect_problem(r, 413, "payload-too-large").await;
    assert_eq!(s.key_count().await, before);
}

#[tokio::test]
async fn junk_or_mis_shaped_json_gets_400_and_creates_nothing() {
    let s = Server::start();
    let before = s.key_count().await;
    let bodies: [(&str, &str); 8] = [
        ("application/json", "{not json"),
        ("application/json", ""),
        ("application/json", r#"{"name": 5, "role": "read-only"}"#),
        ("application/json", r#"{"role": "read-only"}"#),
        ("application/json", r#"{"name": "x", "role": "emperor"}"#),
        (
            "application/json",
            r#"{"name": "x", "role": "read-only", "extra": 1}"#,
        ),
        (
            "application/json",
            r#"{"name": "x", "role": "read-only", "expires_at": "tomorrow"}"#,
        ),
        ("text/plain", r#"{"name": "x", "role": "read-only"}"#),
    ];
    for (ct, body) in bodies {
        let r = s
            .http
            .post(s.url("/api/v1/api-keys"))
            .header("x-api-key", &s.admin_key)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        let b = expect_problem(r, 400, "invalid-request").await;
        assert!(!b["detail"].as_str().unwrap().is_empty(), "{body}: {b}");
    }
    assert_eq!(s.key_count().await, before);
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "  ", "role": "read-only"}),
        )
        .await;
    expect_problem(r, 400, "invalid-request").await;
    assert_eq!(s.key_count().await, before);
}

#[tokio::test]
async fn unknown_paths_ids_and_methods_get_problem_json() {
    let s = Server::start();
    expect_problem(
        s.get("/api/v1/nothing-here", &s.admin_key).await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        s.get("/api/v1/api-keys/not-an-id", &s.admin_key).await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        s.delete("/api/v1/api-keys/not-an-id", &s.admin_key).await,
        404,
        "not-found",
    )
    .await;
    let r = s
        .http
        .put(s.url("/api/v1/api-keys"))
        .header("x-api-key", &s.admin_key)
        .send()
        .await
        .unwrap();
    expect_problem(r, 405, "method-not-allowed").await;
}
