//! OAuth request bodies and RFC 6749 §5.2 error responses.
//!
//! The token, revoke and introspect endpoints accept `application/x-www-form-urlencoded`
//! (what the OAuth RFCs require) and JSON (what `docs/tokens.md` adds). Both become one parameter
//! map. Form parameters may not repeat (RFC 6749 §3.2); form values are strings, so
//! numbers and objects are also accepted in their text form.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{Map, Value};

/// An RFC 6749 §5.2 error: `{"error": code, "error_description": text}`.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "error_description": self.description});
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keygate\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Turns a service failure on an OAuth endpoint into RFC 6749 shape.
impl From<crate::services::ServiceError> for OAuthError {
    fn from(e: crate::services::ServiceError) -> Self {
        use crate::services::ServiceError as E;
        match e {
            E::Invalid(m) | E::MalformedCredentials(m) => OAuthError::invalid_request(m),
            E::Unauthenticated(m) => OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", m),
            E::Forbidden(m) => OAuthError::new(StatusCode::FORBIDDEN, "unauthorized_client", m),
            E::NotFound(m) | E::Conflict(m) => {
                OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", m)
            }
            other => {
                // The web layer's own mapping logs and redacts; reuse its status.
                let api = super::error::ApiError::from(other);
                let code = if api.status == StatusCode::SERVICE_UNAVAILABLE {
                    "temporarily_unavailable"
                } else {
                    "server_error"
                };
                OAuthError::new(api.status, code, api.detail)
            }
        }
    }
}

/// Why a body could not be read as OAuth parameters.
#[derive(Debug)]
pub struct BodyError {
    pub too_large: bool,
    pub detail: String,
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        OAuthError::from(self).into_response()
    }
}

impl From<BodyError> for OAuthError {
    fn from(e: BodyError) -> Self {
        if e.too_large {
            OAuthError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", e.detail)
        } else {
            OAuthError::invalid_request(e.detail)
        }
    }
}

impl From<BodyError> for super::error::ApiError {
    fn from(e: BodyError) -> Self {
        if e.too_large {
            super::error::ApiError::payload_too_large(e.detail)
        } else {
            super::error::ApiError::bad_request(e.detail)
        }
    }
}

/// The parameters of an OAuth request. They include passwords and refresh tokens, so
/// `Debug` shows parameter names only.
#[derive(Default)]
pub struct OAuthParams(Map<String, Value>);

impl std::fmt::Debug for OAuthParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthParams {
    type Rejection = BodyError;

    async fn from_request(req: Request, state: &S) -> Result<Self, BodyError> {
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rej| BodyError {
                too_large: rej.status() == StatusCode::PAYLOAD_TOO_LARGE,
                detail: if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "request body exceeds the configured limit".into()
                } else {
                    rej.body_text()
                },
            })?;
        OAuthParams::decode(&ctype, &bytes)
    }
}

impl OAuthParams {
    /// Decodes a body of media type `ctype` (lower case, no parameters): a form or a
    /// JSON object. Pure, so it can be fuzzed (`fuzz/`).
    pub fn decode(ctype: &str, bytes: &[u8]) -> Result<OAuthParams, BodyError> {
        let bad = |detail: String| BodyError {
            too_large: false,
            detail,
        };
        match ctype {
            "application/x-www-form-urlencoded" => {
                let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
                    .map_err(|e| bad(format!("form body: {e}")))?;
                let mut map = Map::new();
                for (k, v) in pairs {
                    if map.insert(k.clone(), Value::String(v)).is_some() {
                        return Err(bad(format!("parameter {k:?} is repeated")));
                    }
                }
                Ok(OAuthParams(map))
            }
            "application/json" => match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(map)) => Ok(OAuthParams(map)),
                Ok(_) => Err(bad("JSON body must be an object".into())),
                Err(e) => Err(bad(format!("JSON body: {e}"))),
            },
            _ => Err(bad(
                "expected Content-Type application/x-www-form-urlencoded or application/json"
                    .into(),
            )),
        }
    }
}

fn wrong_type(name: &str, what: &str) -> OAuthError {
    OAuthError::invalid_request(format!("{name} must be {what}"))
}

impl OAuthParams {
    /// A string parameter; empty counts as absent (RFC 6749 §3.1).
    pub fn str(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.str(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    /// Takes a secret parameter out of the map into a `SecretString`, which zeroizes it.
    pub fn take_secret(&mut self, name: &str) -> Result<SecretString, OAuthError> {
        match self.0.remove(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(SecretString::from(s)),
            Some(Value::String(_)) | None | Some(Value::Null) => Err(OAuthError::invalid_request(
                format!("missing parameter {name}"),
            )),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// An integer, as a JSON number or as decimal text.
    pub fn int(&self, name: &str) -> Result<Option<i64>, OAuthError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "an integer")),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| wrong_type(name, "an integer")),
            Some(_) => Err(wrong_type(name, "an integer")),
        }
    }

    /// A JSON object, or its text in a form body.
    pub fn object(&self, name: &str) -> Result<Option<Map<String, Value>>, OAuthError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                _ => Err(wrong_type(name, "a JSON object")),
            },
            Some(_) => Err(wrong_type(name, "a JSON object")),
        }
    }

    /// One string or an array of strings.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, OAuthError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| wrong_type(name, "a string or an array of strings"))
                })
                .collect(),
            Some(_) => Err(wrong_type(name, "a string or an array of strings")),
        }
    }
}
