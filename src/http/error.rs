//! RFC 9457 problem details: the only place where meaning becomes an HTTP status.
//!
//! Every error response is `application/problem+json` with a stable `type`
//! (`urn:keygate:problem:<slug>`), so clients branch on `type`, never on `detail`.
//! 401 always carries `WWW-Authenticate: Bearer`. Internal errors are logged with an id
//! and answered with that id only: device messages and store errors stay out of bodies.

use crate::services::ServiceError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem+json response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// RFC 6750 error code for `WWW-Authenticate` on 400/401.
    pub bearer_error: Option<&'static str>,
    /// `Retry-After` in seconds (429; 503 sends 1 without it).
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable identifier of the problem kind, e.g. `urn:keygate:problem:unauthenticated`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            slug,
            title,
            detail: detail.into(),
            bearer_error: None,
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Malformed request",
            detail,
        )
    }

    /// 401 for credentials that were presented but do not authenticate.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        let mut e = Self::credentials_required(detail);
        e.bearer_error = Some("invalid_token");
        e
    }

    /// 401 for a request with no credentials (RFC 6750 §3.1: no error code then).
    pub fn credentials_required(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Permission denied",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
            detail,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this path does not accept that method",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hardware-unavailable",
            "Hardware unavailable",
            detail,
        )
    }
}

/// A refusal by a rate limit (docs/operations.md "Limits"): 429, `Retry-After`.
impl From<crate::limits::Limited> for ApiError {
    fn from(l: crate::limits::Limited) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!(
                "rate limit ({}) exceeded; retry after {} s",
                l.limit,
                l.retry_after_secs()
            ),
        );
        e.retry_after = Some(l.retry_after_secs());
        e
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ApiError::bad_request(m),
            ServiceError::MalformedCredentials(m) => {
                let mut e = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-credentials",
                    "Malformed credentials",
                    m,
                );
                e.bearer_error = Some("invalid_request");
                e
            }
            ServiceError::Unauthenticated(m) => ApiError::unauthenticated(m),
            ServiceError::Forbidden(m) => ApiError::forbidden(m),
            ServiceError::NotFound(m) => ApiError::not_found(m),
            ServiceError::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", m)
            }
            ServiceError::Unavailable(m) => {
                tracing::warn!(error = %m, "hardware unavailable");
                ApiError::unavailable("the key hardware is unavailable; retry later")
            }
            ServiceError::StoreFull(m) => {
                tracing::error!(error = %m, "the store's disk is full; writes fail until space is freed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-full",
                    "Store full",
                    "the metadata store's disk is full; nothing was changed; retry after space is freed",
                )
            }
            ServiceError::StoreUnavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Store unavailable",
                    "the metadata store is unavailable; retry later",
                )
            }
            ServiceError::RateLimited {
                detail,
                retry_after,
            } => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    detail,
                );
                e.retry_after = Some(retry_after.max(1));
                e
            }
            ServiceError::Internal(m) => {
                let id = uuid::Uuid::new_v4();
                tracing::error!(error_id = %id, error = %m, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    format!("internal error {id}; the server log has details"),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("urn:keygate:problem:{}", self.slug),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, json).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED || self.bearer_error.is_some() {
            let v = match self.bearer_error {
                Some(code) => format!("Bearer realm=\"keygate\", error=\"{code}\""),
                None => "Bearer realm=\"keygate\"".to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}
