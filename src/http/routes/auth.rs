//! OAuth endpoints and sessions: `/api/v1/auth/{token,revoke,introspect,sessions}`.

use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiPath, Caller, MaybeCaller, SessionCaller};
use crate::http::oauth::{BodyError, OAuthError, OAuthParams};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, run_detached, AppState};
use crate::runtime::now;
use crate::services::authz::Role;
use crate::services::tokens::grants::{expose, CustomRequest, GrantError, LoginUser};
use crate::services::tokens::{Introspection, Issued, SessionInfo};
use crate::services::ServiceError;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, PRAGMA};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// RFC 7523 §2.2 `client_assertion_type` of a JWT client assertion.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// `kgr_...`; password and refresh_token grants only. Rotates on every use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_expires_in: Option<i64>,
}

/// An RFC 6749 §5.2 error body.
#[derive(Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// invalid_request | invalid_grant | unsupported_grant_type | invalid_client |
    /// unauthorized_client | temporarily_unavailable | server_error
    pub error: String,
    pub error_description: String,
}

/// Parameters of `POST /api/v1/auth/token`, form-encoded or JSON.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    /// password | refresh_token | custom_token | client_credentials
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    subject: Option<String>,
    /// Seconds, 1 to tokens.max_custom_ttl (custom_token).
    expires_in: Option<i64>,
    /// One string or an array; added to keygate's own audience (custom_token).
    #[schema(value_type = Option<Object>)]
    audience: Option<String>,
    /// Extra claims (custom_token). Registered claims are refused.
    #[schema(value_type = Option<Object>)]
    claims: Option<String>,
    /// At most the caller's own role (custom_token).
    role: Option<Role>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` (client_credentials).
    client_assertion_type: Option<String>,
    /// A key-file assertion (client_credentials, RFC 7523).
    client_assertion: Option<String>,
    /// Optional; must equal the assertion's issuer, the accessID (client_credentials).
    client_id: Option<String>,
}

/// `token` and optional `token_type_hint` (RFC 7009 / RFC 7662).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenParam {
    token: String,
    /// access_token | refresh_token (a hint only; every kind is recognised).
    token_type_hint: Option<String>,
}

fn issued(i: Issued) -> Response {
    let body = TokenResponse {
        refresh_token: expose(&i).map(str::to_string),
        access_token: i.access_token,
        token_type: "Bearer",
        expires_in: i.expires_in,
        refresh_expires_in: i.refresh_expires_in,
    };
    (
        [(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")],
        Json(body),
    )
        .into_response()
}

impl From<GrantError> for OAuthError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::InvalidRequest(m) => OAuthError::invalid_request(m),
            GrantError::InvalidGrant(m) => {
                OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", m)
            }
            GrantError::UnsupportedGrantType(m) => {
                OAuthError::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", m)
            }
            GrantError::InvalidClient(m) => {
                OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", m)
            }
            GrantError::UnauthorizedClient(m) => {
                OAuthError::new(StatusCode::FORBIDDEN, "unauthorized_client", m)
            }
            GrantError::Service(s) => s.into(),
        }
    }
}

/// The token endpoint: password, refresh_token and custom_token grants.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "tokens",
    request_body(content((TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"))),
    security((), ("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = TokenResponse),
              (status = 400, body = OAuthErrorBody), (status = 401, body = OAuthErrorBody),
              (status = 403, body = OAuthErrorBody), (status = 413, body = OAuthErrorBody),
              (status = 503, body = OAuthErrorBody)))]
pub async fn token(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    body: Result<OAuthParams, BodyError>,
) -> Response {
    match grant(state, caller, body).await {
        Ok(i) => issued(i),
        Err(e) => e.into_response(),
    }
}

async fn grant(
    state: AppState,
    caller: Option<Result<crate::services::Principal, ApiError>>,
    body: Result<OAuthParams, BodyError>,
) -> Result<Issued, OAuthError> {
    let mut params = body?;
    let grant_type = params.required("grant_type")?.to_string();
    let rt = state.rt.clone();
    match grant_type.as_str() {
        "password" => {
            let username = params.required("username")?.to_string();
            let password = params.take_secret("password")?;
            // The whole grant runs detached: the attempt is counted before the password
            // is checked, so a client giving up mid-way must not leave a failure behind
            // for a login that would have succeeded.
            Ok(run_detached(async move {
                let user = password_user(&rt, &username, &password).await?;
                rt.tokens.password_login(&user, now()).await
            })
            .await?)
        }
        "refresh_token" => {
            let presented = params.take_secret("refresh_token")?;
            Ok(run_detached(async move {
                use secrecy::ExposeSecret;
                rt.tokens.refresh(presented.expose_secret(), now()).await
            })
            .await?)
        }
        "custom_token" => {
            let caller = match caller {
                None => {
                    return Err(OAuthError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "custom_token needs an API key or access token with tokens:custom",
                    ))
                }
                Some(Err(e)) if e.status == StatusCode::BAD_REQUEST => {
                    return Err(OAuthError::invalid_request(e.detail))
                }
                // The hardware that checks the credential is down, or the caller is rate
                // limited: say so (with Retry-After), never "invalid client".
                Some(Err(e))
                    if e.status == StatusCode::SERVICE_UNAVAILABLE
                        || e.status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(OAuthError::new(
                        e.status,
                        "temporarily_unavailable",
                        e.detail,
                    ))
                }
                Some(Err(e)) => {
                    return Err(OAuthError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        e.detail,
                    ))
                }
                Some(Ok(p)) => p,
            };
            let role = match params.str("role")? {
                Some(r) => Some(r.parse::<Role>().map_err(OAuthError::invalid_request)?),
                None => None,
            };
            let req = CustomRequest {
                subject: params.required("subject")?.to_string(),
                expires_in: params
                    .int("expires_in")?
                    .ok_or_else(|| OAuthError::invalid_request("missing parameter expires_in"))?,
                audience: params.strings("audience")?,
                claims: params.object("claims")?.unwrap_or_default(),
                role,
            };
            Ok(crate::app::tokens::custom(&rt, &caller, req, now()).await?)
        }
        "client_credentials" => {
            // RFC 7523 §2.2: the client authenticates with a key-file assertion.
            match params.str("client_assertion_type")? {
                Some(JWT_BEARER) => {}
                _ => {
                    return Err(OAuthError::invalid_request(format!(
                        "client_credentials needs client_assertion_type={JWT_BEARER} and a client_assertion signed with the key file's accessKey"
                    )))
                }
            }
            let assertion = params.required("client_assertion")?.to_string();
            let client_id = params.str("client_id")?.map(str::to_string);
            Ok(run_detached(async move {
                let client = rt
                    .key_files
                    .authenticate(&assertion, now())
                    .await
                    .map_err(|e| match e {
                        ServiceError::Unauthenticated(m) => GrantError::InvalidClient(m),
                        other => other.into(),
                    })?;
                if client_id.is_some_and(|id| id != client.name) {
                    return Err(GrantError::InvalidClient(
                        "client_id does not match the assertion's issuer".into(),
                    ));
                }
                rt.tokens.client_credentials(&client, now()).await
            })
            .await?)
        }
        other => Err(GrantError::UnsupportedGrantType(format!(
            "grant_type {other:?} is not supported; use password, refresh_token, custom_token or client_credentials"
        ))
        .into()),
    }
}

/// Checks a password; every refusal reads the same (RFC 6749 `invalid_grant`).
async fn password_user(
    rt: &crate::runtime::Runtime,
    username: &str,
    password: &secrecy::SecretString,
) -> Result<LoginUser, GrantError> {
    match rt
        .users
        .authenticate_password(username, password, now())
        .await
    {
        Ok(u) => Ok(LoginUser {
            username: u.username,
            role: u.role,
        }),
        Err(ServiceError::Unauthenticated(m)) => Err(GrantError::InvalidGrant(m)),
        Err(e) => Err(e.into()),
    }
}

/// RFC 7009 revocation. Holding a token is the authority to revoke it; unknown tokens
/// answer 200 as well.
#[utoipa::path(post, path = "/api/v1/auth/revoke", tag = "tokens",
    request_body(content((TokenParam = "application/x-www-form-urlencoded"),
        (TokenParam = "application/json"))),
    responses((status = 200, description = "Revoked, or was not a live token"),
              (status = 400, body = OAuthErrorBody), (status = 503, body = OAuthErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    body: Result<OAuthParams, BodyError>,
) -> Response {
    let result: Result<(), OAuthError> = async {
        let mut params = body?;
        let token = params.take_secret("token")?;
        let rt = state.rt.clone();
        run_detached(async move {
            use secrecy::ExposeSecret;
            rt.tokens.revoke(token.expose_secret(), now()).await
        })
        .await
        .map_err(OAuthError::from)?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, [(CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

/// RFC 7662 introspection of access tokens, refresh tokens and API keys. Needs
/// `tokens:introspect`. An inactive token answers exactly `{"active": false}`.
#[utoipa::path(post, path = "/api/v1/auth/introspect", tag = "tokens",
    request_body(content((TokenParam = "application/x-www-form-urlencoded"),
        (TokenParam = "application/json"))),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Introspection),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn introspect(
    State(state): State<AppState>,
    SessionCaller(caller): SessionCaller,
    body: Result<OAuthParams, BodyError>,
) -> Result<Response, ApiError> {
    let mut params = body?;
    let token = params
        .take_secret("token")
        .map_err(|e| ApiError::bad_request(e.description))?;
    use secrecy::ExposeSecret;
    let token = token.expose_secret();
    // keygate's own credentials first (the hot path: no extra parse). A token keygate
    // does not know whose issuer is a registered IdP is that IdP's (`docs/oauth-servers.md`: introspection
    // recognises external IdP tokens too).
    let answer = crate::app::tokens::introspect(&state.rt, &caller, token, now()).await?;
    Ok(([(CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}

/// One login session.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub username: String,
    pub created_at: String,
    /// When the refresh token chain ends at the latest.
    pub expires_at: String,
    pub last_used_at: String,
    /// True for the session of the access token making this request.
    pub current: bool,
}

impl From<SessionInfo> for SessionView {
    fn from(s: SessionInfo) -> Self {
        SessionView {
            id: s.id,
            username: s.username,
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            last_used_at: rfc3339(s.last_used_at),
            current: s.current,
        }
    }
}

/// The caller's own live sessions, newest first.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "tokens",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [SessionView]), (status = 401, body = Problem)))]
pub async fn sessions(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let list = crate::app::tokens::list_sessions(&state.rt, &caller, now()).await?;
    Ok(Json(list.into_iter().map(SessionView::from).collect()))
}

/// Ends a session: the caller's own (any role, read-only included), or a session of a
/// user the caller may manage. Its refresh token stops working and its access tokens are
/// denylisted.
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "tokens",
    params(("id" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn end_session(
    State(state): State<AppState>,
    SessionCaller(caller): SessionCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::tokens::end_session(&rt, &caller, &id, now()).await })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
