//! The Audit log page: the newest entries, filterable by actor, action, target and time;
//! the chain verification status on request and the last signed checkpoint; export of
//! the filtered entries as JSONL. Reading needs `audit:read`, as on the API.

use crate::console::error::ConsoleError;
use crate::console::layout::{page, time, PAGE_SIZE};
use crate::console::session::Console;
use crate::http::AppState;
use crate::services::authz::{require, Permission};
use crate::store::audit::AuditEntry;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

const PATH: &str = "/console/audit";
/// How many of the newest entries the page searches.
const WINDOW: i64 = 1000;

#[derive(Debug, Default, Deserialize)]
pub struct AuditFilter {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    /// YYYY-MM-DD (UTC), inclusive.
    from: Option<String>,
    /// YYYY-MM-DD (UTC), inclusive.
    to: Option<String>,
    page: Option<usize>,
    /// `1`: verify the whole chain and its checkpoints.
    verify: Option<String>,
}

fn day(s: Option<&str>, end: bool) -> Result<Option<i64>, ConsoleError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt)
        .map_err(|_| ConsoleError::bad_request("dates are YYYY-MM-DD"))?;
    let t = d.midnight().assume_utc().unix_timestamp();
    Ok(Some(if end { t + 86_399 } else { t }))
}

fn contains(hay: &str, needle: &Option<String>) -> bool {
    needle
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
}

/// The newest entries matching `f`, newest first.
async fn matching(state: &AppState, f: &AuditFilter) -> Result<Vec<AuditEntry>, ConsoleError> {
    let (head, _) = state
        .rt
        .store
        .audit_head()
        .await
        .map_err(crate::services::ServiceError::from)?;
    let from = day(f.from.as_deref(), false)?;
    let to = day(f.to.as_deref(), true)?;
    let mut entries = state
        .rt
        .audit
        .entries(head.saturating_sub(WINDOW).max(0), WINDOW)
        .await?;
    entries.retain(|e| {
        contains(&e.actor, &f.actor)
            && contains(&e.action, &f.action)
            && contains(&e.target, &f.target)
            && from.is_none_or(|t| e.time >= t)
            && to.is_none_or(|t| e.time <= t)
    });
    entries.reverse();
    Ok(entries)
}

fn query_string(f: &AuditFilter) -> String {
    serde_urlencoded::to_string([
        ("actor", f.actor.as_deref().unwrap_or("")),
        ("action", f.action.as_deref().unwrap_or("")),
        ("target", f.target.as_deref().unwrap_or("")),
        ("from", f.from.as_deref().unwrap_or("")),
        ("to", f.to.as_deref().unwrap_or("")),
    ])
    .unwrap_or_default()
}

/// `GET /console/audit`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(f): Query<AuditFilter>,
) -> Result<Markup, ConsoleError> {
    require(
        c.principal.role,
        Permission::AuditRead,
        "read the audit log",
    )?;
    let entries = matching(&state, &f).await?;
    let total = entries.len();
    let pg = f.page.unwrap_or(1).max(1);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let rows: Vec<&AuditEntry> = entries
        .iter()
        .skip((pg - 1).saturating_mul(PAGE_SIZE))
        .take(PAGE_SIZE)
        .collect();
    let checkpoint = state
        .rt
        .store
        .last_checkpoint_seq()
        .await
        .map_err(crate::services::ServiceError::from)?;
    let report = if f.verify.as_deref() == Some("1") {
        Some(state.rt.audit.verify_chain(1).await?)
    } else {
        None
    };
    let qs = query_string(&f);
    Ok(page(
        &c,
        "audit",
        "Audit log",
        html! {
            section aria-label="Chain" {
                p { "Last signed checkpoint: entry " strong { (checkpoint) } "." }
                @match &report {
                    Some(r) => {
                        @if r.broken.is_none() && r.problems.is_empty() {
                            p.notice role="status" { "Chain verified: " (r.entries) " entries and " (r.checkpoints) " checkpoints, up to entry " (r.last_seq) "." }
                        } @else {
                            p.error role="alert" { "Chain verification FAILED"
                                @if let Some(b) = &r.broken { " at entry " (b.seq) }
                                @for p in &r.problems { "; " (p) } }
                        }
                    }
                    None => { p { a href={ (PATH) "?verify=1&" (qs) } { "Verify the chain and its checkpoints" } } }
                }
            }
            form.filter method="get" action=(PATH) role="search" {
                label { "Actor " input name="actor" value=[f.actor.as_deref()]; }
                label { "Action " input name="action" value=[f.action.as_deref()]; }
                label { "Target " input name="target" value=[f.target.as_deref()]; }
                label { "From (UTC) " input type="date" name="from" value=[f.from.as_deref()]; }
                label { "To (UTC) " input type="date" name="to" value=[f.to.as_deref()]; }
                button type="submit" { "Filter" }
            }
            p { a href={ (PATH) "/export.jsonl?" (qs) } download="keygate-audit.jsonl" { "Export these entries as JSONL" }
                span.muted { " (searches the newest " (WINDOW) " entries)" } }
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Seq" } th scope="col" { "Time" } th scope="col" { "Actor" }
                    th scope="col" { "Method" } th scope="col" { "Action" } th scope="col" { "Target" }
                    th scope="col" { "Outcome" } th scope="col" { "Count" }
                } }
                tbody { @for e in &rows { tr {
                    td { (e.seq) } td { (time(e.time)) } td { (e.actor) } td { (e.auth_method) }
                    td { (e.action) } td { (e.target) } td { (e.outcome) } td { (e.count) }
                } } }
            } }
            nav.pager aria-label="Pages" {
                @if pg > 1 { a href={ (PATH) "?page=" (pg - 1) "&" (qs) } { "Previous" } }
                span { "Page " (pg) " of " (pages) " (" (total) " entries)" }
                @if pg < pages { a href={ (PATH) "?page=" (pg + 1) "&" (qs) } { "Next" } }
            }
        },
    ))
}

/// `GET /console/audit/export.jsonl`: the filtered entries, one JSON object a line.
pub async fn export(
    State(state): State<AppState>,
    c: Console,
    Query(f): Query<AuditFilter>,
) -> Result<Response, ConsoleError> {
    require(
        c.principal.role,
        Permission::AuditRead,
        "read the audit log",
    )?;
    let mut entries = matching(&state, &f).await?;
    entries.reverse();
    let mut out = String::new();
    for e in &entries {
        let line = serde_json::to_string(e)
            .map_err(|_| ConsoleError::internal("audit entry did not serialize"))?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/jsonl; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"keygate-audit.jsonl\"",
            ),
        ],
        out,
    )
        .into_response())
}
