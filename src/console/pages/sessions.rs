//! The Sessions page: the signed-in person's live sessions (API logins and console
//! sessions alike, since both are `sessions` rows), each revocable. Ending one goes
//! through [`crate::services::tokens::TokenService::end_session`], the rule the API uses.

use crate::console::error::ConsoleError;
use crate::console::layout::{csrf, done, notice, page, time, ListQuery, NoFields};
use crate::console::session::{Console, SessionForm};
use crate::http::{detached, AppState};
use crate::runtime::now;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};

const PATH: &str = "/console/sessions";

/// `GET /console/sessions`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let sessions = state.rt.tokens.list_sessions(&c.principal, now()).await?;
    let (rows, total) = crate::console::layout::paginate(sessions, &q, |s| s.id.clone());
    Ok(page(
        &c,
        "sessions",
        "Sessions",
        html! {
            (notice(q.done.as_deref()))
            p.muted { "Your live sessions: console sign-ins and API logins (password grant) count together toward the per-user limit." }
            (crate::console::layout::filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Session" } th scope="col" { "Created" }
                    th scope="col" { "Last used" } th scope="col" { "Expires" }
                    th scope="col" { "Action" }
                } }
                tbody { @for s in &rows { tr {
                    td { code { (s.id) } @if s.id == c.session_id { " (this console)" } }
                    td { (time(s.created_at)) } td { (time(s.last_used_at)) } td { (time(s.expires_at)) }
                    td { form.inline method="post" action={ (PATH) "/" (s.id) "/end" } {
                        (csrf(&c))
                        button type="submit" aria-label={ "End session " (s.id) } { "End" }
                    } }
                } } }
            } }
            (crate::console::layout::pager(PATH, &q, total))
        },
    ))
}

/// `POST /console/sessions/{id}/end`.
pub async fn end(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SessionForm { console: c, .. }: SessionForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let target = id.clone();
    detached(async move { rt.tokens.end_session(&caller, &target, now()).await }).await?;
    if id == c.session_id {
        return Ok(crate::console::layout::see_other("/console/sign-in"));
    }
    Ok(done(PATH, "ended"))
}
