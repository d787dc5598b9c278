//! The Audit log page: the newest entries, filterable by actor, action, target and time;
//! the last signed checkpoint, and verification of the chain from it on request (a POST
//! with the session's CSRF token: [`crate::app::audit::verify`] is rate limited); export
//! of the filtered entries as JSONL. Every read goes through [`crate::app::audit`], which
//! needs `audit:read`, as on the API.

use crate::app::audit::{AuditFilter as Filter, Verified, WINDOW};
use crate::console::error::ConsoleError;
use crate::console::layout::{csrf, page, time, NoFields, PAGE_SIZE};
use crate::console::session::{Console, SessionForm};
use crate::http::AppState;
use crate::runtime::now;
use crate::store::audit::AuditEntry;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

const PATH: &str = "/console/audit";

/// The page's query (also the verify form's: the filters shown with the result).
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

/// The use case's filter for the page's.
fn filter_of(f: &AuditFilter) -> Result<Filter, ConsoleError> {
    Ok(Filter {
        actor: f.actor.clone(),
        action: f.action.clone(),
        target: f.target.clone(),
        from: day(f.from.as_deref(), false)?,
        to: day(f.to.as_deref(), true)?,
    })
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

/// `GET /console/audit`. Never verifies anything (a `verify` parameter is ignored).
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(f): Query<AuditFilter>,
) -> Result<Markup, ConsoleError> {
    render(&state, &c, &f, None).await
}

/// `POST /console/audit/verify`: verifies the chain from the last signed checkpoint and
/// shows the page (filtered by the query, as the page was) with the result. Any audit
/// reader may (read-only included: it changes nothing), once per
/// [`crate::app::audit::VERIFY_INTERVAL_SECS`]; 429 otherwise.
pub async fn verify(
    State(state): State<AppState>,
    Query(f): Query<AuditFilter>,
    SessionForm { console: c, .. }: SessionForm<NoFields>,
) -> Result<Markup, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let verified =
        crate::http::detached(async move { crate::app::audit::verify(&rt, &caller, now()).await })
            .await?;
    render(&state, &c, &f, Some(verified)).await
}

async fn render(
    state: &AppState,
    c: &Console,
    f: &AuditFilter,
    verified: Option<Verified>,
) -> Result<Markup, ConsoleError> {
    let entries = crate::app::audit::list(&state.rt, &c.principal, &filter_of(f)?).await?;
    let total = entries.len();
    let pg = f.page.unwrap_or(1).max(1);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let rows: Vec<&AuditEntry> = entries
        .iter()
        .skip((pg - 1).saturating_mul(PAGE_SIZE))
        .take(PAGE_SIZE)
        .collect();
    let checkpoint = crate::app::audit::last_checkpoint(&state.rt, &c.principal).await?;
    let qs = query_string(f);
    Ok(page(
        c,
        "audit",
        "Audit log",
        html! {
            section aria-label="Chain" {
                p { "Last signed checkpoint: entry " strong { (checkpoint) } "." }
                @if let Some(Verified { from, report: r }) = &verified {
                    @if r.broken.is_none() && r.problems.is_empty() {
                        p.notice role="status" { "Chain verified from entry " (from) ": " (r.entries) " entries and " (r.checkpoints) " checkpoints, up to entry " (r.last_seq) "." }
                    } @else {
                        p.error role="alert" { "Chain verification FAILED"
                            @if let Some(b) = &r.broken { " at entry " (b.seq) }
                            @for p in &r.problems { "; " (p) } }
                    }
                }
                form.inline method="post" action={ (PATH) "/verify?" (qs) } {
                    (csrf(c))
                    button type="submit" { "Verify the chain and its checkpoints" }
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
    let entries = crate::app::audit::export(&state.rt, &c.principal, &filter_of(&f)?).await?;
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
