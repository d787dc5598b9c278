//! Sign-in (password, or an API key for break-glass use) and sign-out.
//!
//! A password sign-in goes through the password grant's own check
//! ([`crate::services::users::UserService::authenticate_password`]: lockout, throttling,
//! one argon2 verify) and opens a `sessions` row like the grant does, evicting the
//! user's oldest sessions beyond `sessions.max_per_user`. An API-key sign-in is recorded
//! in the audit log as `console.sign-in.break-glass`.

use crate::console::error::ConsoleError;
use crate::console::layout::{bare, see_other};
use crate::console::session::{self, Console, SessionForm};
use crate::http::audit_log::AuditSlot;
use crate::http::{run_detached, AppState};
use crate::runtime::now;
use crate::services::{Principal, ServiceError};
use crate::store::console_sessions::NewConsoleSession;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

fn form(error: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            h1 { "Sign in to keygate" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.stack method="post" action="/console/sign-in" {
                input type="hidden" name="method" value="password";
                label { "Username" input name="username" autocomplete="username" required; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                button.primary type="submit" { "Sign in" }
            }
            details {
                summary { "Break-glass: sign in with an API key" }
                p.muted { "For emergencies only; the audit log marks such sessions." }
                form.stack method="post" action="/console/sign-in" {
                    input type="hidden" name="method" value="api-key";
                    label { "API key" input name="api_key" type="password" autocomplete="off" required; }
                    button type="submit" { "Sign in with API key" }
                }
            }
        },
    )
}

/// `GET /console/sign-in`.
pub async fn show(headers: axum::http::HeaderMap) -> Result<Markup, ConsoleError> {
    session::refuse_api_credentials(&headers)?;
    Ok(form(None))
}

#[derive(Deserialize)]
struct SignIn {
    method: String,
    username: Option<String>,
    password: Option<SecretString>,
    api_key: Option<SecretString>,
}

/// `POST /console/sign-in`.
pub async fn submit(State(state): State<AppState>, req: Request) -> Response {
    match sign_in(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn sign_in(state: AppState, req: Request) -> Result<Response, ConsoleError> {
    let (parts, body) = req.into_parts();
    session::refuse_api_credentials(&parts.headers)?;
    // No session yet, so no CSRF token: the origin check stops login CSRF.
    session::check_origin(&parts)?;
    let slot = parts.extensions.get::<AuditSlot>().cloned();
    let bytes = axum::body::to_bytes(body, state.rt.config.server.max_body_bytes)
        .await
        .map_err(|_| ConsoleError::bad_request("the form is too large"))?;
    let f: SignIn = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| ConsoleError::bad_request("the sign-in form is incomplete"))?;
    let rt = state.rt.clone();
    let refused = |m: &str| (StatusCode::UNAUTHORIZED, form(Some(m))).into_response();
    let principal: Result<(Principal, Option<String>), ServiceError> = match f.method.as_str() {
        "password" => {
            let username = f.username.unwrap_or_default();
            let password = f.password.unwrap_or_else(|| SecretString::from(""));
            run_detached(async move {
                let u = rt
                    .users
                    .authenticate_password(username.trim(), &password, now())
                    .await?;
                Ok((
                    Principal {
                        name: u.username,
                        role: u.role,
                        method: crate::services::AuthMethod::Cli,
                    },
                    None,
                ))
            })
            .await
        }
        "api-key" => {
            let key = f.api_key.unwrap_or_else(|| SecretString::from(""));
            run_detached(async move {
                let p = rt
                    .api_keys
                    .authenticate(key.expose_secret().trim(), now())
                    .await?;
                let id = match &p.method {
                    crate::services::AuthMethod::ApiKey { id, .. } => id.clone(),
                    _ => return Err(ServiceError::Internal("not an API key".into())),
                };
                let binding = rt
                    .api_keys
                    .record_live(&id)
                    .map(|(b, _)| b)
                    .ok_or_else(|| {
                        ServiceError::Unauthenticated("invalid or expired API key".into())
                    })?;
                Ok((p, Some(binding)))
            })
            .await
        }
        _ => return Err(ConsoleError::bad_request("unknown sign-in method")),
    };
    let (principal, binding) = match principal {
        Ok(p) => p,
        Err(ServiceError::Unauthenticated(_)) => {
            return Ok(refused(match f.method.as_str() {
                "password" => "Invalid username or password.",
                _ => "Invalid or expired API key.",
            }))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(slot) = &slot {
        // The sign-in's audit entry names who signed in, and how.
        let mut who = principal.clone();
        if binding.is_none() {
            who.method = crate::services::AuthMethod::AccessToken {
                jti: "console".into(),
                sid: None,
                exp: 0,
                key_binding: None,
                minted: false,
            };
        }
        slot.0
            .set_actor(crate::services::approvals::actor_of(&who, None));
    }
    let cookie = session::new_cookie_value()?;
    let t = now();
    let new = NewConsoleSession {
        id: uuid::Uuid::new_v4().to_string(),
        username: principal.name.clone(),
        cookie_hash: session::cookie_hash(&cookie),
        api_key_binding: binding,
        expires_at: t.saturating_add(session::SESSION_TTL),
        max_per_user: rt_max_sessions(&state),
        now: t,
    };
    let rt = state.rt.clone();
    let sid = new.id.clone();
    let evicted = crate::http::detached(async move {
        let evicted = rt.store.open_console_session(&new).await?;
        rt.tokens.sessions_ended(&evicted, t);
        Ok(evicted)
    })
    .await?;
    tracing::info!(user = %principal.name, session = %sid, evicted = evicted.len(),
        break_glass = principal_is_key(&principal), "console session opened");
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/".to_string()),
            (header::SET_COOKIE, session::set_cookie(&cookie)),
        ],
    )
        .into_response())
}

fn rt_max_sessions(state: &AppState) -> u32 {
    state.rt.tokens.settings().max_sessions
}

fn principal_is_key(p: &Principal) -> bool {
    matches!(p.method, crate::services::AuthMethod::ApiKey { .. })
}

/// `POST /console/sign-out`: ends the session server-side and clears the cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    SessionForm { console, .. }: SessionForm<crate::console::layout::NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let id = console.session_id.clone();
    crate::http::detached(async move {
        let t = now();
        if rt.store.revoke_session(&id, "signed-out", t).await? {
            rt.tokens.sessions_ended(std::slice::from_ref(&id), t);
        }
        Ok(())
    })
    .await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/sign-in".to_string()),
            (header::SET_COOKIE, session::clear_cookie()),
        ],
    )
        .into_response())
}

/// `GET /console/`: the first page the role may read.
pub async fn home(c: Console) -> Response {
    if c.may_read(crate::services::authz::Permission::ApiKeysRead) {
        see_other("/console/api-keys")
    } else {
        see_other("/console/sessions")
    }
}

/// `GET /console`: to `/console/`.
pub async fn slash() -> Response {
    see_other("/console/")
}
