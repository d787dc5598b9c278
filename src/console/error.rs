//! The console's one error type. Refusals of the use-case layer keep the status the API
//! would give them ([`crate::http::error::ApiError`]), rendered as an HTML page; a
//! missing or ended session sends the browser to the sign-in page.

use crate::http::error::ApiError;
use crate::services::ServiceError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

/// Marks a response that sent the browser to sign in: nothing happened, so the audit
/// layer records nothing for it (a garbage cookie costs no store write).
#[derive(Debug, Clone, Copy)]
pub struct NoSession;

#[derive(Debug)]
pub enum ConsoleError {
    /// No live session: go to the sign-in page.
    SignIn,
    /// A refusal or failure with the API's status and detail.
    Api(ApiError),
}

impl ConsoleError {
    pub fn bad_request(m: impl Into<String>) -> Self {
        ConsoleError::Api(ApiError::bad_request(m.into()))
    }

    pub fn forbidden(m: impl Into<String>) -> Self {
        ConsoleError::Api(ApiError::forbidden(m.into()))
    }

    pub fn internal(m: &str) -> Self {
        ConsoleError::from(ServiceError::Internal(m.to_string()))
    }
}

impl From<ServiceError> for ConsoleError {
    fn from(e: ServiceError) -> Self {
        ConsoleError::Api(ApiError::from(e))
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Api(e)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::SignIn => {
                let mut resp = (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, "/console/sign-in".to_string()),
                        (header::SET_COOKIE, super::session::clear_cookie()),
                    ],
                )
                    .into_response();
                resp.extensions_mut().insert(NoSession);
                resp
            }
            ConsoleError::Api(e) => {
                let status = e.status;
                let page = super::layout::bare(
                    e.title,
                    html! {
                        h1 { (e.title) }
                        p.error role="alert" { (e.detail) }
                        p { a href="/console/" { "Back to the console" } }
                    },
                );
                let mut resp = (status, page).into_response();
                if let Some(secs) = e.retry_after {
                    if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                        resp.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                resp
            }
        }
    }
}
