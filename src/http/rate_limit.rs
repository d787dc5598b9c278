//! The per-source rate limits as middleware (docs/operations.md "Limits").
//!
//! Before routing: a source serving a failure penalty gets 429; a request without any
//! credential takes a cell from its source's `limits.unauthenticated` bucket. After the
//! handler: a failed request (401 anywhere, 400 from the token endpoint) takes a cell
//! from the source's `limits.failed` bucket, and the one that finds it empty is answered
//! 429 instead. A 429 costs no hardware, no store read and no audit row: this layer sits
//! outside the router, so refused requests never reach the audit middleware.
//!
//! Requests that did not come through keygate's own listeners (in-process tests) carry
//! no [`PeerAddr`](crate::conn::PeerAddr) and are not limited per source.

use super::error::ApiError;
use super::AppState;
use crate::conn::PeerAddr;
use crate::limits::{client_addr, SourceKey};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The client address the limits used, for logs and audit.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn carries_credential(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key("x-api-key")
        || h.contains_key(header::AUTHORIZATION)
        || h.contains_key(super::extract::IDP_TOKEN_HEADER)
}

pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>().copied() else {
        return next.run(req).await;
    };
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let limits = state.rt.limits.clone();
    let client = client_addr(
        peer.ip(),
        req.headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes()),
        limits.trusted_proxies(),
    );
    req.extensions_mut().insert(ClientAddr(client));
    let source = SourceKey::of(client);
    if let Err(l) = limits.check_penalty(&source) {
        return ApiError::from(l).into_response();
    }
    if !carries_credential(&req) {
        if let Err(l) = limits.check_unauthenticated(&source) {
            return ApiError::from(l).into_response();
        }
    }
    let token_endpoint = req.uri().path() == "/api/v1/auth/token";
    let resp = next.run(req).await;
    let failed = resp.status() == StatusCode::UNAUTHORIZED
        || (token_endpoint && resp.status() == StatusCode::BAD_REQUEST);
    if failed {
        if let Err(l) = limits.record_failure(&source) {
            tracing::info!(source = %source, "source refused for too many failed requests");
            return ApiError::from(l).into_response();
        }
    }
    resp
}
