//! The request timeout (`limits.request_timeout`): a request that takes longer is
//! answered 503 problem+json. Connection-level limits live in `crate::conn`.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Answers 503 problem+json when a request takes longer than `limits.request_timeout`.
pub async fn request_timeout(
    State(state): State<super::AppState>,
    req: Request,
    next: Next,
) -> Response {
    within(&state, next.run(req)).await
}

/// Runs `fut` within `limits.request_timeout`, answering 503 problem+json past it.
pub async fn within(
    state: &super::AppState,
    fut: impl std::future::Future<Output = Response>,
) -> Response {
    let limit = state.rt.config.limits.request_timeout.0;
    match tokio::time::timeout(limit, fut).await {
        Ok(resp) => resp,
        Err(_) => {
            metrics::counter!("keygate_http_request_timeouts_total").increment(1);
            super::error::ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "request-timeout",
                "Request timed out",
                format!(
                    "the request took longer than limits.request_timeout ({} s)",
                    limit.as_secs()
                ),
            )
            .into_response()
        }
    }
}
