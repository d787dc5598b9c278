//! External OAuth servers (IdPs): registration, and IdP tokens verified end to end.
//!
//! Each test starts a small IdP of its own on loopback: an axum server publishing a JWKS
//! it can rotate (and counting how often keygate fetches it), plus raw TCP servers that
//! hang or send an endless body. Tokens are signed in the test with aws-lc-rs. keygate
//! runs as the real binary with `oauth.allow_insecure_loopback_jwks` so it may fetch
//! `http://127.0.0.1` JWKS URIs.

use crate::common::expect_problem;
use crate::common::server::{Options, Server};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use keygate::hardware::{Algorithm, PublicKey};
use keygate::services::tokens::jws;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const NOW_SLACK: i64 = 600;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// ---------------------------------------------------------------- the test IdP

/// A signing key of the test IdP.
enum SigningKey {
    Ec(EcdsaKeyPair),
    Rsa(signature::RsaKeyPair),
}

struct IdpKey {
    kid: String,
    key: SigningKey,
}

impl IdpKey {
    fn p256(kid: &str) -> IdpKey {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        IdpKey {
            kid: kid.into(),
            key: SigningKey::Ec(pair),
        }
    }

    fn rsa(kid: &str) -> IdpKey {
        let pair = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        IdpKey {
            kid: kid.into(),
            key: SigningKey::Rsa(pair),
        }
    }

    fn public(&self) -> PublicKey {
        match &self.key {
            SigningKey::Ec(p) => {
                PublicKey::ec(Algorithm::ES256, p.public_key().as_ref().to_vec()).unwrap()
            }
            SigningKey::Rsa(p) => {
                use aws_lc_rs::encoding::AsDer;
                let der: aws_lc_rs::encoding::PublicKeyX509Der = p.public_key().as_der().unwrap();
                PublicKey::from_spki_der(Algorithm::RS256, der.as_ref()).unwrap()
            }
        }
    }

    fn jwk(&self) -> Value {
        self.public().jwk(&self.kid)
    }

    fn pem(&self) -> String {
        let der = self.public().spki_der().unwrap();
        pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::LineEnding::LF, &der).unwrap()
    }

    /// A compact JWS with this key; `alg` is what the header says (ES256 or RS256/PS256).
    fn sign(&self, alg: &str, header_extra: Value, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        for (k, v) in header_extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let input = jws::signing_input(&header, claims).unwrap();
        let rng = SystemRandom::new();
        let sig = match &self.key {
            SigningKey::Ec(p) => p.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            SigningKey::Rsa(p) => {
                let padding = if alg == "PS256" {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(padding, &rng, input.as_bytes(), &mut sig).unwrap();
                sig
            }
        };
        jws::finish(input, &sig)
    }

    fn es256(&self, claims: &Value) -> String {
        self.sign("ES256", json!({}), claims)
    }
}

/// A token "signed" with HMAC-SHA256 keyed by `secret` (the classic public-key-as-HMAC
/// key confusion attack).
fn hs256_token(kid: &str, secret: &[u8], claims: &Value) -> String {
    let input =
        jws::signing_input(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), claims).unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    jws::finish(input, tag.as_ref())
}

#[derive(Default)]
struct JwksState {
    jwks: Value,
    fetches: usize,
}

/// The test IdP's JWKS endpoint.
struct Idp {
    base: String,
    state: Arc<Mutex<JwksState>>,
}

impl Idp {
    async fn start() -> Idp {
        let state = Arc::new(Mutex::new(JwksState {
            jwks: json!({"keys": []}),
            fetches: 0,
        }));
        let st = state.clone();
        let app = axum::Router::new()
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let st = st.clone();
                    async move {
                        let mut s = st.lock().unwrap();
                        s.fetches += 1;
                        axum::Json(s.jwks.clone())
                    }
                }),
            )
            .route(
                "/huge",
                axum::routing::get(|| async { vec![b' '; 10 * 1024 * 1024] }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Idp {
            base: format!("http://{addr}"),
            state,
        }
    }

    fn publish(&self, keys: &[&IdpKey]) {
        self.publish_jwks(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}));
    }

    fn publish_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    fn fetches(&self) -> usize {
        self.state.lock().unwrap().fetches
    }

    fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.base)
    }

    /// The issuer this IdP signs as (any absolute URL; keygate never fetches it).
    fn issuer(&self) -> String {
        format!("{}/realms/test", self.base)
    }
}

/// A raw TCP server that accepts connections and never answers.
async fn hanging_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    format!("http://{addr}/jwks")
}

/// A raw TCP server that answers 200 with a chunked body of 10 MiB of JSON whitespace
/// (no Content-Length, so only the reader's own count can stop it).
async fn flooding_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
                for _ in 0..160 {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}/jwks")
}

// ---------------------------------------------------------------- keygate side

fn keygate_for_idps(refetch_interval: &str) -> Server {
    Server::start_with(Options {
        env: vec![
            (
                "KEYGATE__OAUTH__ALLOW_INSECURE_LOOPBACK_JWKS".into(),
                "true".into(),
            ),
            ("KEYGATE__OAUTH__JWKS_FETCH_TIMEOUT".into(), "1s".into()),
            (
                "KEYGATE__OAUTH__JWKS_REFETCH_INTERVAL".into(),
                refetch_interval.into(),
            ),
        ],
        ..Options::default()
    })
}

/// Registers a server as the bootstrap admin; returns its JSON.
async fn register(s: &Server, body: Value) -> Value {
    let r = s
        .post_json("/api/v1/oauth-servers", &s.admin_key, body)
        .await;
    assert_eq!(r.status(), 201, "register: {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn count_servers(s: &Server) -> usize {
    let r = s.get("/api/v1/oauth-servers", &s.admin_key).await;
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().await.unwrap().len()
}

async fn with_idp_header(s: &Server, path: &str, token: &str) -> reqwest::Response {
    s.http
        .get(s.url(path))
        .header("x-oauth2-token", token)
        .send()
        .await
        .unwrap()
}

fn claims(idp: &Idp, sub: &str, roles: Value) -> Value {
    let t = now();
    json!({"iss": idp.issuer(), "sub": sub, "aud": "keygate-api", "iat": t, "nbf": t,
           "exp": t + 300, "jti": uuid::Uuid::new_v4().to_string(), "roles": roles})
}

fn standard_mapping() -> Value {
    json!({"readers": "read-only", "gateways": "gateway", "admins": "admin"})
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn an_idp_token_is_accepted_through_either_header_and_acts_as_its_mapped_role() {
    let idp = Idp::start().await;
    let key = IdpKey::p256("k1");
    idp.publish(&[&key]);
    let s = keygate_for_idps("0s");
    let server = register(
        &s,
        json!({"name": "test-idp", "issuer": idp.issuer(), "jwks_uri": idp.jwks_uri(),
               "audience": "keygate-api", "role_mapping": standard_mapping()}),
    )
    .await;
    let oauth_id = server["oauth_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&oauth_id).is_ok(), "{server}");
    assert_eq!(server["role_claim"], "roles", "the default role claim");
    assert_eq!(server["jwks_uri"], idp.jwks_uri());
    assert!(server.get("public_key_pem").is_none(), "{server}");
    for f in [
        "name",
        "issuer",
        "audience",
        "role_mapping",
        "created_by",
        "created_at",
        "updated_at",
    ] {
        assert!(!server[f].is_null(), "{f} missing in {server}");
    }

    let reader = key.es256(&claims(&idp, "alice", json!(["readers"])));
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &reader).await.status(),
        200
    );
    assert_eq!(s.get_bearer("/api/v1/keys", &reader).await.status(), 200);
    // read-only: GET only.
    let r = s
        .http
        .post(s.url("/api/v1/oauth-servers"))
        .header("x-oauth2-token", &reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 403, "forbidden").await;

    // An admin from the IdP acts as <oauth_id>:<sub>.
    let admin = key.es256(&claims(&idp, "bob", json!("admins")));
    let r = s
        .http
        .post(s.url("/api/v1/oauth-servers"))
        .bearer_auth(&admin)
        .json(
            &json!({"name": "second", "audience": "keygate-api", "issuer": "https://idp2.example",
                      "jwks_uri": "https://idp2.example/jwks", "role_mapping": {"x": "read-only"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["created_by"], format!("{oauth_id}:bob"));

    // Deleting the server ends its tokens at once.
    assert_eq!(
        s.delete(&format!("/api/v1/oauth-servers/{oauth_id}"), &s.admin_key)
            .await
            .status(),
        204
    );
    let r = with_idp_header(&s, "/api/v1/keys", &reader).await;
    expect_problem(r, 401, "unauthenticated").await;
    let r = s.get_bearer("/api/v1/keys", &reader).await;
    expect_problem(r, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_rotated_idp_key_is_fetched_when_its_kid_first_appears() {
    let idp = Idp::start().await;
    let (old, new) = (IdpKey::p256("2024"), IdpKey::rsa("2025"));
    idp.publish(&[&old]);
    let s = keygate_for_idps("0s");
    register(
        &s,
        json!({"name": "rotating", "audience": "keygate-api", "issuer": idp.issuer(), "jwks_uri": idp.jwks_uri(),
               "role_mapping": {"readers": "read-only"}}),
    )
    .await;
    let c = claims(&idp, "alice", json!(["readers"]));
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &old.es256(&c))
            .await
            .status(),
        200
    );
    assert_eq!(idp.fetches(), 1);
    // Cached: no fetch for a known kid.
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &old.es256(&c))
            .await
            .status(),
        200
    );
    assert_eq!(idp.fetches(), 1);

    // The new JWK states no alg, so both RSA algorithms may use it.
    let mut jwk = new.jwk();
    jwk.as_object_mut().unwrap().remove("alg");
    idp.publish_jwks(json!({"keys": [jwk]}));
    for alg in ["RS256", "PS256"] {
        let t = new.sign(alg, json!({}), &c);
        assert_eq!(
            with_idp_header(&s, "/api/v1/keys", &t).await.status(),
            200,
            "{alg}"
        );
    }
    assert_eq!(idp.fetches(), 2, "one refetch for the new kid");
    // The withdrawn key went with that refetch: its tokens now fail, after one more
    // (unrewarded) refetch for its kid.
    let r = with_idp_header(&s, "/api/v1/keys", &old.es256(&c)).await;
    let body = expect_problem(r, 401, "unauthenticated").await;
    assert!(body["detail"].as_str().unwrap().contains("kid"), "{body}");
    assert_eq!(idp.fetches(), 3);
}

#[tokio::test]
async fn jwks_refetches_are_shared_and_rate_limited() {
    let idp = Idp::start().await;
    let key = IdpKey::p256("k1");
    idp.publish(&[&key]);
    let s = keygate_for_idps("1h");
    register(
        &s,
        json!({"name": "limited", "audience": "keygate-api", "issuer": idp.issuer(), "jwks_uri": idp.jwks_uri(),
               "role_mapping": {"readers": "read-only"}}),
    )
    .await;
    // Eight concurrent first requests: one fetch, shared by all of them.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let token = key.es256(&claims(&idp, &format!("user{i}"), json!(["readers"])));
        let (http, url) = (s.http.clone(), s.url("/api/v1/keys"));
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .header("x-oauth2-token", token)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(idp.fetches(), 1);
    // Unknown kids within the interval: refused without another fetch.
    let stranger = IdpKey::p256("made-up");
    for _ in 0..3 {
        let t = stranger.es256(&claims(&idp, "mallory", json!(["readers"])));
        let r = with_idp_header(&s, "/api/v1/keys", &t).await;
        expect_problem(r, 401, "unauthenticated").await;
    }
    assert_eq!(idp.fetches(), 1);
}

#[tokio::test]
async fn tokens_that_do_not_verify_are_refused_with_401() {
    let idp = Idp::start().await;
    let key = IdpKey::p256("k1");
    let rsa = IdpKey::rsa("r1");
    idp.publish(&[&key, &rsa]);
    let s = keygate_for_idps("0s");
    register(
        &s,
        json!({"name": "strict", "issuer": idp.issuer(), "jwks_uri": idp.jwks_uri(),
               "audience": "keygate-api", "role_mapping": {"readers": "read-only"}}),
    )
    .await;
    let good = claims(&idp, "alice", json!(["readers"]));
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let t = now();
    let mut tampered = key.es256(&good);
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let jwk_json = serde_json::to_vec(&key.jwk()).unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "unknown issuer",
            key.es256(&with("iss", json!("https://evil.example"))),
        ),
        (
            "wrong audience",
            key.es256(&with("aud", json!("someone-else"))),
        ),
        ("no audience", key.es256(&without("aud"))),
        ("expired", key.es256(&with("exp", json!(t - NOW_SLACK)))),
        (
            "not yet valid",
            key.es256(&with("nbf", json!(t + NOW_SLACK))),
        ),
        (
            "issued in the future",
            key.es256(&with("iat", json!(t + NOW_SLACK))),
        ),
        ("no exp", key.es256(&without("exp"))),
        ("no sub", key.es256(&without("sub"))),
        ("bad signature", tampered),
        (
            "alg none",
            format!(
                "{}.",
                jws::signing_input(&json!({"alg": "none", "kid": "k1"}), &good).unwrap()
            ) + "c2ln",
        ),
        (
            "HS256 keyed with the JWK",
            hs256_token("k1", &jwk_json, &good),
        ),
        (
            "HS256 keyed with the PEM",
            hs256_token("k1", key.pem().as_bytes(), &good),
        ),
        (
            "ES384 header on a P-256 key",
            key.sign("ES384", json!({}), &good),
        ),
        (
            "RS256 header on an EC kid",
            key.sign("RS256", json!({}), &good),
        ),
        (
            "ES256 header on an RSA kid",
            rsa.sign("ES256", json!({}), &good),
        ),
        (
            "crit header",
            key.sign("ES256", json!({"crit": ["exp"]}), &good),
        ),
        ("garbage", "a.b.c".to_string()),
        // Issue 12 finding 7: only access tokens are credentials.
        (
            "an OIDC ID token (nonce)",
            key.es256(&with("nonce", json!("n-0S6_WzA2Mj"))),
        ),
        (
            "an OIDC ID token (at_hash)",
            key.es256(&with("at_hash", json!("77QmUPtjPfzWtF2AnpK9RQ"))),
        ),
        (
            "a logout token typ",
            key.sign("ES256", json!({"typ": "logout+jwt"}), &good),
        ),
    ];
    for (what, token) in &cases {
        for via_header in [true, false] {
            let r = if via_header {
                with_idp_header(&s, "/api/v1/keys", token).await
            } else {
                s.get_bearer("/api/v1/keys", token).await
            };
            assert_eq!(
                r.status(),
                401,
                "{what} (x-oauth2-token: {via_header}): {}",
                r.text().await.unwrap()
            );
        }
    }
    // The same token, properly made, passes: the cases above fail for their one flaw.
    let ok = key.es256(&good);
    assert_eq!(with_idp_header(&s, "/api/v1/keys", &ok).await.status(), 200);
    let ok_rsa = rsa.sign("RS256", json!({}), &good);
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &ok_rsa).await.status(),
        200
    );
    let signature = ok.rsplit('.').next().unwrap();
    assert!(
        !s.log_text().contains(signature),
        "tokens never reach the log"
    );
}

#[tokio::test]
async fn an_unmapped_role_is_403_and_several_mapped_roles_give_their_union() {
    let idp = Idp::start().await;
    let key = IdpKey::p256("k1");
    idp.publish(&[&key]);
    let s = keygate_for_idps("0s");
    register(
        &s,
        json!({"name": "roles", "audience": "keygate-api", "issuer": idp.issuer(), "jwks_uri": idp.jwks_uri(),
               "role_claim": "realm_access.roles", "role_mapping": standard_mapping()}),
    )
    .await;
    let token = |roles: Value| {
        let mut c = claims(&idp, "carol", Value::Null);
        c.as_object_mut().unwrap().remove("roles");
        c["realm_access"] = json!({"roles": roles});
        key.es256(&c)
    };
    for roles in [json!(["unmapped"]), json!([]), json!("unmapped"), json!(42)] {
        let r = with_idp_header(&s, "/api/v1/keys", &token(roles.clone())).await;
        let body = expect_problem(r, 403, "forbidden").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("maps to no local role"),
            "{roles}: {body}"
        );
    }
    let introspect = |t: String| {
        let s = &s;
        async move {
            s.http
                .post(s.url("/api/v1/auth/introspect"))
                .header("x-oauth2-token", t)
                .form(&[("token", "kg_unknown")])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // One role: read-only reads keys but may not introspect; gateway the other way round.
    let reader = token(json!(["readers", "unmapped"]));
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &reader).await.status(),
        200
    );
    assert_eq!(introspect(reader).await, 403);
    let gateway = token(json!("gateways"));
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &gateway).await.status(),
        403
    );
    assert_eq!(introspect(gateway).await, 200);
    // Both: the union of their permissions.
    let both = token(json!(["readers", "gateways"]));
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &both).await.status(),
        200
    );
    assert_eq!(introspect(both).await, 200);
}

#[tokio::test]
async fn a_hanging_or_flooding_jwks_is_refused_and_keygate_stays_healthy() {
    let idp = Idp::start().await;
    let key = IdpKey::p256("k1");
    idp.publish(&[&key]);
    let s = keygate_for_idps("0s");
    let hang = hanging_server().await;
    let flood = flooding_server().await;
    let sized = format!("{}/huge", idp.base);
    for (name, uri) in [
        ("hang-idp", &hang),
        ("flood-idp", &flood),
        ("sized-idp", &sized),
    ] {
        register(
            &s,
            json!({"name": name, "audience": "keygate-api", "issuer": format!("https://{name}.example"), "jwks_uri": uri,
                   "role_mapping": {"readers": "read-only"}}),
        )
        .await;
    }
    register(
        &s,
        json!({"name": "good-idp", "audience": "keygate-api", "issuer": idp.issuer(), "jwks_uri": idp.jwks_uri(),
               "role_mapping": {"readers": "read-only"}}),
    )
    .await;
    for name in ["hang-idp", "flood-idp", "sized-idp"] {
        let mut c = claims(&idp, "alice", json!(["readers"]));
        c["iss"] = json!(format!("https://{name}.example"));
        let r = with_idp_header(&s, "/api/v1/keys", &key.es256(&c)).await;
        expect_problem(r, 401, "unauthenticated").await;
        assert_eq!(
            s.http.get(s.url("/healthz")).send().await.unwrap().status(),
            200
        );
        // The failure is logged with the server's name (the log is read asynchronously).
        let mut logged = false;
        for _ in 0..100 {
            let log = s.log_text();
            if log
                .lines()
                .any(|l| l.contains("JWKS fetch failed") && l.contains(name))
            {
                logged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            logged,
            "no fetch failure logged for {name}:\n{}",
            s.log_text()
        );
    }
    // Other IdPs are unaffected.
    let t = key.es256(&claims(&idp, "alice", json!(["readers"])));
    assert_eq!(with_idp_header(&s, "/api/v1/keys", &t).await.status(), 200);
    let log = s.log_text();
    assert!(log.contains("larger than"), "{log}");
    assert!(
        !log.contains(t.rsplit('.').next().unwrap()),
        "no token in the log"
    );
}

#[tokio::test]
async fn a_server_registered_with_a_pem_key_verifies_its_tokens() {
    let rsa = IdpKey::rsa("ignored");
    let ec = IdpKey::p256("ignored");
    let s = keygate_for_idps("0s");
    let server = register(
        &s,
        json!({"name": "pem-rsa", "audience": "keygate-api", "issuer": "https://pem.example", "public_key_pem": rsa.pem(),
               "role_claim": "groups", "role_mapping": {"kg-readers": "read-only"}}),
    )
    .await;
    assert_eq!(
        server["public_key_pem"].as_str().unwrap().trim(),
        rsa.pem().trim()
    );
    assert!(server.get("jwks_uri").is_none());
    let t = now();
    let c = json!({"iss": "https://pem.example", "aud": "keygate-api", "sub": "svc-1", "exp": t + 60,
                   "groups": ["kg-readers"]});
    for alg in ["RS256", "PS256"] {
        let token = rsa.sign(alg, json!({}), &c);
        assert_eq!(
            s.get_bearer("/api/v1/keys", &token).await.status(),
            200,
            "{alg}"
        );
    }
    // Another key, the PEM as an HMAC secret, and a wrong alg are all refused.
    for token in [
        ec.es256(&c),
        hs256_token("x", rsa.pem().as_bytes(), &c),
        rsa.sign("ES256", json!({}), &c),
    ] {
        let r = with_idp_header(&s, "/api/v1/keys", &token).await;
        expect_problem(r, 401, "unauthenticated").await;
    }
}

#[tokio::test]
async fn bad_registrations_are_400_and_store_nothing() {
    let s = keygate_for_idps("0s");
    let key = IdpKey::p256("k");
    let base = json!({"name": "idp", "audience": "keygate-api", "issuer": "https://idp.example",
                      "jwks_uri": "https://idp.example/jwks", "role_mapping": {"r": "read-only"}});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let private_pem = {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        pkcs8::der::pem::encode_string("PRIVATE KEY", pkcs8::LineEnding::LF, der.as_ref()).unwrap()
    };
    let mut pem_only = base.clone();
    pem_only.as_object_mut().unwrap().remove("jwks_uri");
    let pem = |p: &str| {
        let mut b = pem_only.clone();
        b["public_key_pem"] = json!(p);
        b
    };
    let cases = vec![
        (
            "malformed PEM",
            pem("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"),
        ),
        ("not PEM at all", pem("hello")),
        ("private key PEM", pem(&private_pem)),
        ("both key sources", with("public_key_pem", json!(key.pem()))),
        ("neither key source", pem_only.clone()),
        (
            "http JWKS off loopback",
            with("jwks_uri", json!("http://idp.example/jwks")),
        ),
        ("relative JWKS", with("jwks_uri", json!("/jwks"))),
        ("issuer not a URL", with("issuer", json!("idp.example"))),
        (
            "issuer not http(s)",
            with("issuer", json!("urn:idp:example")),
        ),
        (
            "keygate's own issuer",
            with("issuer", json!(s.base.clone())),
        ),
        (
            "unknown local role",
            with("role_mapping", json!({"r": "no-such-role"})),
        ),
        ("empty mapping", with("role_mapping", json!({}))),
        ("empty name", with("name", json!(""))),
        ("empty role claim", with("role_claim", json!(""))),
        ("wrong type", with("role_mapping", json!(["read-only"]))),
        ("unknown field", with("client_secret", json!("x"))),
        ("no audience", {
            let mut b = base.clone();
            b.as_object_mut().unwrap().remove("audience");
            b
        }),
        (
            "audience with the check off",
            with("audience_check", json!(false)),
        ),
    ];
    for (what, body) in cases {
        let r = s
            .post_json("/api/v1/oauth-servers", &s.admin_key, body)
            .await;
        let problem = expect_problem(r, 400, "invalid-request").await;
        eprintln!("{what}: {}", problem["detail"]);
    }
    assert_eq!(count_servers(&s).await, 0, "nothing stored");

    // A valid one; then duplicates conflict, and a bad PATCH changes nothing.
    let created = register(&s, base.clone()).await;
    let id = created["oauth_id"].as_str().unwrap();
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &s.admin_key,
            with("issuer", json!("https://other.example")),
        )
        .await;
    expect_problem(r, 409, "conflict").await;
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &s.admin_key,
            with("name", json!("other")),
        )
        .await;
    expect_problem(r, 409, "conflict").await;
    let path = format!("/api/v1/oauth-servers/{id}");
    for patch in [
        json!({"role_mapping": {"r": "no-such-role"}}),
        json!({"public_key_pem": "nope"}),
        json!({"public_key_pem": key.pem(), "jwks_uri": "https://idp.example/jwks"}),
        json!({"issuer": "not a url"}),
        json!({"jwks_uri": "http://idp.example/jwks"}),
    ] {
        let r = s.patch_json(&path, &s.admin_key, patch.clone()).await;
        expect_problem(r, 400, "invalid-request").await;
    }
    let now_stored: Value = s.get_json(&path, &s.admin_key).await;
    assert_eq!(now_stored, created, "bad patches changed nothing");
    assert_eq!(count_servers(&s).await, 1);
}

#[tokio::test]
async fn registration_needs_oauth_servers_write_and_a_role_covering_the_mapping() {
    // A keygate without the loopback exception: http JWKS URIs are refused outright.
    let s = Server::start();
    let (_, ro) = s.create_key("read-only").await;
    let (_, help) = s.create_key("help-desk").await;
    let (_, admin) = s.create_key("admin").await;
    let body = json!({"name": "corp", "audience": "keygate-api", "issuer": "https://login.corp.example/realms/x",
                      "jwks_uri": "https://login.corp.example/realms/x/certs",
                      "role_mapping": {"kg-admin": "admin"}});
    for caller in [&ro, &help] {
        let r = s
            .post_json("/api/v1/oauth-servers", caller, body.clone())
            .await;
        expect_problem(r, 403, "forbidden").await;
    }
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &admin,
            json!({"name": "escalate", "audience": "keygate-api", "issuer": "https://evil.example",
                   "jwks_uri": "https://evil.example/jwks", "role_mapping": {"x": "super-admin"}}),
        )
        .await;
    expect_problem(r, 403, "forbidden").await;
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &admin,
            json!({"name": "loop", "audience": "keygate-api", "issuer": "https://loop.example",
                   "jwks_uri": "http://127.0.0.1:9/jwks", "role_mapping": {"x": "read-only"}}),
        )
        .await;
    expect_problem(r, 400, "invalid-request").await;

    let r = s.post_json("/api/v1/oauth-servers", &admin, body).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let path = format!(
        "/api/v1/oauth-servers/{}",
        created["oauth_id"].as_str().unwrap()
    );
    // read-only reads, and nothing more.
    assert_eq!(s.get("/api/v1/oauth-servers", &ro).await.status(), 200);
    assert_eq!(s.get(&path, &ro).await.status(), 200);
    expect_problem(
        s.patch_json(&path, &ro, json!({"name": "x"})).await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(s.delete(&path, &help).await, 403, "forbidden").await;

    // PATCH: 200 with the object; audience set, then removed with null.
    let r = s
        .patch_json(
            &path,
            &admin,
            json!({"audience": "api://keygate", "role_claim": "groups"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["audience"].as_str(), v["role_claim"].as_str()),
        (Some("api://keygate"), Some("groups"))
    );
    // Removing the audience alone is refused: opting out of the check is explicit.
    expect_problem(
        s.patch_json(&path, &admin, json!({"audience": null})).await,
        400,
        "invalid-request",
    )
    .await;
    let v: Value = s
        .patch_json(
            &path,
            &admin,
            json!({"audience": null, "audience_check": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(v.get("audience").is_none(), "{v}");
    assert_eq!(v["audience_check"], false);
    assert_eq!(v["role_mapping"], json!({"kg-admin": "admin"}));
    // Switching to a PEM key drops the JWKS URI.
    let pem = IdpKey::p256("k").pem();
    let v: Value = s
        .patch_json(&path, &admin, json!({"public_key_pem": pem}))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        v.get("jwks_uri").is_none() && v["public_key_pem"].is_string(),
        "{v}"
    );

    // A super-admin's IdP is out of an admin's reach.
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &s.admin_key,
            json!({"name": "root-idp", "audience": "keygate-api", "issuer": "https://root.example",
                   "jwks_uri": "https://root.example/jwks", "role_mapping": {"x": "super-admin"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let root_idp: Value = r.json().await.unwrap();
    let root_path = format!(
        "/api/v1/oauth-servers/{}",
        root_idp["oauth_id"].as_str().unwrap()
    );
    expect_problem(
        s.patch_json(
            &root_path,
            &admin,
            json!({"jwks_uri": "https://evil.example/jwks"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(s.delete(&root_path, &admin).await, 403, "forbidden").await;

    assert_eq!(s.delete(&path, &admin).await.status(), 204);
    expect_problem(s.get(&path, &admin).await, 404, "not-found").await;
    expect_problem(s.delete(&path, &admin).await, 404, "not-found").await;
}

#[tokio::test]
async fn deleting_a_server_can_be_gated_by_approvals_and_runs_when_approved() {
    let rsa = IdpKey::rsa("ignored");
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__APPROVALS__DELETE-OAUTH-SERVER__REQUIRED".into(),
            "1".into(),
        )],
        ..Options::default()
    });
    let server = register(
        &s,
        json!({"name": "gated", "audience": "keygate-api", "issuer": "https://gated.example", "public_key_pem": rsa.pem(),
               "role_mapping": {"r": "read-only"}}),
    )
    .await;
    let id = server["oauth_id"].as_str().unwrap();
    let r = s
        .delete(&format!("/api/v1/oauth-servers/{id}"), &s.admin_key)
        .await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["operation"], "delete-oauth-server");
    assert_eq!(a["state"], "pending");
    assert_eq!(
        count_servers(&s).await,
        1,
        "nothing deleted before the approval"
    );
    // Another super-admin approves; the server is gone.
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "second", "role": "super-admin", "owner": "root"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    // The owner is root, the same principal as the requester: it may not approve.
    let same = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let approval = a["approval_id"].as_str().unwrap();
    let r = s
        .post_json(
            &format!("/api/v1/approvals/{approval}/approve"),
            &same,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 403);
    // A second person approves with a key of their own (one the admin made for them
    // would not count).
    let other = s.principal("second-admin", "super-admin").await;
    let r = s
        .post_json(
            &format!("/api/v1/approvals/{approval}/approve"),
            &other,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["state"], "executed", "{done}");
    assert_eq!(count_servers(&s).await, 0);
}

#[tokio::test]
async fn introspection_recognises_idp_tokens() {
    let rsa = IdpKey::rsa("ignored");
    let s = keygate_for_idps("0s");
    let server = register(
        &s,
        json!({"name": "intro", "audience": "keygate-api", "issuer": "https://intro.example", "public_key_pem": rsa.pem(),
               "role_mapping": {"readers": "read-only"}}),
    )
    .await;
    let id = server["oauth_id"].as_str().unwrap();
    let t = now();
    let token = rsa.sign(
        "RS256",
        json!({}),
        &json!({"iss": "https://intro.example", "aud": "keygate-api", "sub": "svc-9", "exp": t + 60, "iat": t,
                "roles": ["readers"]}),
    );
    let introspect = |tok: String| {
        let s = &s;
        async move {
            s.post_form(
                "/api/v1/auth/introspect",
                Some(("x-api-key", &s.admin_key)),
                &[("token", &tok)],
            )
            .await
            .json::<Value>()
            .await
            .unwrap()
        }
    };
    let v = introspect(token).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["token_type"], "idp_token");
    assert_eq!(v["sub"], format!("{id}:svc-9"));
    assert_eq!(v["role"], "read-only");
    assert_eq!(v["iss"], "https://intro.example");
    let expired = rsa.sign(
        "RS256",
        json!({}),
        &json!({"iss": "https://intro.example", "aud": "keygate-api", "sub": "svc-9", "exp": t - 600, "iat": t - 900,
                "roles": ["readers"]}),
    );
    assert_eq!(introspect(expired).await, json!({"active": false}));
}

/// Issue 12 finding 7: an IdP registered without an audience accepted any token it issued
/// to any client. The audience is now required; `audience_check: false` is the explicit
/// opt-out, and keygate says so in its log at registration and at every start.
#[tokio::test]
async fn an_idp_needs_an_audience_unless_it_opts_out_explicitly_and_loudly() {
    let idp = Idp::start().await;
    let key = IdpKey::p256("k1");
    idp.publish(&[&key]);
    let s = keygate_for_idps("0s");
    let body = json!({"name": "lax", "issuer": idp.issuer(), "jwks_uri": idp.jwks_uri(),
                      "role_mapping": {"readers": "read-only"}});
    let problem = expect_problem(
        s.post_json("/api/v1/oauth-servers", &s.admin_key, body.clone())
            .await,
        400,
        "invalid-request",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("audience"),
        "{problem}"
    );
    let mut opt_out = body.clone();
    opt_out["audience_check"] = json!(false);
    let created = register(&s, opt_out).await;
    assert_eq!(created["audience_check"], false);
    // A token issued to some other client is accepted: that is what opting out means.
    let mut c = claims(&idp, "alice", json!(["readers"]));
    c["aud"] = json!("some-other-client");
    assert_eq!(
        with_idp_header(&s, "/api/v1/keys", &key.es256(&c))
            .await
            .status(),
        200
    );
    assert!(
        s.log_containing("audience_check = false")
            .await
            .contains("audience_check = false"),
        "the opt-out is logged at registration"
    );
    // ... and at every start.
    let dir = s.stop();
    let s = Server::start_in(
        dir,
        Options {
            env: vec![(
                "KEYGATE__OAUTH__ALLOW_INSECURE_LOOPBACK_JWKS".into(),
                "true".into(),
            )],
            ..Options::default()
        },
    );
    assert!(
        s.log_containing("opted out of the audience check")
            .await
            .contains("opted out of the audience check"),
        "{}",
        s.log_text()
    );
}

/// Presents a token of `issuer` signed by `key`; returns the status.
async fn attempt(s: &Server, key: &IdpKey, issuer: &str) -> reqwest::StatusCode {
    let t = now();
    let c = json!({"iss": issuer, "sub": "x", "aud": "keygate-api", "roles": ["readers"],
                   "exp": t + 300, "iat": t});
    s.get_bearer("/api/v1/keys", &key.es256(&c)).await.status()
}

/// A TCP listener on 127.0.0.1 that counts the connections made to it (and closes them).
async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(sock);
        }
    });
    (port, count)
}

/// Issue 12 finding 12: JWKS (and CRL) URLs reached any host, a blind SSRF by an admin.
/// Outbound fetches now go through one client whose policy refuses loopback,
/// link-local and private addresses unless `outbound.allow` names them, checked on the
/// resolved address: a host name that resolves to loopback gets nowhere either.
#[tokio::test]
async fn jwks_fetches_never_reach_internal_addresses_unless_allowed() {
    let (port, connections) = counting_listener().await;
    let key = IdpKey::p256("k1");
    // Default policy, no loopback test flag.
    let s = Server::start();
    for (name, uri) in [
        ("literal", format!("https://127.0.0.1:{port}/jwks")),
        ("by-name", format!("https://localhost:{port}/jwks")),
        ("mapped", format!("https://[::ffff:127.0.0.1]:{port}/jwks")),
    ] {
        let issuer = format!("https://{name}.example");
        register(
            &s,
            json!({"name": name, "issuer": issuer, "jwks_uri": uri, "audience": "keygate-api",
                   "role_mapping": {"readers": "read-only"}}),
        )
        .await;
        assert_eq!(attempt(&s, &key, &issuer).await, 401, "{name}");
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection reached the internal address"
    );
    let log = s
        .log_containing("127.0.0.1 is a loopback, link-local, private or reserved address")
        .await;
    assert!(
        log.contains("127.0.0.1 is a loopback, link-local, private or reserved address"),
        "{log}"
    );
    let log = s.log_containing("resolves only to refused addresses").await;
    assert!(log.contains("resolves only to refused addresses"), "{log}");
    drop(s);

    // outbound.allow opens it: now the fetch connects (and fails at TLS, which is fine).
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__OUTBOUND__ALLOW".into(),
            r#"["127.0.0.0/8"]"#.into(),
        )],
        ..Options::default()
    });
    register(
        &s,
        json!({"name": "allowed", "issuer": "https://allowed.example",
               "jwks_uri": format!("https://localhost:{port}/jwks"), "audience": "keygate-api",
               "role_mapping": {"readers": "read-only"}}),
    )
    .await;
    assert_eq!(attempt(&s, &key, "https://allowed.example").await, 401);
    assert!(connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    drop(s);

    // outbound.deny wins even over the loopback test flag.
    let before = connections.load(std::sync::atomic::Ordering::SeqCst);
    let s = Server::start_with(Options {
        env: vec![
            (
                "KEYGATE__OAUTH__ALLOW_INSECURE_LOOPBACK_JWKS".into(),
                "true".into(),
            ),
            ("KEYGATE__OUTBOUND__DENY".into(), r#"["127.0.0.1"]"#.into()),
        ],
        ..Options::default()
    });
    register(
        &s,
        json!({"name": "denied", "issuer": "https://denied.example",
               "jwks_uri": format!("http://127.0.0.1:{port}/jwks"), "audience": "keygate-api",
               "role_mapping": {"readers": "read-only"}}),
    )
    .await;
    assert_eq!(attempt(&s, &key, "https://denied.example").await, 401);
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    let log = s.log_containing("is in outbound.deny").await;
    assert!(log.contains("is in outbound.deny"), "{log}");
}

/// Issue 12, finding 5: a custom token minted from an IdP token is bound to the IdP as
/// registered: re-keying the server, or deleting it, ends the token at once.
#[tokio::test]
async fn a_token_minted_from_an_idp_token_ends_when_the_idp_is_rekeyed_or_deleted() {
    let first = IdpKey::p256("ignored");
    let second = IdpKey::p256("ignored");
    let s = keygate_for_idps("0s");
    let server = register(
        &s,
        json!({"name": "pem-ec", "issuer": "https://pem-ec.example", "public_key_pem": first.pem(), "audience": "keygate-api",
               "role_claim": "groups", "role_mapping": {"kg-admins": "admin"}}),
    )
    .await;
    let oauth_id = server["oauth_id"].as_str().unwrap().to_string();
    let mint = || async {
        let t = now();
        let idp_token = first.es256(
            &json!({"iss": "https://pem-ec.example", "sub": "ops-1", "aud": "keygate-api",
            "exp": t + 600, "groups": ["kg-admins"]}),
        );
        let r = s
            .http
            .post(s.url("/api/v1/auth/token"))
            .header("x-oauth2-token", idp_token)
            .json(&json!({"grant_type": "custom_token", "subject": "svc", "expires_in": 300, "role": "read-only"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let token = mint().await;
    assert_eq!(s.get_bearer("/api/v1/keys", &token).await.status(), 200);
    let r = s
        .patch_json(
            &format!("/api/v1/oauth-servers/{oauth_id}"),
            &s.admin_key,
            json!({"public_key_pem": second.pem()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    expect_problem(
        s.get_bearer("/api/v1/keys", &token).await,
        401,
        "unauthenticated",
    )
    .await;

    // Back to the first key, a fresh token; then the server is deleted.
    let r = s
        .patch_json(
            &format!("/api/v1/oauth-servers/{oauth_id}"),
            &s.admin_key,
            json!({"public_key_pem": first.pem()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let token = mint().await;
    assert_eq!(s.get_bearer("/api/v1/keys", &token).await.status(), 200);
    let r = s
        .delete(&format!("/api/v1/oauth-servers/{oauth_id}"), &s.admin_key)
        .await;
    assert_eq!(r.status(), 204);
    expect_problem(
        s.get_bearer("/api/v1/keys", &token).await,
        401,
        "unauthenticated",
    )
    .await;
}

/// Issue 12, finding 3 through an IdP: a super-admin registers an IdP that maps its
/// tokens to super-admin and mints tokens for made-up subjects. A role rule names
/// enrolled accounts, so none of those subjects approves.
#[tokio::test]
async fn idp_subjects_mapped_to_an_approver_role_do_not_approve_by_that_alone() {
    let key = IdpKey::p256("ignored");
    let s = keygate_for_idps("0s");
    register(
        &s,
        json!({"name": "own-idp", "issuer": "https://own-idp.example", "public_key_pem": key.pem(), "audience": "keygate-api",
               "role_claim": "groups", "role_mapping": {"sa": "super-admin"}}),
    )
    .await;
    s.create_ring("web", "ES256").await;
    let r = s
        .post_json(
            "/api/v1/keys/web/rotate",
            &s.admin_key,
            json!({"immediate": true}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    for sub in ["sock-puppet-1", "sock-puppet-2"] {
        let t = now();
        let token = key.es256(
            &json!({"iss": "https://own-idp.example", "sub": sub, "aud": "keygate-api",
            "exp": t + 300, "groups": ["sa"]}),
        );
        let r = s
            .http
            .post(s.url(&format!("/api/v1/approvals/{id}/approve")))
            .header("x-oauth2-token", token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_problem(r, 403, "forbidden").await;
    }
    let a: Value = s
        .get_json(&format!("/api/v1/approvals/{id}"), &s.admin_key)
        .await;
    assert_eq!(a["state"], "pending");
}

/// Found by the attack review of the merged tree: an approver named in the configuration
/// by IdP subject (`principal:<oauth_id>:<sub>`) was not among the names a re-key of that
/// IdP must be allowed to speak for, so an admin could swap the IdP's key, mint tokens for
/// two configured approvers and vote twice. Re-keying the IdP is now refused.
#[tokio::test]
async fn rekeying_an_idp_whose_subjects_are_configured_approvers_is_refused() {
    let first = IdpKey::p256("ignored");
    let second = IdpKey::p256("ignored");
    let s = Server::start();
    let server = register(
        &s,
        json!({"name": "corp", "issuer": "https://corp.example", "public_key_pem": first.pem(),
               "audience": "keygate-api", "role_mapping": {"kg": "read-only"}}),
    )
    .await;
    let oauth_id = server["oauth_id"].as_str().unwrap().to_string();
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "adam", "password": crate::common::server::PASSWORD, "role": "admin"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let dir = s.stop();
    let s = Server::start_in(
        dir,
        Options {
            env: vec![(
                "KEYGATE__APPROVALS__REGENERATE__APPROVERS".into(),
                format!("principal:{oauth_id}:alice"),
            )],
            ..Options::default()
        },
    );
    let adam = s.login("adam", crate::common::server::PASSWORD).await;
    let r = s
        .send_bearer(
            reqwest::Method::PATCH,
            &format!("/api/v1/oauth-servers/{oauth_id}"),
            &adam,
            json!({"public_key_pem": second.pem()}),
        )
        .await;
    let p = expect_problem(r, 403, "forbidden").await;
    assert!(p["detail"].as_str().unwrap().contains("approver"), "{p}");
}
