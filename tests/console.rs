//! The admin console's server-side rules (docs/console.md), over HTTP against a spawned
//! keygate: the cookie and its attributes, the API and the console refusing each
//! other's credentials, CSRF and Origin checks, read-only sessions, stored XSS rendered
//! inert, garbage cookies costing no store write, sign-out and the session cap.

use crate::common::server::{Server, PASSWORD};
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::json;

const COOKIE_NAME: &str = "__Host-keygate_console";

/// A client that shows redirects and keeps no cookies of its own.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The origin of the server, as a browser on its pages sends it.
fn origin(s: &Server) -> String {
    s.base.trim_end_matches('/').to_string()
}

/// A signed-in console session: the cookie header value and the session's CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in_form(s: &Server, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(s.url("/console/sign-in"))
        .header(ORIGIN, origin(s))
        .form(form)
        .send()
        .await
        .expect("sign-in")
}

fn cookie_of(r: &reqwest::Response) -> String {
    let set = r
        .headers()
        .get(SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .expect("ascii");
    set.split(';').next().expect("pair").to_string()
}

async fn csrf_of(s: &Server, cookie: &str) -> String {
    let body = page(s, cookie, "/console/sessions").await.1;
    let at = body.find("name=\"_csrf\" value=\"").expect("csrf field") + 20;
    body[at..].split('"').next().expect("value").to_string()
}

async fn page(s: &Server, cookie: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(s.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn with_key(s: &Server, key: &str) -> Session {
    let r = sign_in_form(s, &[("method", "api-key"), ("api_key", key)]).await;
    assert_eq!(r.status(), 303, "break-glass sign-in");
    let cookie = cookie_of(&r);
    let csrf = csrf_of(s, &cookie).await;
    Session { cookie, csrf }
}

async fn with_password(s: &Server, user: &str) -> Session {
    let r = sign_in_form(
        s,
        &[
            ("method", "password"),
            ("username", user),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), 303, "password sign-in of {user}");
    let cookie = cookie_of(&r);
    let csrf = csrf_of(s, &cookie).await;
    Session { cookie, csrf }
}

async fn post(
    s: &Server,
    sess: &Session,
    path: &str,
    origin_header: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(s.url(path)).header(COOKIE, &sess.cookie);
    if let Some(o) = origin_header {
        req = req.header(ORIGIN, o);
    }
    req.form(form).send().await.expect("post")
}

async fn key_names(s: &Server) -> Vec<String> {
    let v: Vec<serde_json::Value> = s.get_json("/api/v1/api-keys", &s.admin_key).await;
    v.iter()
        .map(|k| k["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn audit_len(s: &Server) -> usize {
    let v: Vec<serde_json::Value> = s.get_json("/api/v1/audit?limit=1000", &s.admin_key).await;
    v.len()
}

#[tokio::test]
async fn the_session_cookie_is_host_only_secure_httponly_strict_and_stored_as_a_hash() {
    let s = Server::start();
    let r = sign_in_form(&s, &[("method", "api-key"), ("api_key", &s.admin_key)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/console/");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.starts_with(&format!("{COOKIE_NAME}=kgc_")), "{set}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(
            set.split("; ").any(|a| a == attr),
            "{attr} missing in {set}"
        );
    }
    assert!(
        !set.contains("Domain"),
        "a __Host- cookie has no Domain: {set}"
    );
    let value = cookie_of(&r).split_once('=').unwrap().1.to_string();
    // The store keeps a hash only: the raw value is nowhere in the database files.
    for f in ["keygate.db", "keygate.db-wal"] {
        if let Ok(bytes) = std::fs::read(s.data_dir().join(f)) {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "the raw cookie value is stored in {f}"
            );
        }
    }
}

#[tokio::test]
async fn every_console_response_carries_the_security_headers() {
    let s = Server::start();
    let sess = with_key(&s, &s.admin_key).await;
    for path in [
        "/console/sign-in",
        "/console/api-keys",
        "/console/assets/console.css",
        "/console/no-such-page",
    ] {
        let r = client()
            .get(s.url(path))
            .header(COOKIE, &sess.cookie)
            .send()
            .await
            .unwrap();
        let h = r.headers();
        assert_eq!(
            h["content-security-policy"],
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
    }
    // No inline script or style in a page.
    let body = page(&s, &sess.cookie, "/console/api-keys").await.1;
    assert!(
        !body.contains("<script>") && !body.contains("style="),
        "{body}"
    );
    assert!(!body.contains("<style"), "{body}");
}

#[tokio::test]
async fn the_api_refuses_the_console_cookie() {
    let s = Server::start();
    let sess = with_key(&s, &s.admin_key).await;
    let r = client()
        .get(s.url("/api/v1/api-keys"))
        .header(COOKIE, &sess.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(s.url("/api/v1/api-keys"))
        .header(COOKIE, &sess.cookie)
        .header(ORIGIN, origin(&s))
        .json(&json!({"name": "via-cookie", "role": "read-only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!key_names(&s).await.contains(&"via-cookie".to_string()));
}

#[tokio::test]
async fn the_console_refuses_bearer_tokens_and_api_key_headers() {
    let s = Server::start();
    let token = {
        s.principal("alice", "admin").await;
        s.login("alice", PASSWORD).await
    };
    for (h, v) in [
        ("authorization", format!("Bearer {token}")),
        ("authorization", format!("Bearer {}", s.admin_key)),
        ("x-api-key", s.admin_key.clone()),
    ] {
        let r = client()
            .get(s.url("/console/api-keys"))
            .header(h, &v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{h}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("bootstrap"), "the page leaked through {h}");
    }
    // Even next to a valid cookie.
    let sess = with_key(&s, &s.admin_key).await;
    let r = client()
        .get(s.url("/console/api-keys"))
        .header(COOKIE, &sess.cookie)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn forms_without_this_sessions_csrf_token_or_from_another_origin_are_refused() {
    let s = Server::start();
    let sess = with_key(&s, &s.admin_key).await;
    let form = |name: &'static str, csrf: &str| {
        vec![
            ("_csrf", csrf.to_string()),
            ("name", name.to_string()),
            ("role", "read-only".to_string()),
        ]
    };
    let send = |f: Vec<(&'static str, String)>, o: Option<String>| {
        let mut req = client()
            .post(s.url("/console/api-keys"))
            .header(COOKIE, &sess.cookie);
        if let Some(o) = o {
            req = req.header(ORIGIN, o);
        }
        req.form(&f).send()
    };
    let other = "http://127.0.0.1:1".to_string();
    let r = send(form("cross-origin", &sess.csrf), Some(other))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = send(form("no-origin", &sess.csrf), None).await.unwrap();
    assert_eq!(r.status(), 403);
    // `Origin: null` (what a browser sends under no-referrer) needs Sec-Fetch-Site.
    let r = send(form("null-origin", &sess.csrf), Some("null".into()))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = send(form("no-token", ""), Some(origin(&s))).await.unwrap();
    assert_eq!(r.status(), 403);
    let other_session = with_key(&s, &s.admin_key).await;
    let r = send(form("foreign-token", &other_session.csrf), Some(origin(&s)))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client()
        .post(s.url("/console/api-keys"))
        .header(COOKIE, &sess.cookie)
        .header(ORIGIN, origin(&s))
        .header("sec-fetch-site", "same-site")
        .form(&form("same-site", &sess.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let names = key_names(&s).await;
    for n in [
        "cross-origin",
        "no-origin",
        "no-token",
        "foreign-token",
        "same-site",
    ] {
        assert!(!names.contains(&n.to_string()), "{n} was created");
    }
    // The same form, from the console's origin with its token, works.
    let r = send(form("good", &sess.csrf), Some(origin(&s)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("kg_"), "the new secret is shown once");
    assert!(key_names(&s).await.contains(&"good".to_string()));
}

#[tokio::test]
async fn a_read_only_session_shows_no_write_control_and_a_forged_post_is_refused() {
    let s = Server::start();
    s.principal("rita", "read-only").await;
    let sess = with_password(&s, "rita").await;
    let (status, body) = page(&s, &sess.cookie, "/console/api-keys").await;
    assert_eq!(status, 200);
    assert!(!body.contains("Add an API key"), "{body}");
    assert!(!body.contains("/regenerate"), "{body}");
    let r = post(
        &s,
        &sess,
        "/console/api-keys",
        Some(&origin(&s)),
        &[
            ("_csrf", &sess.csrf),
            ("name", "forged"),
            ("role", "read-only"),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(!key_names(&s).await.contains(&"forged".to_string()));
    // Read-only may still sign out.
    let r = post(
        &s,
        &sess,
        "/console/sign-out",
        Some(&origin(&s)),
        &[("_csrf", &sess.csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn stored_xss_payloads_are_rendered_inert() {
    let s = Server::start();
    let payload = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": payload, "description": format!("\"'>{payload}"), "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let sess = with_key(&s, &s.admin_key).await;
    for path in ["/console/api-keys", "/console/audit"] {
        let (status, body) = page(&s, &sess.cookie, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.contains("<script>alert"), "{path}: {body}");
        assert!(!body.contains("<img src=x"), "{path}");
    }
    let body = page(&s, &sess.cookie, "/console/api-keys").await.1;
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    // A filter echoed back is inert too.
    let body = page(
        &s,
        &sess.cookie,
        "/console/api-keys?q=%22%3E%3Cscript%3Ealert(3)%3C/script%3E",
    )
    .await
    .1;
    assert!(!body.contains("<script>alert(3)"), "{body}");
}

#[tokio::test]
async fn a_garbage_cookie_is_sent_to_sign_in_and_writes_nothing() {
    let s = Server::start();
    let before = audit_len(&s).await;
    let garbage = [
        format!("{COOKIE_NAME}=garbage"),
        format!("{COOKIE_NAME}=kgc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        format!("{COOKIE_NAME}=kgc_{}", "x".repeat(5000)),
    ];
    for c in &garbage {
        let r = client()
            .get(s.url("/console/api-keys"))
            .header(COOKIE, c)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()[LOCATION], "/console/sign-in");
        let r = client()
            .post(s.url("/console/api-keys"))
            .header(COOKIE, c)
            .header(ORIGIN, origin(&s))
            .form(&[("_csrf", "x"), ("name", "g"), ("role", "read-only")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
    }
    assert_eq!(
        audit_len(&s).await,
        before,
        "garbage cookies wrote to the store"
    );
    assert!(!key_names(&s).await.contains(&"g".to_string()));
}

#[tokio::test]
async fn sign_out_ends_the_session_server_side() {
    let s = Server::start();
    let sess = with_key(&s, &s.admin_key).await;
    assert_eq!(page(&s, &sess.cookie, "/console/api-keys").await.0, 200);
    let r = post(
        &s,
        &sess,
        "/console/sign-out",
        Some(&origin(&s)),
        &[("_csrf", &sess.csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The old cookie, replayed, no longer works.
    let r = client()
        .get(s.url("/console/api-keys"))
        .header(COOKIE, &sess.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/console/sign-in");
}

async fn api_sessions(s: &Server, token: &str) -> Vec<serde_json::Value> {
    let r = s.get_bearer("/api/v1/auth/sessions", token).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_console_session_is_one_of_the_users_sessions_and_counts_toward_the_cap() {
    let s = Server::start();
    s.principal("carol", "admin").await;
    let first = with_password(&s, "carol").await;
    // Five password-grant logins: the console session is the oldest and is evicted.
    let mut token = String::new();
    for _ in 0..5 {
        token = s.login("carol", PASSWORD).await;
    }
    let sessions = api_sessions(&s, &token).await;
    assert_eq!(sessions.len(), 5);
    let r = client()
        .get(s.url("/console/sessions"))
        .header(COOKIE, &first.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the evicted console session still works");
    // A new console session is listed with the API sessions, and revocable there.
    let second = with_password(&s, "carol").await;
    let sessions = api_sessions(&s, &token).await;
    let body = page(&s, &second.cookie, "/console/sessions").await.1;
    assert!(body.contains("(this console)"), "{body}");
    let ids: Vec<&str> = sessions.iter().filter_map(|v| v["id"].as_str()).collect();
    let console_id = ids
        .iter()
        .find(|id| body.contains(&format!("<code>{id}</code> (this console)")))
        .expect("the console session is listed by the API")
        .to_string();
    let r = client()
        .delete(s.url(&format!("/api/v1/auth/sessions/{console_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(page(&s, &second.cookie, "/console/sessions").await.0, 303);
}

#[tokio::test]
async fn a_wrong_password_is_refused_like_the_password_grant() {
    let s = Server::start();
    s.principal("dave", "admin").await;
    let r = sign_in_form(
        &s,
        &[
            ("method", "password"),
            ("username", "dave"),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let r = sign_in_form(&s, &[("method", "api-key"), ("api_key", "kg_nope")]).await;
    assert_eq!(r.status(), 401);
    // Sign-in from another origin is refused before any check.
    let r = client()
        .post(s.url("/console/sign-in"))
        .header(ORIGIN, "http://127.0.0.1:1")
        .form(&[("method", "api-key"), ("api_key", s.admin_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// Regression (attacker review): a break-glass sign-in opened a session in the key
/// owner's name that counted toward the owner's cap, so whoever held any API key of
/// theirs could sign them out everywhere by signing in five times. Break-glass sessions
/// are now capped per key and never evict the owner's login sessions.
#[tokio::test]
async fn break_glass_sign_ins_never_evict_the_key_owners_login_sessions() {
    let s = Server::start();
    let key = s.principal("erin", "admin").await;
    let token = s.login("erin", PASSWORD).await;
    let first = with_key(&s, &key).await;
    for _ in 0..5 {
        with_key(&s, &key).await;
    }
    assert_eq!(
        s.get_bearer("/api/v1/auth/sessions", &token).await.status(),
        200,
        "erin's login session survives six break-glass sign-ins with her key"
    );
    assert_eq!(
        page(&s, &first.cookie, "/console/sessions").await.0,
        303,
        "the key's oldest break-glass session is evicted by its sixth"
    );
}

// ------------------------------------------------- OAuth edit, groups, roles, sessions, CA

/// An ES256 public key: its PEM and its JWK with `kid`.
fn idp_public_key(kid: &str) -> (String, serde_json::Value) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use keygate::hardware::{Algorithm, PublicKey};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let public = PublicKey::ec(Algorithm::ES256, pair.public_key().as_ref().to_vec()).unwrap();
    let der = public.spki_der().unwrap();
    let pem = pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::LineEnding::LF, &der).unwrap();
    (pem, public.jwk(kid))
}

/// A `multipart/form-data` body as a browser sends a form with a file input: `(name,
/// file name, value)`, a file name marking a file field. Returns (content type, body).
fn multipart(fields: &[(&str, Option<&str>, &str)]) -> (String, Vec<u8>) {
    let boundary = "----keygateTestBoundary7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, file, value) in fields {
        body.push_str(&format!("--{boundary}\r\n"));
        match file {
            Some(f) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/x-pem-file\r\n\r\n"
            )),
            None => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            )),
        }
        body.push_str(value);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

async fn post_multipart(
    s: &Server,
    sess: &Session,
    path: &str,
    fields: &[(&str, Option<&str>, &str)],
) -> reqwest::Response {
    let (ct, body) = multipart(fields);
    client()
        .post(s.url(path))
        .header(COOKIE, &sess.cookie)
        .header(ORIGIN, origin(s))
        .header(reqwest::header::CONTENT_TYPE, ct)
        .body(body)
        .send()
        .await
        .expect("post")
}

/// A loopback JWKS endpoint serving `jwks`.
async fn jwks_endpoint(jwks: serde_json::Value) -> String {
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let j = jwks.clone();
            async move { axum::Json(j) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks")
}

fn loopback_jwks_server() -> Server {
    Server::start_with(crate::common::server::Options {
        env: vec![(
            "KEYGATE__OAUTH__ALLOW_INSECURE_LOOPBACK_JWKS".into(),
            "true".into(),
        )],
        ..Default::default()
    })
}

async fn oauth_server(s: &Server, name: &str) -> serde_json::Value {
    let v: Vec<serde_json::Value> = s.get_json("/api/v1/oauth-servers", &s.admin_key).await;
    v.into_iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no OAuth server {name}"))
}

#[tokio::test]
async fn an_oauth_server_added_and_rekeyed_from_uploaded_pem_files_and_its_jwks_cache_state_shown()
{
    let s = loopback_jwks_server();
    let sess = with_key(&s, &s.admin_key).await;
    let (first_pem, _) = idp_public_key("unused");
    // Added from an uploaded file, as the browser sends a form with a file input.
    let r = post_multipart(
        &s,
        &sess,
        "/console/oauth-servers",
        &[
            ("_csrf", None, &sess.csrf),
            ("name", None, "uploaded"),
            ("issuer", None, "https://uploaded.example"),
            ("audience", None, "keygate-api"),
            ("public_key_pem", None, ""),
            ("public_key_file", Some("idp.pem"), &first_pem),
            ("jwks_uri", None, ""),
            ("role_claim", None, ""),
            ("role_mapping", None, "readers=read-only"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let o = oauth_server(&s, "uploaded").await;
    assert_eq!(
        o["public_key_pem"].as_str().unwrap().trim(),
        first_pem.trim()
    );
    let id = o["oauth_id"].as_str().unwrap().to_string();
    let (_, body) = page(
        &s,
        &sess.cookie,
        &format!("/console/oauth-servers/{id}/edit"),
    )
    .await;
    assert!(body.contains("value=\"uploaded\""), "{body}");
    assert!(body.contains("readers=read-only"), "{body}");
    // Edited: renamed, re-keyed from another uploaded file, mapping changed.
    let (second_pem, _) = idp_public_key("unused");
    let fields = [
        ("_csrf", None, sess.csrf.as_str()),
        ("name", None, "renamed"),
        ("issuer", None, "https://uploaded.example"),
        ("audience", None, "keygate-api"),
        ("public_key_pem", None, ""),
        ("public_key_file", Some("new.pem"), second_pem.as_str()),
        ("jwks_uri", None, ""),
        ("role_claim", None, "groups"),
        ("role_mapping", None, "auditors=read-only"),
    ];
    let r = post_multipart(
        &s,
        &sess,
        &format!("/console/oauth-servers/{id}/edit"),
        &fields,
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let o = oauth_server(&s, "renamed").await;
    assert_eq!(
        o["public_key_pem"].as_str().unwrap().trim(),
        second_pem.trim()
    );
    assert_eq!(o["role_claim"], "groups");
    assert_eq!(o["role_mapping"], json!({"auditors": "read-only"}));
    // A PEM pasted and uploaded at once is refused, and changes nothing.
    let mut both = fields;
    both[4] = ("public_key_pem", None, first_pem.as_str());
    let r = post_multipart(
        &s,
        &sess,
        &format!("/console/oauth-servers/{id}/edit"),
        &both,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        oauth_server(&s, "renamed").await["public_key_pem"]
            .as_str()
            .unwrap()
            .trim(),
        second_pem.trim()
    );

    // A JWKS server: its cache is empty until a fetch; "Fetch JWKS" fills it.
    let (_, jwk) = idp_public_key("kid-one");
    let uri = jwks_endpoint(json!({"keys": [jwk]})).await;
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &s.admin_key,
            json!({"name": "by-jwks", "issuer": "https://jwks.example", "audience": "keygate-api",
                   "jwks_uri": uri, "role_mapping": {"readers": "read-only"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let jid = oauth_server(&s, "by-jwks").await["oauth_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, body) = page(&s, &sess.cookie, "/console/oauth-servers").await;
    assert!(body.contains("Not fetched yet"), "{body}");
    assert!(!body.contains("kid-one"), "{body}");
    let r = post(
        &s,
        &sess,
        &format!("/console/oauth-servers/{jid}/fetch-jwks"),
        Some(&origin(&s)),
        &[("_csrf", &sess.csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, body) = page(&s, &sess.cookie, "/console/oauth-servers?q=by-jwks").await;
    assert!(body.contains("<code>kid-one</code>"), "{body}");
    assert!(body.contains("ok, 1 keys"), "{body}");
    // The fetch is audited by its use case, as the signed-in user, not recorded after the
    // fact by the audit layer as a bare `http:POST`.
    let log: Vec<serde_json::Value> = s.get_json("/api/v1/audit?limit=1000", &s.admin_key).await;
    let fetched: Vec<_> = log
        .iter()
        .filter(|e| e["action"] == "oauth-server.fetch-jwks" && e["target"] == jid.as_str())
        .collect();
    assert_eq!(fetched.len(), 1, "{log:?}");
    assert_eq!(fetched[0]["actor"], "root", "{log:?}");
    assert!(
        !log.iter()
            .any(|e| e["action"].as_str().unwrap().starts_with("http:POST")
                && e["target"].as_str().unwrap().ends_with("/fetch-jwks")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_failed_jwks_fetch_is_shown_with_its_reason() {
    let s = loopback_jwks_server();
    let sess = with_key(&s, &s.admin_key).await;
    // Nothing listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = s
        .post_json(
            "/api/v1/oauth-servers",
            &s.admin_key,
            json!({"name": "down", "issuer": "https://down.example", "audience": "keygate-api",
                   "jwks_uri": format!("http://127.0.0.1:{port}/jwks"),
                   "role_mapping": {"readers": "read-only"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = oauth_server(&s, "down").await["oauth_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        &s,
        &sess,
        &format!("/console/oauth-servers/{id}/fetch-jwks"),
        Some(&origin(&s)),
        &[("_csrf", &sess.csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, body) = page(&s, &sess.cookie, "/console/oauth-servers").await;
    assert!(body.contains("failed:"), "{body}");
    assert!(body.contains("Not fetched yet"), "{body}");
}

#[tokio::test]
async fn the_new_pages_render_for_an_admin_and_hide_writes_from_a_read_only_user() {
    let s = Server::start();
    let r = s
        .post_json(
            "/api/v1/groups",
            &s.admin_key,
            json!({"name": "payments", "description": "gateways"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let admin = with_key(&s, &s.admin_key).await;
    let pages: [(&str, &str); 5] = [
        ("/console/groups", "Add a group"),
        ("/console/groups/payments", "Add the member"),
        ("/console/roles", "Add a custom role"),
        ("/console/tls", "Add a CA profile"),
        ("/console/oauth-servers", "Add an OAuth server"),
    ];
    for (path, control) in pages {
        let (status, body) = page(&s, &admin.cookie, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(control), "{path} lacks {control:?}");
        assert!(body.contains("href=\"/console/groups\""), "nav of {path}");
        assert!(body.contains("href=\"/console/roles\""), "nav of {path}");
        assert!(
            !body.contains("<script>") && !body.contains("style="),
            "{path}"
        );
    }
    s.principal("rita", "read-only").await;
    let rita = with_password(&s, "rita").await;
    for (path, control) in pages {
        let (status, body) = page(&s, &rita.cookie, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !body.contains(control),
            "{path} shows {control:?} to read-only"
        );
        assert!(!body.contains("/delete\""), "{path} shows a delete link");
    }
    // Forged posts with her own session, token and origin: refused, nothing changes.
    let forged: [(&str, Vec<(&str, &str)>); 5] = [
        ("/console/groups", vec![("name", "forged")]),
        ("/console/groups/payments/delete", vec![]),
        (
            "/console/groups/payments/members",
            vec![("principal", "rita")],
        ),
        (
            "/console/roles",
            vec![("name", "forged"), ("permissions", "keys:read")],
        ),
        ("/console/tls", vec![("name", "forged"), ("ca_pem", "x")]),
    ];
    for (path, fields) in forged {
        let mut form = vec![("_csrf", rita.csrf.as_str())];
        form.extend(fields);
        let r = post(&s, &rita, path, Some(&origin(&s)), &form).await;
        assert_eq!(r.status(), 403, "{path}");
    }
    let groups: Vec<serde_json::Value> = s.get_json("/api/v1/groups", &s.admin_key).await;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["members"], json!([]));
    let roles: Vec<serde_json::Value> = s.get_json("/api/v1/roles", &s.admin_key).await;
    assert!(roles.iter().all(|r| r["name"] != "forged"));
    // Without the session's CSRF token an admin's post is refused too.
    let r = post(
        &s,
        &admin,
        "/console/roles",
        Some(&origin(&s)),
        &[("name", "nocsrf"), ("permissions", "keys:read")],
    )
    .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn groups_members_grants_and_custom_roles_are_managed_from_the_console() {
    let s = Server::start();
    let a = with_key(&s, &s.admin_key).await;
    let o = origin(&s);
    let ok = |r: reqwest::Response| async move {
        let st = r.status();
        assert_eq!(st, 303, "{}", r.text().await.unwrap());
    };
    ok(post(
        &s,
        &a,
        "/console/groups",
        Some(&o),
        &[
            ("_csrf", &a.csrf),
            ("name", "signers"),
            ("description", "<b>ops</b>"),
        ],
    )
    .await)
    .await;
    ok(post(
        &s,
        &a,
        "/console/groups/signers/members",
        Some(&o),
        &[("_csrf", &a.csrf), ("principal", "gw-1")],
    )
    .await)
    .await;
    ok(post(
        &s,
        &a,
        "/console/groups/signers/members",
        Some(&o),
        &[("_csrf", &a.csrf), ("principal", "gw-2")],
    )
    .await)
    .await;
    ok(post(
        &s,
        &a,
        "/console/groups/signers/grants",
        Some(&o),
        &[
            ("_csrf", &a.csrf),
            ("ring", "jwt-default"),
            ("permissions", "view"),
            ("permissions", "sign"),
        ],
    )
    .await)
    .await;
    let g: serde_json::Value = s.get_json("/api/v1/groups/signers", &s.admin_key).await;
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    assert_eq!(g["grants"][0]["resource"], "ring:jwt-default");
    assert_eq!(g["grants"][0]["permissions"], json!(["view", "sign"]));
    let (_, body) = page(&s, &a.cookie, "/console/groups/signers?q=gw-2").await;
    assert!(body.contains("gw-2") && !body.contains(">gw-1<"), "{body}");
    assert!(
        body.contains("&lt;b&gt;ops&lt;/b&gt;"),
        "escaped description: {body}"
    );
    ok(post(
        &s,
        &a,
        "/console/groups/signers/members/remove",
        Some(&o),
        &[("_csrf", &a.csrf), ("principal", "gw-1")],
    )
    .await)
    .await;
    ok(post(
        &s,
        &a,
        "/console/groups/signers/grants/remove",
        Some(&o),
        &[("_csrf", &a.csrf), ("resource", "ring:jwt-default")],
    )
    .await)
    .await;
    let g: serde_json::Value = s.get_json("/api/v1/groups/signers", &s.admin_key).await;
    assert_eq!(g["members"].as_array().unwrap().len(), 1);
    assert_eq!(g["grants"], json!([]));
    ok(post(
        &s,
        &a,
        "/console/groups/signers/delete",
        Some(&o),
        &[("_csrf", &a.csrf)],
    )
    .await)
    .await;
    assert_eq!(
        s.get("/api/v1/groups/signers", &s.admin_key).await.status(),
        404
    );

    // Custom roles: checkboxes send repeated `permissions` fields.
    ok(post(
        &s,
        &a,
        "/console/roles",
        Some(&o),
        &[
            ("_csrf", &a.csrf),
            ("name", "auditor"),
            ("description", "reads"),
            ("permissions", "audit:read"),
            ("permissions", "keys:read"),
        ],
    )
    .await)
    .await;
    let r: serde_json::Value = s.get_json("/api/v1/roles/auditor", &s.admin_key).await;
    assert_eq!(r["permissions"], json!(["keys:read", "audit:read"]));
    let (_, body) = page(&s, &a.cookie, "/console/roles/auditor/edit").await;
    assert!(body.contains("value=\"audit:read\" checked"), "{body}");
    ok(post(
        &s,
        &a,
        "/console/roles/auditor/edit",
        Some(&o),
        &[
            ("_csrf", &a.csrf),
            ("description", "reads audit"),
            ("permissions", "audit:read"),
        ],
    )
    .await)
    .await;
    let r: serde_json::Value = s.get_json("/api/v1/roles/auditor", &s.admin_key).await;
    assert_eq!(
        (r["permissions"].clone(), r["description"].clone()),
        (json!(["audit:read"]), json!("reads audit"))
    );
    // Built-in roles show no edit control and refuse a change.
    let (_, body) = page(&s, &a.cookie, "/console/roles?q=admin").await;
    assert!(!body.contains("/console/roles/admin/edit"), "{body}");
    let r = post(
        &s,
        &a,
        "/console/roles/admin/edit",
        Some(&o),
        &[("_csrf", &a.csrf), ("permissions", "keys:read")],
    )
    .await;
    assert_eq!(r.status(), 409);
    ok(post(
        &s,
        &a,
        "/console/roles/auditor/delete",
        Some(&o),
        &[("_csrf", &a.csrf)],
    )
    .await)
    .await;
    assert_eq!(
        s.get("/api/v1/roles/auditor", &s.admin_key).await.status(),
        404
    );
}

#[tokio::test]
async fn a_manager_sees_and_ends_the_sessions_of_users_they_manage_and_no_one_else_does() {
    let s = Server::start();
    s.principal("rita", "read-only").await;
    s.principal("hank", "help-desk").await;
    let token = s.login("rita", PASSWORD).await;
    let rita_session = api_sessions(&s, &token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Help-desk holds users:write and manages read-only: rita's session is listed.
    let hank = with_password(&s, "hank").await;
    let (_, body) = page(&s, &hank.cookie, "/console/sessions").await;
    assert!(body.contains(&rita_session), "{body}");
    assert!(body.contains("those of the users you manage"), "{body}");
    // Read-only sees only her own; ending hank's console session from hers is refused.
    let rita = with_password(&s, "rita").await;
    let (_, body) = page(&s, &rita.cookie, "/console/sessions").await;
    assert!(!body.contains(&hank_session_id(&s, &hank).await), "{body}");
    let r = post(
        &s,
        &rita,
        &format!("/console/sessions/{}/end", hank_session_id(&s, &hank).await),
        Some(&origin(&s)),
        &[("_csrf", &rita.csrf)],
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(page(&s, &hank.cookie, "/console/sessions").await.0, 200);
    // Hank ends rita's API session: her access token stops working.
    let r = post(
        &s,
        &hank,
        &format!("/console/sessions/{rita_session}/end"),
        Some(&origin(&s)),
        &[("_csrf", &hank.csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        s.get_bearer("/api/v1/auth/sessions", &token).await.status(),
        401
    );
}

/// The id of the console session whose page lists itself as "(this console)".
async fn hank_session_id(s: &Server, sess: &Session) -> String {
    let (_, body) = page(s, &sess.cookie, "/console/sessions").await;
    let at = body.find(" (this console)").expect("own session marked");
    let before = &body[..at];
    let start = before.rfind("<code>").expect("code") + 6;
    before[start..].trim_end_matches("</code>").to_string()
}

#[tokio::test]
async fn ca_profiles_are_listed_added_from_an_uploaded_pem_and_deleted() {
    let s = Server::start();
    let a = with_key(&s, &s.admin_key).await;
    let ca = crate::common::pki::Ca::root("Console Test CA");
    let r = post_multipart(
        &s,
        &a,
        "/console/tls",
        &[
            ("_csrf", None, &a.csrf),
            ("name", None, "partners"),
            ("ca_pem", None, ""),
            ("ca_file", Some("ca.pem"), &ca.cert.pem()),
            ("revocation_check", None, "none"),
            ("crl_urls", None, ""),
            ("crl_refresh", None, "10m"),
            ("stale_crl", None, "fail-closed"),
            ("principal_match", None, "cn"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let (_, body) = page(&s, &a.cookie, "/console/tls").await;
    assert!(
        body.contains("partners") && body.contains("1 certificates (PEM)"),
        "{body}"
    );
    assert!(body.contains("Delete CA profile partners"), "{body}");
    // A private key is not a CA bundle: refused.
    let r = post_multipart(
        &s,
        &a,
        "/console/tls",
        &[
            ("_csrf", None, &a.csrf),
            ("name", None, "bad"),
            ("ca_pem", None, &ca.key.serialize_pem()),
            ("ca_file", Some(""), ""),
            ("revocation_check", None, "none"),
            ("stale_crl", None, "fail-closed"),
            ("principal_match", None, "none"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(
        &s,
        &a,
        "/console/tls/ca-profiles/partners/delete",
        Some(&origin(&s)),
        &[("_csrf", &a.csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let v: Vec<serde_json::Value> = s.get_json("/api/v1/ca-profiles", &s.admin_key).await;
    assert!(v.iter().all(|p| p["name"] != "partners"), "{v:?}");
}
