//! The TLS & CA profiles page (read-only): the serving certificate's summary, the mTLS
//! mode, each CA profile with its CRL sources and the result of their last fetch, as
//! `GET /api/v1/tls` reports them ([`crate::app::ca_profiles::status`]). Changing CA
//! profiles stays with the API and CLI (docs/tls.md).

use crate::console::error::ConsoleError;
use crate::console::layout::page;
use crate::console::session::Console;
use crate::http::AppState;
use axum::extract::State;
use maud::{html, Markup};
use serde_json::Value;

/// A JSON value as text: strings bare, lists one per line, objects as `key: value`.
fn show(v: &Value) -> Markup {
    html! {
        @match v {
            Value::String(s) => (s),
            Value::Null => span.muted { "none" },
            Value::Array(items) => { @for i in items { (show(i)) br; } },
            Value::Object(m) => { @for (k, x) in m { strong { (k) ": " } (show(x)) br; } },
            other => (other.to_string()),
        }
    }
}

/// `GET /console/tls`.
pub async fn status(State(state): State<AppState>, c: Console) -> Result<Markup, ConsoleError> {
    let body = match crate::app::ca_profiles::status(&state.rt.tls, &c.principal) {
        Ok(report) => {
            let v = serde_json::to_value(&report)
                .map_err(|_| ConsoleError::internal("the TLS report did not serialize"))?;
            let profiles = v["profiles"].as_array().cloned().unwrap_or_default();
            html! {
                p { "mTLS mode: " strong { (show(&v["mtls"])) } ". Loaded " (show(&v["loaded_at"])) "." }
                h2 { "Certificate" }
                div.table-wrap { table { tbody {
                    @if let Some(m) = v["certificate"].as_object() {
                        @for (k, x) in m { tr { th scope="row" { (k) } td { (show(x)) } } }
                    }
                } } }
                h2 { "CA profiles" }
                @if profiles.is_empty() { p.muted { "No CA profile: client certificates are not checked." } }
                @for p in &profiles {
                    div.table-wrap { table { tbody {
                        @if let Some(m) = p.as_object() {
                            @for (k, x) in m { tr { th scope="row" { (k) } td { (show(x)) } } }
                        }
                    } } }
                }
            }
        }
        Err(crate::services::ServiceError::Forbidden(m)) => return Err(ConsoleError::forbidden(m)),
        Err(e) => html! { p.muted { "Not serving TLS: " (e.to_string()) } },
    };
    Ok(page(&c, "tls", "TLS & CA profiles", body))
}
