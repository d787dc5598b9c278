//! Request ids and the request-level audit trail.
//!
//! Every request gets an `x-request-id` (the client's, or a new UUID), echoed in the
//! response and written into audit entries. [`record`] is a route layer that appends one
//! audit entry per state-changing request (any method but GET/HEAD) and per 401/403
//! answer, with the principal, route, status and request id. These entries are written
//! right after the handler answers, not in the transaction of the change: a crash in
//! between loses the entry. Key state changes and approvals are also recorded
//! transactionally by the store (see `docs/lifecycle.md`).
//!
//! Token issuance, introspection and the signing service are hot paths and not admin
//! actions: only their failures (400/401/403 from the token endpoint, 401/403 elsewhere)
//! are recorded.

use super::AppState;
use crate::runtime::now;
use crate::services::Principal;
use crate::store::audit::{AuditActor, NewAuditEntry};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, Mutex};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where authentication leaves the caller for [`record`]: set in the request
/// extensions before the handler runs, filled by the `Caller` extractors.
#[derive(Clone, Default, Debug)]
pub struct AuditSlot(pub Arc<Mutex<Option<AuditActor>>>);

impl AuditSlot {
    /// Records who the request authenticated as.
    pub fn set(parts: &Parts, p: &Principal) {
        if let Some(slot) = parts.extensions.get::<AuditSlot>() {
            let actor = crate::services::approvals::actor_of(p, request_id_of(parts));
            if let Ok(mut s) = slot.0.lock() {
                *s = Some(actor);
            }
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

/// Route layer: the request-level audit entry.
pub async fn record(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
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
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let changing = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let auth_failure =
        matches!(status, 401 | 403) || (route == "/api/v1/auth/token" && status == 400);
    let wanted = if hot_path(&route) {
        auth_failure
    } else {
        changing || auth_failure
    };
    if !wanted {
        return resp;
    }
    let actor = slot
        .0
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .unwrap_or_else(|| AuditActor {
            principal: "anonymous".into(),
            method: "none".into(),
            client_cert_serial: None,
            request_id: None,
        });
    let actor = AuditActor {
        request_id: request_id.clone(),
        client_cert_serial: actor.client_cert_serial.or(client_cert_serial),
        ..actor
    };
    let entry = NewAuditEntry {
        time: now(),
        actor,
        action: format!("http:{method} {route}"),
        target: path,
        outcome: status.to_string(),
    };
    // Recorded before the answer leaves, so a client that saw it can find the entry.
    let _ = state.rt.audit.record(entry).await;
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
