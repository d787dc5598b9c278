//! Abuse resistance (docs/operations.md "Limits"): forged credentials cost no hardware,
//! rate limits answer 429 with `Retry-After`, `X-Forwarded-For` is believed only from
//! trusted proxies, and the hardware lanes keep TLS handshakes going while the
//! unauthenticated lane is full. Every test runs against a spawned server over HTTP.

use crate::common::server::{Options, Server};
use keygate::services::credential;
use serde_json::Value;
use std::time::Duration;

/// Sum of the hardware-call counters for `op` on `/metrics`.
async fn hardware_calls(s: &Server, op: &str) -> u64 {
    let text = s.metrics().await;
    let label = format!("op=\"{op}\"");
    text.lines()
        .filter(|l| {
            l.starts_with("keygate_hardware_call_duration_seconds_count{") && l.contains(&label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

/// A well-formed credential with a correct checksum and a random (unknown) id.
fn forged(prefix: &str) -> String {
    let id = credential::encode_id(&random_bytes(credential::ID_BYTES));
    forged_with_id(prefix, &id)
}

fn forged_with_id(prefix: &str, id: &str) -> String {
    let mut s = String::new();
    credential::encode_into(&mut s, prefix, id, &random_bytes(credential::SECRET_BYTES));
    s
}

fn id_of(secret: &str, prefix: &str) -> String {
    match credential::parse(prefix, secret) {
        Ok(credential::Parsed::Current { id }) => id.to_string(),
        other => panic!("{secret} is not a current-format credential: {other:?}"),
    }
}

fn start_with_env(env: &[(&str, &str)], https: bool) -> Server {
    Server::start_with(Options {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        https,
        ..Options::default()
    })
}

#[tokio::test]
async fn new_secrets_carry_a_public_id_and_a_checksum() {
    let s = Server::start();
    let (_, key) = s.create_key("admin").await;
    assert_eq!(key.len(), credential::current_len("kg_"), "{key}");
    id_of(&key, "kg_");
    // The bootstrap key too.
    id_of(&s.admin_key, "kg_");
    assert_eq!(s.get("/api/v1/keys", &key).await.status(), 200);
}

#[tokio::test]
async fn forged_credentials_cost_no_hardware_call() {
    let s = Server::start();
    // Warm: the bootstrap key is known; one real use so every lazy series exists.
    assert_eq!(s.get("/api/v1/keys", &s.admin_key).await.status(), 200);
    let macs = hardware_calls(&s, "mac").await;
    let randoms = hardware_calls(&s, "random").await;
    let mut refused = 0;
    for i in 0..20 {
        // A well-formed key with a valid checksum but an unknown id, a bad checksum, the
        // old format (no old-format key exists here), and plain garbage.
        let good_shape = forged("kg_");
        let mut bad_check = forged("kg_");
        bad_check.pop();
        bad_check.push(if i % 2 == 0 { 'A' } else { 'B' });
        let legacy = format!("kg_{}", "A".repeat(43));
        for key in [good_shape.as_str(), &bad_check, &legacy, "kg_garbage"] {
            let r = s.get("/api/v1/keys", key).await;
            assert_eq!(r.status(), 401, "{key}");
            refused += 1;
        }
        // Refresh tokens and revocation of garbage.
        let r = s
            .post_form(
                "/api/v1/auth/token",
                None,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &forged("kgr_")),
                ],
            )
            .await;
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        for token in [
            forged("kg_"),
            forged("kgr_"),
            format!("kgr_{}", "B".repeat(43)),
        ] {
            let r = s
                .post_form("/api/v1/auth/revoke", None, &[("token", &token)])
                .await;
            assert_eq!(r.status(), 200);
        }
    }
    assert_eq!(refused, 80);
    assert_eq!(
        hardware_calls(&s, "mac").await,
        macs,
        "forged credentials must not reach the hardware MAC"
    );
    assert_eq!(
        hardware_calls(&s, "random").await,
        randoms,
        "a forged refresh token must not draw a new one from the hardware RNG"
    );
}

#[tokio::test]
async fn a_known_id_with_a_wrong_secret_costs_one_mac_until_its_failure_limiter_locks_it() {
    let s = start_with_env(
        &[(
            "KEYGATE__LIMITS__CREDENTIAL_FAILURES",
            "{ per_minute = 1, burst = 3 }",
        )],
        false,
    );
    let (_, key) = s.create_key("admin").await;
    let id = id_of(&key, "kg_");
    let before = hardware_calls(&s, "mac").await;
    for _ in 0..10 {
        let wrong = forged_with_id("kg_", &id);
        assert_eq!(s.get("/api/v1/keys", &wrong).await.status(), 401);
    }
    // Three failures fit the burst, the fourth locks the id: four MACs, then none.
    assert_eq!(hardware_calls(&s, "mac").await - before, 4);
    // Another key's id is not affected.
    let (_, other) = s.create_key("admin").await;
    assert_eq!(s.get("/api/v1/keys", &other).await.status(), 200);
}

#[tokio::test]
async fn too_many_requests_answer_429_with_retry_after_at_the_configured_rate() {
    let s = start_with_env(
        &[
            (
                "KEYGATE__LIMITS__UNAUTHENTICATED",
                "{ per_minute = 1, burst = 5 }",
            ),
            ("KEYGATE__LIMITS__FAILED", "{ per_minute = 1, burst = 3 }"),
        ],
        false,
    );
    // Anonymous requests: exactly the burst passes, then 429.
    for i in 0..5 {
        let r = s
            .http
            .get(s.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "anonymous request {i}");
    }
    let r = s
        .http
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:keygate:problem:rate-limited");
    assert_eq!(body["status"], 429);
    // Health stays reachable for load balancers.
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
    // Authenticated requests do not draw from the anonymous bucket.
    assert_eq!(s.get("/api/v1/keys", &s.admin_key).await.status(), 200);
    // Failed requests: three 401s fit the burst; the fourth is answered 429, and from
    // then on the source is refused even with a valid key, with no work done.
    for _ in 0..3 {
        assert_eq!(s.get("/api/v1/keys", &forged("kg_")).await.status(), 401);
    }
    let r = s.get("/api/v1/keys", &forged("kg_")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(s.get("/api/v1/keys", &s.admin_key).await.status(), 429);
    // Refusals are still counted under their route: the request metrics run outside
    // the rate limits (one middleware, `http::front`, in that order).
    let metrics = s.metrics().await;
    for series in [
        r#"keygate_http_requests_total{route="/.well-known/jwks.json",method="GET",status="429"} 1"#,
        r#"keygate_http_requests_total{route="/.well-known/jwks.json",method="GET",status="200"} 5"#,
        r#"keygate_http_requests_total{route="/api/v1/keys",method="GET",status="429"} 2"#,
        r#"keygate_http_requests_total{route="/api/v1/keys",method="GET",status="401"} 3"#,
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
}

/// A client bound to `local` (any 127.0.0.0/8 address reaches the loopback listener).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn jwks_status(c: &reqwest::Client, s: &Server, xff: Option<&str>) -> u16 {
    let mut r = c.get(s.url("/.well-known/jwks.json"));
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let s = start_with_env(
        &[
            (
                "KEYGATE__LIMITS__UNAUTHENTICATED",
                "{ per_minute = 1, burst = 2 }",
            ),
            ("KEYGATE__LIMITS__TRUSTED_PROXIES", "[\"127.0.0.2\"]"),
        ],
        false,
    );
    // An untrusted client cannot escape its bucket by inventing addresses.
    let direct = client_from("127.0.0.1");
    let mut codes = Vec::new();
    for i in 0..4 {
        codes.push(jwks_status(&direct, &s, Some(&format!("203.0.113.{i}"))).await);
    }
    assert_eq!(codes, [200, 200, 429, 429]);
    // Through the trusted proxy, each forwarded client has its own bucket...
    let proxy = client_from("127.0.0.2");
    for _ in 0..2 {
        assert_eq!(jwks_status(&proxy, &s, Some("198.51.100.1")).await, 200);
    }
    assert_eq!(jwks_status(&proxy, &s, Some("198.51.100.1")).await, 429);
    assert_eq!(jwks_status(&proxy, &s, Some("198.51.100.2")).await, 200);
    // ...and a client that prepends its own entry is still the address the proxy saw.
    assert_eq!(
        jwks_status(&proxy, &s, Some("192.0.2.99, 198.51.100.1")).await,
        429
    );
    // Without the header, the proxy itself is the source.
    assert_eq!(jwks_status(&proxy, &s, None).await, 200);
}

#[tokio::test]
async fn tls_handshakes_keep_working_while_the_unauthenticated_lane_is_full() {
    let s = start_with_env(
        &[
            ("KEYGATE__LIMITS__UNAUTHENTICATED_LANE", "1"),
            ("KEYGATE__LIMITS__UNAUTHENTICATED_QUEUE", "1"),
            (
                "KEYGATE__LIMITS__CREDENTIAL_FAILURES",
                "{ per_minute = 600000, burst = 1000000 }",
            ),
            (
                "KEYGATE__LIMITS__FAILED",
                "{ per_minute = 600000, burst = 1000000 }",
            ),
        ],
        true,
    );
    let (_, key) = s.create_key("admin").await;
    let id = id_of(&key, "kg_");
    let signs_before = hardware_calls(&s, "tls_sign").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // The flood: wrong secrets for a known id, each one a MAC in the unauthenticated lane.
    let mut flood = Vec::new();
    for _ in 0..48 {
        let (http, url, id) = (s.http.clone(), s.url("/api/v1/keys"), id.clone());
        let (stop, busy) = (stop.clone(), busy.clone());
        flood.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                n += 1;
                let r = http
                    .get(&url)
                    .header("x-api-key", forged_with_id("kg_", &id))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    401 => {}
                    503 => {
                        assert!(r.headers().contains_key("retry-after"));
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
        }));
    }
    // Meanwhile: fresh connections, each a full TLS handshake signed by the hardware key.
    let pem = std::fs::read(s.data_dir().join("tls").join("cert.pem")).unwrap();
    let mut handshakes = 0;
    for _ in 0..200 {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let r = c.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        handshakes += 1;
        if handshakes >= 20 && busy.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    assert!(handshakes >= 20);
    assert!(
        busy.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the flood never filled the one-session, one-slot unauthenticated lane"
    );
    assert!(
        hardware_calls(&s, "tls_sign").await >= signs_before + handshakes,
        "every handshake was signed by the hardware key"
    );
}

#[tokio::test]
async fn a_slowloris_source_cannot_take_the_connections_of_a_legitimate_client() {
    use tokio::io::AsyncWriteExt;
    let s = start_with_env(
        &[
            ("KEYGATE__LIMITS__MAX_CONNECTIONS_PER_SOURCE", "20"),
            ("KEYGATE__LIMITS__MAX_CONNECTIONS", "200"),
        ],
        false,
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    // 100 connections from 127.0.0.3, each sending half a request line and then nothing.
    let mut held = Vec::new();
    for _ in 0..100 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        if let Ok(mut c) = sock.connect(addr.parse().unwrap()).await {
            let _ = c.write_all(b"GET /healthz HT").await;
            held.push(c);
        }
    }
    // The legitimate client from another address is served at once, many times over.
    let c = client_from("127.0.0.1");
    for _ in 0..20 {
        let r = c.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let refused = {
        let text = s.metrics().await;
        text.lines()
            .filter(|l| l.starts_with("keygate_http_connections_refused_total{cap=\"source\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    assert_eq!(refused, 80, "20 trickling connections admitted, 80 refused");
    drop(held);
}

/// HMAC-SHA256 of `msg` under the server's `api-key-mac` key, computed in its SoftHSM
/// token with OpenSC's pkcs11-tool while the server is stopped: how a key or refresh
/// token of the old format was stored.
fn token_hmac(dir: &std::path::Path, key_id_hex: &str, msg: &str) -> Vec<u8> {
    let input = dir.join("hmac-in");
    let output = dir.join("hmac-out");
    std::fs::write(&input, msg).unwrap();
    let pin = std::fs::read_to_string(dir.join("pin")).unwrap();
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", dir.join("softhsm").join("softhsm2.conf"))
        .args(["--module", keygate::dev::SOFTHSM_MODULE])
        .args([
            "--token-label",
            keygate::dev::DEV_TOKEN_LABEL,
            "--login",
            "--pin",
        ])
        .arg(pin.trim())
        .args(["--sign", "--mechanism", "SHA256-HMAC", "--id", key_id_hex])
        .arg("--input-file")
        .arg(&input)
        .arg("--output-file")
        .arg(&output)
        .output()
        .expect("run pkcs11-tool (package opensc)");
    assert!(
        out.status.success(),
        "pkcs11-tool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output).unwrap()
}

#[tokio::test]
async fn old_format_keys_and_refresh_tokens_keep_working_until_regenerated_or_rotated() {
    use base64::Engine;
    let s = Server::start();
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            serde_json::json!({"username": "olda", "password": "correct horse battery", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let admin = s.admin_key.clone();
    let dir = s.stop();
    // Records as a release before public ids wrote them, straight into the store.
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let legacy_key = format!("kg_{}", b64(random_bytes(32)));
    let legacy_refresh = format!("kgr_{}", b64(random_bytes(32)));
    let db = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let (locator, version): (String, i64) = sqlx::query_as(
        "SELECT locator, version FROM key_versions WHERE ring = 'api-key-mac' AND state = 'active'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let locator: Value = serde_json::from_str(&locator).unwrap();
    let key_id = locator["id"].as_str().unwrap().to_string();
    let key_mac = token_hmac(dir.path(), &key_id, &legacy_key);
    let refresh_mac = token_hmac(dir.path(), &key_id, &legacy_refresh);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    sqlx::query(
        "INSERT INTO api_keys (id, name, description, owner, role, mac, mac_ring, mac_version,
                               hint, created_at, expires_at)
         VALUES ('11111111-2222-3333-4444-555555555555', 'old', '', 'root', 'admin', $1,
                 'api-key-mac', $2, $3, $4, $5)",
    )
    .bind(&key_mac)
    .bind(version)
    .bind(&legacy_key[legacy_key.len() - 4..])
    .bind(now)
    .bind(now + 3600)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, username, created_at, expires_at, last_used_at)
         VALUES ('old-session', 'olda', $1, $2, $1)",
    )
    .bind(now)
    .bind(now + 3600)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO refresh_tokens (mac, session_id, mac_ring, mac_version, issued_at)
         VALUES ($1, 'old-session', 'api-key-mac', $2, $3)",
    )
    .bind(&refresh_mac)
    .bind(version)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let s = Server::start_in(dir, Options::default());
    // The old key authenticates, and so does a new one beside it.
    assert_eq!(s.get("/api/v1/keys", &legacy_key).await.status(), 200);
    // The old refresh token is exchanged; its successor is in the new format.
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &legacy_refresh),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let next = body["refresh_token"].as_str().unwrap();
    id_of(next, "kgr_");
    // Presenting the spent old token again is still recognised as reuse.
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &legacy_refresh),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", next)],
        )
        .await;
    assert_eq!(r.status(), 400, "reuse revoked the whole session");
    // Regenerating the old key gives it a new-format secret; the old one stops working.
    let r = s
        .http
        .post(s.url("/api/v1/api-keys/11111111-2222-3333-4444-555555555555/regenerate"))
        .header("x-api-key", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let fresh = body["api_key"].as_str().unwrap();
    id_of(fresh, "kg_");
    assert_eq!(s.get("/api/v1/keys", fresh).await.status(), 200);
    assert_eq!(s.get("/api/v1/keys", &legacy_key).await.status(), 401);
    // With no old-format key left, old-format strings cost no hardware call any more.
    let before = hardware_calls(&s, "mac").await;
    assert_eq!(s.get("/api/v1/keys", &legacy_key).await.status(), 401);
    assert_eq!(hardware_calls(&s, "mac").await, before);
}

#[tokio::test]
async fn each_credential_and_each_signing_ring_has_its_own_quota() {
    let s = start_with_env(
        &[
            (
                "KEYGATE__LIMITS__PER_CREDENTIAL",
                "{ per_minute = 1, burst = 4 }",
            ),
            ("KEYGATE__LIMITS__PER_RING", "{ per_minute = 1, burst = 2 }"),
        ],
        false,
    );
    let (_, key) = s.create_key("admin").await;
    for _ in 0..4 {
        assert_eq!(s.get("/api/v1/keys", &key).await.status(), 200);
    }
    let r = s.get("/api/v1/keys", &key).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:keygate:problem:rate-limited");
    // Another credential is not affected by this one's quota.
    let (_, other) = s.create_key("admin").await;
    // A ring made for the signing service (the access-token ring never signs for callers).
    s.create_ring("gw-sign", "ES256").await;
    let sign = |k: String| {
        let s = &s;
        async move {
            s.post_json(
                "/api/v1/keys/gw-sign/sign",
                &k,
                serde_json::json!({"claims": {"sub": "x"}, "audience": "https://gw.example"}),
            )
            .await
            .status()
            .as_u16()
        }
    };
    // The ring allows two signatures, whoever asks.
    assert_eq!(sign(other.clone()).await, 200);
    assert_eq!(sign(other.clone()).await, 200);
    assert_eq!(sign(other.clone()).await, 429);
}

#[tokio::test]
async fn refused_key_file_assertions_lock_that_access_id_for_bearer_and_client_credentials() {
    let s = start_with_env(
        &[(
            "KEYGATE__LIMITS__CREDENTIAL_FAILURES",
            "{ per_minute = 1, burst = 2 }",
        )],
        false,
    );
    let make = |body: Value| {
        let s = &s;
        async move {
            let r = s.post_json("/api/v1/key-files", &s.admin_key, body).await;
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap().to_string()
        }
    };
    let file = make(serde_json::json!({"description": "locked", "role": "admin"})).await;
    let other = make(serde_json::json!({"description": "other", "role": "admin"})).await;
    let assertion = |file: &str| {
        keygate::key_file_client::assertion(
            file,
            None,
            &keygate::key_file_client::AssertionOptions {
                audience: None,
                ttl: 300,
                now: time::OffsetDateTime::now_utc().unix_timestamp(),
            },
        )
        .unwrap()
    };
    let status = |token: String| {
        let s = &s;
        async move {
            s.get_bearer("/api/v1/key-files", &token)
                .await
                .status()
                .as_u16()
        }
    };
    let once = assertion(&file);
    assert_eq!(status(once.clone()).await, 200);
    // Replays are refused; the third refusal is one more than the burst and locks the id.
    for _ in 0..3 {
        assert_eq!(status(once.clone()).await, 401);
    }
    // Now even a fresh, correctly signed assertion for that accessID is refused...
    assert_eq!(status(assertion(&file)).await, 401);
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion(&file)),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    // ...while another key file is unaffected.
    assert_eq!(status(assertion(&other)).await, 200);
}
