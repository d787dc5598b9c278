//! Liveness, readiness and metrics.

use crate::hardware::Health;
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a readiness probe waits for a backend before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store and every configured hardware backend answer, and the replica
/// applied the change feed within `cluster.max_staleness`.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object),
              (status = 503, description = "A backend or the store is unreachable, or the replica's last apply of the change feed is older than `cluster.max_staleness`", body = Problem)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Some(age) = state.rt.feed.stale_for() {
        tracing::warn!(
            age_ms = age.as_millis() as u64,
            "not ready: the change feed is stale"
        );
        return Err(crate::http::stale::refusal(
            age,
            state.rt.feed.max_staleness(),
        ));
    }
    let mut report = BTreeMap::new();
    let mut ready = true;
    for (name, exec) in state.rt.keys.backends() {
        // An unhealthy probe is an error to the executor, so its metric says so.
        let probe = exec.probe();
        let health = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(())) => Health::Ok,
            Ok(Err(e)) => Health::Unavailable {
                reason: e.to_string(),
            },
            Err(_) => Health::Unavailable {
                reason: "probe timed out".into(),
            },
        };
        if health != Health::Ok {
            ready = false;
            tracing::warn!(backend = %name, health = ?health, "backend not ready");
        }
        report.insert(name.clone(), health);
    }
    let store_ok = state.rt.store.ping().await.is_ok();
    if ready && !store_ok {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Store unavailable",
            "not ready: the metadata store is unreachable",
        ));
    }
    if !ready || !store_ok {
        let down: Vec<&String> = report
            .iter()
            .filter(|(_, h)| **h != Health::Ok)
            .map(|(n, _)| n)
            .collect();
        return Err(ApiError::unavailable(format!(
            "not ready: backends down {down:?}, store {}",
            if store_ok { "ok" } else { "unreachable" }
        )));
    }
    let feed = json!({
        "position": state.rt.feed.position(),
        "last_apply_ms_ago": state.rt.feed.age().map(|a| a.as_millis() as u64),
    });
    Ok(Json(
        json!({"status": "ready", "backends": report, "store": "ok", "change_feed": feed}),
    ))
}

/// Prometheus text exposition, served only by the ops listener (`server.ops_listen`);
/// the main listener answers 404, so metrics never reach API clients
/// (`docs/operations.md`). Not in the OpenAPI document of the main listener.
pub async fn metrics() -> impl IntoResponse {
    match crate::telemetry::metrics() {
        Some(h) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => ApiError::unavailable("metrics recorder is not installed").into_response(),
    }
}
