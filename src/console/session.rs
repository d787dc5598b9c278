//! Console sessions: the cookie, its CSRF token, and the extractors that turn a request
//! into the signed-in [`Principal`] (docs/console.md "Sessions").
//!
//! - The cookie `__Host-keygate_console` holds `kgc_` + 32 random bytes (base64url). The
//!   store keeps only its SHA-256. A value that is not of that shape is refused before
//!   any store read; a well-formed unknown one costs one indexed read, no write and no
//!   hardware call.
//! - The CSRF token is HMAC-SHA256 of a fixed label keyed with the cookie value: bound to
//!   the session, never stored, and unknowable without the cookie.
//! - A request carrying `Authorization`, `x-api-key` or `x-oauth2-token` is refused: the
//!   console takes no bearer credential, as the API takes no cookie.
//! - Every POST must come from the console's own origin (`Origin` equal to the request's
//!   host; `Sec-Fetch-Site`, when sent, `same-origin`) and carry the session's token.
//!   Forms are urlencoded, or `multipart/form-data` where they upload a (PEM) file; both
//!   pass the same checks.

use super::error::ConsoleError;
use crate::http::AppState;
use crate::runtime::now;
use crate::services::{AuthMethod, Principal};
use aws_lc_rs::{digest, hmac, rand};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use serde::de::DeserializeOwned;

/// The session cookie's name. `__Host-`: Secure, Path=/ and no Domain, or the browser
/// refuses it.
pub const COOKIE: &str = "__Host-keygate_console";
/// Prefix of a cookie value.
const PREFIX: &str = "kgc_";
/// Random bytes in a cookie value.
const RANDOM_BYTES: usize = 32;
/// Longest a console session lives.
pub const SESSION_TTL: i64 = 8 * 3600;
/// A console session unused this long has ended.
pub const IDLE_TIMEOUT: i64 = 30 * 60;
/// `last_used_at` is written at most this often per session.
const TOUCH_EVERY: i64 = 60;
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A fresh cookie value (software RNG: the cookie is a bearer secret, not key material).
pub fn new_cookie_value() -> Result<zeroize::Zeroizing<String>, ConsoleError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; RANDOM_BYTES]);
    rand::fill(bytes.as_mut())
        .map_err(|_| ConsoleError::internal("the system random generator failed"))?;
    Ok(zeroize::Zeroizing::new(format!(
        "{PREFIX}{}",
        B64.encode(bytes.as_ref())
    )))
}

/// Whether `v` has the shape of a cookie value this server issues.
fn well_formed(v: &str) -> bool {
    v.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == 43 && B64.decode(rest).is_ok_and(|b| b.len() == RANDOM_BYTES)
    })
}

/// What the store keeps of a cookie value.
pub fn cookie_hash(v: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, v.as_bytes())
        .as_ref()
        .to_vec()
}

/// The CSRF token of the session whose cookie is `v`.
pub fn csrf_token(v: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, v.as_bytes());
    B64.encode(hmac::sign(&key, b"keygate console csrf v1").as_ref())
}

/// `Set-Cookie` that installs a session cookie.
pub fn set_cookie(v: &str) -> String {
    format!("{COOKIE}={v}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL}")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session cookie's value, if the request carries exactly one well-formed one.
fn cookie_of(headers: &HeaderMap) -> Option<String> {
    let mut found = None;
    for h in headers.get_all(header::COOKIE) {
        let s = h.to_str().ok()?;
        for pair in s.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == COOKIE {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(v.to_string());
                }
            }
        }
    }
    found.filter(|v| well_formed(v))
}

/// Refuses requests that carry an API credential header.
pub fn refuse_api_credentials(headers: &HeaderMap) -> Result<(), ConsoleError> {
    if headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key("x-api-key")
        || headers.contains_key(crate::http::extract::IDP_TOKEN_HEADER)
    {
        return Err(ConsoleError::bad_request(
            "the console takes no Authorization, x-api-key or x-oauth2-token header; sign in at /console/sign-in",
        ));
    }
    Ok(())
}

/// The host the request was sent to (`Host`, or the HTTP/2 `:authority`).
fn request_host(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
}

/// A state-changing request must come from a page of this origin.
///
/// Browsers send `Sec-Fetch-Site` (which no page can forge): it must say `same-origin`.
/// Under the console's `Referrer-Policy: no-referrer` they send `Origin: null` on form
/// posts, so `null` passes only together with that header. Without `Sec-Fetch-Site`
/// (other clients), `Origin` must name the host the request was sent to.
pub fn check_origin(parts: &Parts) -> Result<(), ConsoleError> {
    let refuse = || {
        ConsoleError::forbidden(
            "cross-origin request refused: the console accepts forms from its own pages only",
        )
    };
    let fetch_site = parts.headers.get("sec-fetch-site");
    if fetch_site.is_some_and(|s| s.as_bytes() != b"same-origin") {
        return Err(refuse());
    }
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .ok_or_else(refuse)?;
    if origin == "null" {
        return match fetch_site {
            Some(_) => Ok(()),
            None => Err(refuse()),
        };
    }
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(refuse)?;
    match request_host(parts) {
        Some(host) if host.eq_ignore_ascii_case(authority) => Ok(()),
        _ => Err(refuse()),
    }
}

/// The signed-in person of a console request.
#[derive(Debug, Clone)]
pub struct Console {
    pub principal: Principal,
    /// The `sessions` row id.
    pub session_id: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Signed in with an API key (break-glass).
    pub break_glass: bool,
}

impl Console {
    /// Whether the role holds `p` (to hide controls; the server decides regardless).
    pub fn can(&self, p: crate::services::authz::Permission) -> bool {
        self.principal.role.has(p) && !self.principal.role.read_only()
    }

    pub fn may_read(&self, p: crate::services::authz::Permission) -> bool {
        self.principal.role.has(p)
    }
}

/// Finds the live session of the request's cookie and the principal it stands for.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Console, ConsoleError> {
    refuse_api_credentials(&parts.headers)?;
    let cookie = cookie_of(&parts.headers).ok_or(ConsoleError::SignIn)?;
    let rt = &state.rt;
    let t = now();
    let row = rt
        .store
        .console_session(&cookie_hash(&cookie))
        .await
        .map_err(|e| ConsoleError::from(crate::services::ServiceError::from(e)))?
        .ok_or(ConsoleError::SignIn)?;
    if row.revoked_at.is_some()
        || row.expires_at <= t
        || row.last_used_at.saturating_add(IDLE_TIMEOUT) <= t
    {
        return Err(ConsoleError::SignIn);
    }
    let principal = match &row.api_key_binding {
        None => {
            let role = rt
                .users
                .role_of(&row.username)
                .ok_or(ConsoleError::SignIn)?;
            Principal {
                name: row.username.clone(),
                role,
                method: AuthMethod::AccessToken {
                    jti: format!("console:{}", row.id),
                    sid: Some(row.id.clone()),
                    exp: row.expires_at,
                    key_binding: None,
                    minted: false,
                },
            }
        }
        Some(binding) => {
            // The key must still be live with the same secret.
            if !rt.api_keys.binding_live(binding) {
                return Err(ConsoleError::SignIn);
            }
            let id = binding
                .split_once('.')
                .map_or(binding.as_str(), |(id, _)| id);
            let key = rt.api_keys.live_key(id).ok_or(ConsoleError::SignIn)?;
            if key.expires_at <= t {
                return Err(ConsoleError::SignIn);
            }
            Principal {
                name: key.owner.clone(),
                role: key.role,
                method: AuthMethod::ApiKey {
                    id: key.id.clone(),
                    created_by: key.created_by.clone(),
                },
            }
        }
    };
    crate::http::audit_log::AuditSlot::set(parts, &principal);
    rt.limits
        .check_credential(principal.quota_key().as_deref())
        .map_err(|l| ConsoleError::Api(l.into()))?;
    crate::tls::client_identity::check_principal(&parts.extensions, &principal)?;
    if t.saturating_sub(row.last_used_at) >= TOUCH_EVERY {
        rt.store
            .touch_session(&row.id, t)
            .await
            .map_err(|e| ConsoleError::from(crate::services::ServiceError::from(e)))?;
    }
    Ok(Console {
        break_glass: row.api_key_binding.is_some(),
        principal,
        session_id: row.id,
        csrf: csrf_token(&cookie),
    })
}

impl FromRequestParts<AppState> for Console {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        authenticate(parts, state).await
    }
}

/// A state-changing console request: the session, its origin and CSRF token checked,
/// and the form body as `T`. `allow_read_only` lets a read-only person sign out or end
/// their own session; every other form follows the API's rule (read-only: safe methods
/// only).
pub struct ConsoleForm<T> {
    pub console: Console,
    pub form: T,
}

/// Checks a submitted CSRF token against the session's, in constant time.
fn csrf_matches(sent: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    sent.len() == expected.len() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// The shared part of [`ConsoleForm`] and [`SignOutForm`].
async fn form_of<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
    allow_read_only: bool,
) -> Result<(Console, T), ConsoleError> {
    let (mut parts, body) = req.into_parts();
    if parts.method != Method::POST {
        return Err(ConsoleError::bad_request("forms are sent with POST"));
    }
    check_origin(&parts)?;
    let console = authenticate(&parts, state).await?;
    let _ = &mut parts;
    if !allow_read_only && console.principal.role.read_only() {
        return Err(ConsoleError::forbidden("role read-only may only read"));
    }
    let limit = state.rt.config.server.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ConsoleError::bad_request("the form is too large"))?;
    let multipart = multipart_type(&parts.headers);
    let pairs: Vec<(String, String)> = match &multipart {
        Some(content_type) => multipart_pairs(content_type, bytes.clone()).await?,
        None => serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            ConsoleError::bad_request(
                "the form is not application/x-www-form-urlencoded or multipart/form-data",
            )
        })?,
    };
    let mut sent = pairs.iter().filter(|(k, _)| k == CSRF_FIELD);
    match (sent.next(), sent.next()) {
        (Some((_, v)), None) if csrf_matches(v, &console.csrf) => {}
        _ => {
            return Err(ConsoleError::forbidden(
                "the form's CSRF token is missing or not this session's; reload the page",
            ))
        }
    }
    let form = match multipart {
        // One parser for both encodings: a multipart form's fields (an uploaded file's
        // text among them) are read as the same pairs a urlencoded form carries.
        Some(_) => serde_urlencoded::to_string(&pairs)
            .map_err(|e| ConsoleError::bad_request(format!("form: {e}")))
            .and_then(|enc| {
                serde_urlencoded::from_str(&enc)
                    .map_err(|e| ConsoleError::bad_request(format!("form: {e}")))
            })?,
        None => serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ConsoleError::bad_request(format!("form: {e}")))?,
    };
    Ok((console, form))
}

/// The `Content-Type` of a `multipart/form-data` body (a form with a file input).
fn multipart_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.get(..19)
                .is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"))
        })
        .map(str::to_string)
}

/// The fields of a `multipart/form-data` body (already read, within
/// `server.max_body_bytes`) as name/value pairs; a file field's value is the file's
/// text (the console uploads PEM files only), empty when no file was chosen.
async fn multipart_pairs(
    content_type: &str,
    body: axum::body::Bytes,
) -> Result<Vec<(String, String)>, ConsoleError> {
    let bad = |m: &str| ConsoleError::bad_request(format!("multipart form: {m}"));
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body))
        .map_err(|_| bad("unreadable request"))?;
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .map_err(|e| bad(&e.body_text()))?;
    let mut pairs = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| bad(&e.body_text()))? {
        let name = field.name().unwrap_or_default().to_string();
        let value = field
            .text()
            .await
            .map_err(|_| bad("a field or file is not UTF-8 text (upload a PEM file)"))?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for ConsoleForm<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ConsoleError> {
        let (console, form) = form_of(req, state, false).await?;
        Ok(ConsoleForm { console, form })
    }
}

/// A form any signed-in person may send, read-only included (sign-out, ending one's own
/// session: the service checks the target).
pub struct SessionForm<T> {
    pub console: Console,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for SessionForm<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ConsoleError> {
        let (console, form) = form_of(req, state, true).await?;
        Ok(SessionForm { console, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_are_recognised_by_shape_only() {
        let v = new_cookie_value().unwrap_or_else(|_| zeroize::Zeroizing::new(String::new()));
        assert!(well_formed(&v));
        assert!(!well_formed("kgc_short"));
        assert!(!well_formed(&v.replace("kgc_", "kgx_")));
        assert_ne!(csrf_token(&v), csrf_token("kgc_other"));
        assert_eq!(cookie_hash(&v).len(), 32);
    }

    #[test]
    fn a_second_cookie_of_the_same_name_is_refused() {
        let v = "kgc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(well_formed(v));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("{COOKIE}={v}; other=1")
                .parse()
                .unwrap_or_else(|_| header::HeaderValue::from_static("")),
        );
        assert_eq!(cookie_of(&h).as_deref(), Some(v));
        h.append(
            header::COOKIE,
            format!("{COOKIE}={v}")
                .parse()
                .unwrap_or_else(|_| header::HeaderValue::from_static("")),
        );
        assert_eq!(cookie_of(&h), None);
    }
}
