//! The Approvals inbox: requests with who asked, what, when they expire and the votes so
//! far; approve or reject. One's own requests are shown but not votable (the requester
//! may withdraw). Every decision goes through [`crate::app::approvals::decide`], which
//! checks the approver rules, the credential's proof and the quorum.

use crate::console::error::ConsoleError;
use crate::console::layout::{
    csrf, done, filter_form, notice, page, pager, paginate, ListQuery, NoFields,
};
use crate::console::session::{Console, ConsoleForm};
use crate::http::audit_log::RequestId;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::approvals::Approval;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};

const PATH: &str = "/console/approvals";

fn stamp(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) title={ (rfc3339) " UTC" } { (rfc3339) } }
}

/// `GET /console/approvals`: pending requests first, newest first within each group.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let mut all = crate::app::approvals::list(&state.rt, &c.principal).await?;
    all.sort_by(|a, b| {
        (b.state == "pending")
            .cmp(&(a.state == "pending"))
            .then(b.requested_at.cmp(&a.requested_at))
    });
    let (rows, total) = paginate(all, &q, |a: &Approval| {
        format!(
            "{} {} {} {}",
            a.operation, a.target, a.requested_by, a.state
        )
    });
    let me = c.principal.name.clone();
    let may_vote = !c.principal.role.read_only();
    Ok(page(
        &c,
        "approvals",
        "Approvals",
        html! {
            (notice(q.done.as_deref()))
            (filter_form(PATH, &q))
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Operation" } th scope="col" { "Target" }
                    th scope="col" { "Requested by" } th scope="col" { "Requested" }
                    th scope="col" { "Expires" } th scope="col" { "Votes" }
                    th scope="col" { "State" } th scope="col" { "Decision" }
                } }
                tbody { @for a in &rows { tr {
                    td { (a.operation) }
                    td { (a.target) }
                    td { (a.requested_by) }
                    td { (stamp(&a.requested_at)) }
                    td { (stamp(&a.expires_at)) }
                    td {
                        (a.approvals.len()) " of " (a.required) " approvals"
                        @for v in &a.approvals { br; "✔ " (v.principal) }
                        @for v in &a.rejections { br; "✘ " (v.principal) }
                    }
                    td { (a.state) @if let Some(o) = &a.outcome { br; span.muted { (o) } } }
                    td.actions {
                        @if a.state == "pending" && may_vote {
                            @if a.requested_by == me {
                                span.muted { "Your request" }
                                form.inline method="post" action={ (PATH) "/" (a.approval_id) "/reject" } {
                                    (csrf(&c))
                                    button type="submit" aria-label={ "Withdraw request " (a.approval_id) } { "Withdraw" }
                                }
                            } @else if !a.approvals.iter().chain(a.rejections.iter()).any(|v| v.principal == me) {
                                form.inline method="post" action={ (PATH) "/" (a.approval_id) "/approve" } {
                                    (csrf(&c))
                                    button.primary type="submit" aria-label={ "Approve request " (a.approval_id) } { "Approve" }
                                }
                                form.inline method="post" action={ (PATH) "/" (a.approval_id) "/reject" } {
                                    (csrf(&c))
                                    button.danger type="submit" aria-label={ "Reject request " (a.approval_id) } { "Reject" }
                                }
                            } @else {
                                span.muted { "You voted" }
                            }
                        }
                    }
                } } }
            } }
            (pager(PATH, &q, total))
        },
    ))
}

async fn decide(
    state: AppState,
    c: Console,
    rid: Option<String>,
    id: String,
    approve: bool,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    detached(async move {
        let actor = crate::services::approvals::actor_of(&caller, rid);
        crate::app::approvals::decide(&rt, &caller, &actor, &id, approve, now()).await
    })
    .await?;
    Ok(done(PATH, "voted"))
}

/// `POST /console/approvals/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(id): Path<String>,
    ConsoleForm { console, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    decide(state, console, rid, id, true).await
}

/// `POST /console/approvals/{id}/reject`.
pub async fn reject(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(id): Path<String>,
    ConsoleForm { console, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    decide(state, console, rid, id, false).await
}
