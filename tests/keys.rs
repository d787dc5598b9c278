//! Key rings over HTTP and the JWKS.

use crate::common::expect_problem;
use crate::common::server::Server;
use serde_json::{json, Value};

#[tokio::test]
async fn first_start_creates_the_api_key_mac_and_jwt_default_rings_in_hardware() {
    let s = Server::start();
    let keys: Vec<Value> = s.get_json("/api/v1/keys", &s.admin_key).await;
    let find = |ring: &str| keys.iter().find(|k| k["ring"] == ring).cloned().unwrap();
    let mac = find("api-key-mac");
    let jwt = find("jwt-default");
    assert_eq!(
        (mac["algorithm"].as_str(), mac["state"].as_str()),
        (Some("HS256"), Some("active"))
    );
    assert_eq!(
        (jwt["algorithm"].as_str(), jwt["state"].as_str()),
        (Some("ES256"), Some("active"))
    );
    for k in [&mac, &jwt] {
        for f in [
            "ring",
            "version",
            "state",
            "algorithm",
            "backend",
            "kid",
            "created_at",
            "activated_at",
        ] {
            assert!(k.get(f).is_some(), "missing {f} in {k}");
        }
    }
}

#[tokio::test]
async fn rings_of_every_algorithm_can_be_created_and_only_signing_rings_are_published() {
    let s = Server::start();
    for (ring, alg) in [
        ("es384", "ES384"),
        ("ed", "EdDSA"),
        ("rs", "RS256"),
        ("ps", "PS256"),
        ("mac2", "HS256"),
    ] {
        let v = s.create_ring(ring, alg).await;
        assert_eq!(v["state"], "active");
        assert_eq!(v["version"], 1);
    }
    let r = s
        .http
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = r.json().await.unwrap();
    let keys: Vec<Value> = s.get_json("/api/v1/keys", &s.admin_key).await;
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    for k in &keys {
        let kid = k["kid"].as_str().unwrap();
        let is_mac = k["algorithm"] == "HS256";
        let is_audit = k["ring"] == "audit";
        assert_eq!(published.contains(&kid), !is_mac && !is_audit, "{k}");
    }
    let kinds: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    for kty in ["EC", "OKP", "RSA"] {
        assert!(kinds.contains(&kty), "{kty} missing from {jwks}");
    }
    assert!(
        jwks.to_string().find("\"d\"").is_none(),
        "no private members"
    );
}

#[tokio::test]
async fn bad_ring_requests_are_refused_and_create_nothing() {
    let s = Server::start();
    let count = |v: Vec<Value>| v.len();
    let before = count(s.get_json("/api/v1/keys", &s.admin_key).await);
    let cases = [
        (
            json!({"ring": "jwt-default", "algorithm": "ES256"}),
            409,
            "conflict",
        ),
        (
            json!({"ring": "x", "algorithm": "none"}),
            400,
            "invalid-request",
        ),
        (
            json!({"ring": "Bad Name", "algorithm": "ES256"}),
            400,
            "invalid-request",
        ),
        (
            json!({"ring": "x", "algorithm": "ES256", "backend": "nope"}),
            400,
            "invalid-request",
        ),
        (json!({"algorithm": "ES256"}), 400, "invalid-request"),
    ];
    for (body, status, slug) in cases {
        let r = s
            .post_json("/api/v1/keys", &s.admin_key, body.clone())
            .await;
        expect_problem(r, status, slug).await;
    }
    let after = count(s.get_json("/api/v1/keys", &s.admin_key).await);
    assert_eq!(before, after);
}
