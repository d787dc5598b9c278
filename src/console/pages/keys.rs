//! The Signing keys page: rings and their versions with state (pending, active,
//! retiring, retired, compromised, destroyed), backend, algorithm, kid, the next
//! scheduled rotation, and the JWKS as published. Rotate, regenerate and destroy are
//! submitted through [`crate::app::approvals::submit`]: with approvals configured they
//! become requests in the Approvals inbox.

use crate::console::error::ConsoleError;
use crate::console::layout::{csrf, done, filter_form, notice, page, time, ListQuery, NoFields};
use crate::console::session::{Console, ConsoleForm};
use crate::http::audit_log::RequestId;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::approvals::{Operation, Submitted};
use crate::services::authz::Permission;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use std::collections::BTreeMap;

const PATH: &str = "/console/keys";

/// `GET /console/keys`.
pub async fn list(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let versions = crate::app::keys::list(&state.rt, &c.principal).await?;
    let needle = q.q.as_deref().map(str::trim).unwrap_or("").to_lowercase();
    let mut rings: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for v in versions {
        if needle.is_empty() || v.ring.to_lowercase().contains(&needle) {
            rings.entry(v.ring.clone()).or_default().push(v);
        }
    }
    for vs in rings.values_mut() {
        vs.sort_by_key(|v| std::cmp::Reverse(v.version));
    }
    let rotate = c.can(Permission::KeysRotate);
    let destroy = c.can(Permission::KeysDestroy);
    let jwks = serde_json::to_string_pretty(&state.rt.keys.jwks()).unwrap_or_default();
    Ok(page(
        &c,
        "keys",
        "Signing keys",
        html! {
            (notice(q.done.as_deref()))
            (filter_form(PATH, &q))
            @for (ring, vs) in rings {
                @let active = vs.iter().find(|v| v.state == crate::key_state::KeyState::Active).map(|v| v.activated_at.unwrap_or(v.created_at));
                @let period = crate::app::keys::rotation_period(&state.rt, &ring);
                section aria-labelledby={ "ring-" (ring) } {
                    h2 id={ "ring-" (ring) } { "Ring " (ring) }
                    p {
                        "Next scheduled rotation: "
                        @match (active, period) {
                            (Some(a), Some(p)) => (time(a.saturating_add(p))),
                            _ => span.muted { "none scheduled" },
                        }
                    }
                    @if rotate {
                        div.actions {
                            form.inline method="post" action={ (PATH) "/" (ring) "/rotate" } {
                                (csrf(&c))
                                button.primary type="submit" aria-label={ "Rotate ring " (ring) } { "Rotate" }
                            }
                            a href={ (PATH) "/" (ring) "/regenerate" } aria-label={ "Regenerate ring " (ring) } { "Regenerate…" }
                        }
                    }
                    div.table-wrap { table {
                        thead { tr {
                            th scope="col" { "Version" } th scope="col" { "State" }
                            th scope="col" { "Backend" } th scope="col" { "Algorithm" }
                            th scope="col" { "kid" } th scope="col" { "Created" }
                            th scope="col" { "Activated" }
                            @if destroy { th scope="col" { "Action" } }
                        } }
                        tbody { @for v in &vs { tr {
                            td { (v.version) } td { strong { (v.state) } }
                            td { (v.backend) } td { (v.algorithm.name()) }
                            td { code { (v.kid) } }
                            td { (time(v.created_at)) }
                            td { @if let Some(t) = v.activated_at { (time(t)) } }
                            @if destroy { td {
                                @if matches!(v.state, crate::key_state::KeyState::Retired | crate::key_state::KeyState::Compromised) {
                                    form.inline method="post" action={ (PATH) "/" (ring) "/versions/" (v.version) "/destroy" } {
                                        (csrf(&c))
                                        button.danger type="submit" aria-label={ "Destroy version " (v.version) " of " (ring) } { "Destroy" }
                                    }
                                }
                            } }
                        } } }
                    } }
                }
            }
            h2 { "JWKS as published" }
            p { a href="/.well-known/jwks.json" { "/.well-known/jwks.json" } }
            pre.secret { (jwks) }
        },
    ))
}

async fn submit(
    state: AppState,
    c: Console,
    rid: Option<String>,
    op: Operation,
) -> Result<Response, ConsoleError> {
    let rt = state.rt.clone();
    let caller = c.principal.clone();
    let submitted = detached(async move {
        let actor = crate::services::approvals::actor_of(&caller, rid);
        crate::app::approvals::submit(&rt, &caller, &actor, op, now()).await
    })
    .await?;
    Ok(match submitted {
        Submitted::Pending(_) => done(PATH, "requested"),
        Submitted::Done(_) => done(PATH, "updated"),
    })
}

/// `POST /console/keys/{ring}/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(ring): Path<String>,
    ConsoleForm { console, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let op = Operation::Rotate {
        ring,
        immediate: false,
        backend: None,
    };
    submit(state, console, rid, op).await
}

/// `GET /console/keys/{ring}/regenerate`: the confirmation.
pub async fn confirm_regenerate(c: Console, Path(ring): Path<String>) -> Markup {
    page(
        &c,
        "keys",
        "Regenerate the ring",
        html! {
            p { "Regenerate ring " strong { (ring) } "? The active version is replaced at once and marked "
                strong { "compromised" } ": every token it signed is refused from then on." }
            form method="post" action={ (PATH) "/" (ring) "/regenerate" } {
                (csrf(&c))
                button.danger type="submit" { "Regenerate" }
            }
            p { a href=(PATH) { "Cancel" } }
        },
    )
}

/// `POST /console/keys/{ring}/regenerate`.
pub async fn regenerate(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(ring): Path<String>,
    ConsoleForm { console, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    submit(
        state,
        console,
        rid,
        Operation::Regenerate { ring, force: false },
    )
    .await
}

/// `POST /console/keys/{ring}/versions/{version}/destroy`.
pub async fn destroy(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path((ring, version)): Path<(String, i64)>,
    ConsoleForm { console, .. }: ConsoleForm<NoFields>,
) -> Result<Response, ConsoleError> {
    submit(state, console, rid, Operation::Destroy { ring, version }).await
}
