//! The staleness guard (docs/deployment.md, "Replicas and the change feed").
//!
//! A replica answers from in-memory state that the change feed keeps current: the API-key
//! index, key-file bindings, IdP keys, custom roles, key versions and the token denylist.
//! When its last successful apply of the feed is older than `cluster.max_staleness` (the
//! store is unreachable or stuck), that state may miss a revocation or a deletion made on
//! another replica. The replica then refuses every request except `/healthz`, `/readyz`
//! and `/metrics` with 503 `replica-stale` and `Retry-After`, until an apply succeeds
//! again: no authentication, no token verification or introspection, no JWKS (a key may
//! have been destroyed elsewhere), no token issuance. `/readyz` answers 503 as well, so a
//! load balancer takes the replica out.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The problem `type` slug of a refusal by a stale replica.
pub const SLUG: &str = "replica-stale";

fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The 503 a stale replica answers, `age` being how old its last apply is.
pub fn refusal(age: std::time::Duration, max: std::time::Duration) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        SLUG,
        "Replica not current",
        format!(
            "this replica last applied the change feed {} ms ago (cluster.max_staleness is {} ms); \
             it may be missing revocations made elsewhere, so it refuses until the store answers again",
            age.as_millis(),
            max.as_millis()
        ),
    );
    e.retry_after = Some(1);
    e
}

pub async fn refuse_when_stale(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(age) = state.rt.feed.stale_for() {
        if !exempt(req.uri().path()) {
            metrics::counter!("keygate_stale_refusals_total").increment(1);
            return refusal(age, state.rt.feed.max_staleness()).into_response();
        }
    }
    next.run(req).await
}
