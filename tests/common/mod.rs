//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod hsm;
pub mod server;

/// Asserts a problem+json response with this status and `type` slug; returns the body.
pub async fn expect_problem(resp: reqwest::Response, status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(ct, "application/problem+json", "content type");
    let body: serde_json::Value = resp.json().await.expect("problem body");
    assert_eq!(
        body["type"],
        format!("urn:keygate:problem:{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
