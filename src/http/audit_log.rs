//! Request ids, the audit scope of each request, and the audit of refusals.
//!
//! Every request gets an `x-request-id` (the client's, or a new UUID), echoed in the
//! response and written into audit entries. [`record`] is a route layer that:
//!
//! - opens the request's [`AuditScope`], which the `Caller` extractors fill with the
//!   authenticated principal. State changes write their audit entries through it, in the
//!   store transaction of the change (see `docs/lifecycle.md`, "Audit log"), so a change
//!   and its entry commit together or not at all;
//! - after the handler, counts each refused (401/403) or failed state-changing request
//!   in an aggregated bucket, one entry per (source, actor, reason, minute) with a count
//!   (`services/audit_buckets.rs`). An anonymous flood thus costs one entry per minute
//!   and reason, not one per request;
//! - as a safety net, records a successful state-changing request that wrote no entry of
//!   its own (a route whose change is not in the store, or a bug) after the fact, counted
//!   in `keygate_audit_after_the_fact_total` and logged.
//!
//! Token issuance, introspection and the signing service are hot paths and not admin
//! actions: only their refusals (400/401/403 from the token endpoint, 401/403 elsewhere)
//! are counted.

use super::AppState;
use crate::runtime::now;
use crate::services::audit_buckets::Failure;
use crate::services::Principal;
use crate::store::audit::NewAuditEntry;
use crate::store::audit_scope::AuditScope;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's [`AuditScope`], in the request extensions for the `Caller` extractors.
#[derive(Clone, Default, Debug)]
pub struct AuditSlot(pub AuditScope);

impl AuditSlot {
    /// Records who the request authenticated as.
    pub fn set(parts: &Parts, p: &Principal) {
        if let Some(slot) = parts.extensions.get::<AuditSlot>() {
            let actor = crate::services::approvals::actor_of(p, request_id_of(parts));
            slot.0.set_actor(actor);
        }
    }
}

fn request_id_of(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect())
}

/// The request's id, for audit entries written by services.
#[derive(Debug, Clone)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(request_id_of(parts)))
    }
}

/// Paths whose successful answers are not admin actions (see the module docs).
fn hot_path(route: &str) -> bool {
    matches!(
        route,
        "/api/v1/auth/token" | "/api/v1/auth/introspect" | "/api/v1/keys/{ring}/sign"
    )
}

/// The client's address: the one the rate limiter settled on (the socket's peer, or the
/// `X-Forwarded-For` entry of a trusted proxy; see `docs/operations.md`), else the socket's
/// peer, else `None` (in-process tests).
pub fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    let ext = req.extensions();
    ext.get::<super::rate_limit::ClientAddr>()
        .map(|c| c.0)
        .or_else(|| ext.get::<crate::conn::PeerAddr>().map(|p| p.0.ip()))
        .or_else(|| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

/// [`client_ip`] as text, or `unknown`.
pub fn source_of(req: &Request) -> String {
    client_ip(req).map_or_else(|| "unknown".into(), |ip| ip.to_string())
}

/// A method as a bounded label: extension methods are all `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Route layer: the request's audit scope, and the entries of refusals (see the module
/// docs).
pub async fn record(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Kept as handles (reference counts), not copies: the text is needed only when an
    // entry or a failure bucket is written, which the hot paths' successes never do.
    let method = req.method().clone();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let uri = req.uri().clone();
    let ip = client_ip(&req);
    // The verified client certificate of a mutual-TLS connection, if any.
    let client_cert_serial = req
        .extensions()
        .get::<crate::tls::client_identity::ClientCert>()
        .map(|c| c.names.serial.clone());
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect::<String>());
    let scope = AuditScope::new(request_id, client_cert_serial);
    scope.set_source(ip);
    req.extensions_mut().insert(AuditSlot(scope.clone()));
    let resp = scope.clone().run(next.run(req)).await;
    let status = resp.status();
    let changing = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let action = || format!("http:{} {route}", method_label(&method));
    if scope.written() > 0 {
        // Entries written in the request's transactions count toward
        // `audit.checkpoint_every` like any other.
        state.rt.audit.checkpoint_if_due(now(), false).await;
    }
    if status.is_success() || status.is_redirection() {
        // A console request without a live session was only sent to sign in.
        let no_session = resp
            .extensions()
            .get::<crate::console::error::NoSession>()
            .is_some();
        if changing && !hot_path(route) && scope.written() == 0 && !no_session {
            metrics::counter!("keygate_audit_after_the_fact_total").increment(1);
            // A TLS reload changes only memory; anything else here is a route whose
            // change skipped the store's audited write paths.
            if route != "/api/v1/tls/reload" {
                tracing::warn!(route = %route, "a state-changing request wrote no audit entry in its transaction; recording it after the fact");
            }
            let entry = NewAuditEntry {
                time: now(),
                actor: scope.actor(),
                action: action(),
                target: uri.path().to_string(),
                outcome: status.as_u16().to_string(),
            };
            // A failure is counted and logged by the audit service.
            let _recorded = state.rt.audit.record(entry).await;
        }
        return resp;
    }
    let refused = matches!(status.as_u16(), 401 | 403)
        || (route == "/api/v1/auth/token" && status.as_u16() == 400);
    let wanted = if hot_path(route) {
        refused
    } else {
        changing || refused
    };
    if wanted {
        state.rt.audit.count_failure(Failure {
            time: now(),
            source: ip.map_or_else(|| "unknown".into(), |ip| ip.to_string()),
            actor: scope.actor(),
            action: action(),
            outcome: status.as_u16().to_string(),
        });
    }
    resp
}

/// Request-id layers: keep a client's `x-request-id` or set a UUID, and echo it.
pub fn request_id_layers<S>(router: axum::Router<S>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
