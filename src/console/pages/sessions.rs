//! The Sessions page: the signed-in person's live sessions (API logins and console
//! sessions alike, since both are `sessions` rows), and, for a role with `users:write`,
//! those of the users it manages; each revocable. Ending one goes through
//! [`crate::app::tokens::end_session`], the rule the API uses
//! (`DELETE /api/v1/auth/sessions/{id}`): one's own, or a managed user's.

use crate::console::error::ConsoleError;
use crate::console::layout::{csrf, done, notice, page, time, ListQuery, NoFields};
use crate::console::session::{Console, SessionForm};
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::authz::Permission;
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
    let t = now();
    let mut sessions = crate::app::tokens::list_sessions(&state.rt, &c.principal, t).await?;
    let managed = c.can(Permission::UsersWrite);
    if managed {
        sessions
            .extend(crate::app::tokens::list_managed_sessions(&state.rt, &c.principal, t).await?);
    }
    let (rows, total) =
        crate::console::layout::paginate(sessions, &q, |s| format!("{} {}", s.username, s.id));
    Ok(page(
        &c,
        "sessions",
        "Sessions",
        html! {
            (notice(q.done.as_deref()))
            p.muted {
                @if managed { "Your live sessions and those of the users you manage: " } @else { "Your live sessions: " }
                "console sign-ins and API logins (password grant) count together toward the per-user limit."
            }
            (crate::console::layout::filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "User" } th scope="col" { "Session" } th scope="col" { "Created" }
                    th scope="col" { "Last used" } th scope="col" { "Expires" }
                    th scope="col" { "Action" }
                } }
                tbody { @for s in &rows { tr {
                    td { (s.username) }
                    td { code { (s.id) } @if s.id == c.session_id { " (this console)" } }
                    td { (time(s.created_at)) } td { (time(s.last_used_at)) } td { (time(s.expires_at)) }
                    td { form.inline method="post" action={ (PATH) "/" (s.id) "/end" } {
                        (csrf(&c))
                        button type="submit" aria-label={ "End session " (s.id) " of " (s.username) } { "End" }
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
    detached(async move { crate::app::tokens::end_session(&rt, &caller, &target, now()).await })
        .await?;
    if id == c.session_id {
        return Ok(crate::console::layout::see_other("/console/sign-in"));
    }
    Ok(done(PATH, "ended"))
}
