//! The web layer: axum routers, extractors, problem+json errors, OpenAPI.
//!
//! [`app`] builds the whole router from an [`AppState`]; tests drive it with
//! `tower::ServiceExt::oneshot`, `serve` puts it on a listener.

pub mod audit_log;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod openapi_problems;
pub mod rate_limit;
pub mod routes;
pub mod stale;
pub mod time_fmt;
pub mod timeout;

use crate::runtime::Runtime;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use std::sync::Arc;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub rt: Arc<Runtime>,
}

/// The operations-only application for `server.ops_listen`: health, readiness, metrics.
pub fn ops_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(routes::health::healthz))
        .route("/readyz", axum::routing::get(routes::health::readyz))
        .route("/metrics", axum::routing::get(routes::health::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// The complete HTTP application.
pub fn app(state: AppState) -> Router {
    let limit = state.rt.config.server.max_body_bytes;
    let router = routes::router()
        // The admin console (docs/console.md), on the same listener.
        .merge(crate::console::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_log::record,
        ))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        // A replica behind the change feed refuses before anything is decided or written.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            stale::refuse_when_stale,
        ))
        // Metrics, the request timeout and the rate limits, outside the audit middleware
        // (a refused request writes nothing): one layer, see [`front`].
        .layer(axum::middleware::from_fn_with_state(state.clone(), front))
        .layer(axum::middleware::from_fn(crate::console::headers::apply))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(request_span)
                // 5xx answers are already logged where they arise, with their cause.
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                ),
        );
    audit_log::request_id_layers(router).with_state(state)
}

/// The outer steps of every request, in this order: request metrics
/// ([`metrics::observe`]), the request timeout ([`timeout::within`]), then the rate limits
/// ([`rate_limit::limit`]). One middleware instead of three: each `from_fn` layer clones
/// the inner service and boxes a future on every request, which on the token paths cost
/// about as much as the steps themselves (docs/performance.md, "Where the time goes").
async fn front(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    metrics::observe(req, move |req| async move {
        let limited = rate_limit::limit(axum::extract::State(state.clone()), req, next);
        timeout::within(&state, limited).await
    })
    .await
}

/// Runs a state-changing operation on its own task and awaits it, so a client that
/// disconnects mid-request cannot cancel it between the store commit and the in-memory
/// update that must follow.
pub async fn detached<T, F>(op: F) -> Result<T, error::ApiError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, crate::services::ServiceError>> + Send + 'static,
{
    run_detached(op).await.map_err(error::ApiError::from)
}

/// [`detached`] for operations with their own error type (the OAuth grants).
pub async fn run_detached<T, E, F>(op: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<crate::services::ServiceError> + Send + 'static,
    F: std::future::Future<Output = Result<T, E>> + Send + 'static,
{
    // The request's audit scope goes along, so the change's audit entry names the caller.
    let scope = crate::store::audit_scope::AuditScope::current();
    let task = async move {
        match scope {
            Some(scope) => scope.run(op).await,
            None => op.await,
        }
    };
    match tokio::spawn(task).await {
        Ok(result) => result,
        Err(e) => Err(crate::services::ServiceError::Internal(format!(
            "operation task failed: {e}"
        ))
        .into()),
    }
}

/// The request log's span: method, URI and, on an mTLS connection, the verified client
/// certificate's subject and serial.
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    match req
        .extensions()
        .get::<crate::tls::client_identity::ClientCert>()
    {
        Some(c) => tracing::debug_span!("request", method = %req.method(), uri = %req.uri(),
            version = ?req.version(), client_cert.subject = %c.names.subject,
            client_cert.serial = %c.names.serial),
        None => tracing::debug_span!("request", method = %req.method(), uri = %req.uri(),
            version = ?req.version()),
    }
}

/// A panic in a handler is a bug: answer 500 problem+json and keep serving.
fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    tracing::error!("request handler panicked");
    error::ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "internal error; the server log has details",
    )
    .into_response()
}
