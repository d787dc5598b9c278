//! The audit log (`/api/v1/audit`) and the audit ring's public keys.

use crate::http::error::{ApiError, Problem};
use crate::http::extract::Caller;
use crate::http::AppState;
use crate::store::audit::AuditEntry;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

/// `GET /api/v1/audit` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries with a seq greater than this (default 0: from the start).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// One audit entry. `prev_hash` and `hash` are lowercase hex SHA-256.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    /// RFC 3339.
    pub time: String,
    pub actor: String,
    pub auth_method: String,
    pub client_cert_serial: Option<String>,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: Option<String>,
    /// The client address of an aggregated entry (refused or failed requests).
    pub source: Option<String>,
    /// How many requests the entry stands for: 1, or the size of an aggregated bucket
    /// (one per source, actor, reason and minute).
    pub count: i64,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        AuditEntryView {
            seq: e.seq,
            time: crate::http::time_fmt::rfc3339(e.time),
            actor: e.actor,
            auth_method: e.auth_method,
            client_cert_serial: e.client_cert_serial,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            request_id: e.request_id,
            source: e.source,
            count: e.count,
            prev_hash: crate::store::audit::hex(&e.prev_hash),
            hash: crate::store::audit::hex(&e.hash),
        }
    }
}

/// Audit entries in seq order. Needs `audit:read` (admins and read-only).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [AuditEntryView]), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditEntryView>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if after < 0 || !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "after must be 0 or more and limit between 1 and 1000",
        ));
    }
    let entries = crate::app::audit::entries(&state.rt, &caller, after, limit).await?;
    Ok(Json(
        entries.into_iter().map(AuditEntryView::from).collect(),
    ))
}

/// The audit ring's public keys (JWK Set; each key also carries `keygate_state` and
/// `keygate_version`). Never part of `/.well-known/jwks.json`.
#[utoipa::path(get, path = "/api/v1/audit/keys", tag = "audit",
    responses((status = 200, description = "JWK Set of the audit ring", body = Object)))]
pub async fn keys(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.rt.audit.public_keys())
}
