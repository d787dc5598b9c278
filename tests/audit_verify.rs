//! Verifying the audit chain from the console (`docs/lifecycle.md`, the audit log;
//! `docs/console.md`): a deliberate POST carrying the session's CSRF token, from the last
//! signed checkpoint, rate limited. A GET never verifies.

use crate::common::server::{Options, Server};
use reqwest::header::{COOKIE, ORIGIN, RETRY_AFTER, SET_COOKIE};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in to the console with `key`; returns the cookie and the session's CSRF token.
async fn sign_in(s: &Server, key: &str) -> (String, String) {
    let r = client()
        .post(s.url("/console/sign-in"))
        .header(ORIGIN, s.base.trim_end_matches('/'))
        .form(&[("method", "api-key"), ("api_key", key)])
        .send()
        .await
        .expect("sign-in");
    assert_eq!(r.status(), 303, "break-glass sign-in");
    let cookie = r
        .headers()
        .get(SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let body = get(s, &cookie, "/console/audit").await.1;
    let at = body.find("name=\"_csrf\" value=\"").expect("csrf field") + 20;
    let csrf = body[at..].split('"').next().expect("value").to_string();
    (cookie, csrf)
}

async fn get(s: &Server, cookie: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(s.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn verify(s: &Server, cookie: &str, csrf: Option<&str>) -> reqwest::Response {
    let mut form = Vec::new();
    if let Some(t) = csrf {
        form.push(("_csrf", t));
    }
    client()
        .post(s.url("/console/audit/verify?action=api-key"))
        .header(COOKIE, cookie)
        .header(ORIGIN, s.base.trim_end_matches('/'))
        .form(&form)
        .send()
        .await
        .expect("post")
}

/// The number after "Last signed checkpoint: entry " on the page.
fn checkpoint_on(page: &str) -> i64 {
    let at = page
        .find("Last signed checkpoint: entry <strong>")
        .expect("checkpoint shown")
        + "Last signed checkpoint: entry <strong>".len();
    page[at..].split('<').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_console_verifies_the_chain_only_on_a_csrf_checked_post_and_rate_limits_it() {
    // A checkpoint after every entry, so verification has one to start from.
    let s = Server::start_with(Options {
        env: vec![("KEYGATE__AUDIT__CHECKPOINT_EVERY".into(), "1".into())],
        ..Options::default()
    });
    let (_, _) = s.create_key("read-only").await;
    let (cookie, csrf) = sign_in(&s, &s.admin_key).await;

    // A GET asks for nothing expensive, whatever its query says.
    let (status, page) = get(&s, &cookie, "/console/audit?verify=1").await;
    assert_eq!(status, 200);
    assert!(!page.contains("Chain verified"), "a GET verified the chain");
    assert!(page.contains("action=\"/console/audit/verify?"), "{page}");

    // A POST without this session's CSRF token is refused.
    let r = verify(&s, &cookie, None).await;
    assert_eq!(r.status(), 403);
    let r = verify(&s, &cookie, Some("not-the-token")).await;
    assert_eq!(r.status(), 403);

    let r = verify(&s, &cookie, Some(&csrf)).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let from = checkpoint_on(&page).max(1);
    assert!(
        page.contains(&format!("Chain verified from entry {from}:")),
        "verification starts at the last signed checkpoint: {page}"
    );
    assert!(
        page.contains("value=\"api-key\""),
        "the filters survive the POST"
    );

    // Again at once: refused with 429 and when to retry, and nothing verified.
    let r = verify(&s, &cookie, Some(&csrf)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get(RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(!r.text().await.unwrap().contains("Chain verified"));
}
