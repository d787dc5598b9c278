//! The page shell and the small pieces every page uses: navigation (only the pages the
//! role may read), the CSRF field, UTC timestamps for `console.js` to localise, and the
//! server-side text filter and pagination of lists. maud escapes every interpolated
//! value, so stored text (names, descriptions, audit targets) is always inert.

use super::session::{Console, CSRF_FIELD};
use crate::services::authz::Permission;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

/// Rows per list page.
pub const PAGE_SIZE: usize = 25;

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keygate console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                main.narrow { (body) }
            }
        }
    }
}

/// A signed-in page: header, navigation and `body`.
pub fn page(c: &Console, active: &str, title: &str, body: Markup) -> Markup {
    let nav: [(&str, &str, Option<Permission>); 11] = [
        ("api-keys", "API Keys", Some(Permission::ApiKeysRead)),
        (
            "oauth-servers",
            "OAuth Servers",
            Some(Permission::OAuthServersRead),
        ),
        ("keys", "Signing keys", Some(Permission::KeysRead)),
        (
            "key-files",
            "Administration API Key",
            Some(Permission::KeyFilesRead),
        ),
        ("approvals", "Approvals", None),
        ("audit", "Audit log", Some(Permission::AuditRead)),
        ("users", "Users", Some(Permission::UsersRead)),
        ("groups", "Groups", Some(Permission::GroupsRead)),
        ("roles", "Roles", Some(Permission::RolesRead)),
        ("sessions", "Sessions", None),
        ("tls", "TLS", Some(Permission::KeysRead)),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keygate console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console/" { "keygate" }
                    nav aria-label="Console pages" {
                        ul {
                            @for (slug, label, perm) in nav {
                                @if perm.is_none_or(|p| c.may_read(p)) {
                                    li {
                                        a href={ "/console/" (slug) }
                                          aria-current=[(slug == active).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { (c.principal.name) " (" (c.principal.role.name()) ")" }
                        @if c.break_glass { " " strong.warn { "break-glass: API key" } }
                        form method="post" action="/console/sign-out" {
                            (csrf(c))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(c: &Console) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(c.csrf); }
}

/// A timestamp: UTC in the markup and its tooltip; `console.js` shows it in the viewer's
/// locale.
pub fn time(t: i64) -> Markup {
    let utc = crate::http::time_fmt::rfc3339(t);
    html! { time datetime=(utc) title={ (utc) " UTC" } { (utc) } }
}

/// The notice after a redirect: `?done=<code>` names one of these fixed texts, so a
/// link cannot put words of its own on a console page.
pub fn notice(code: Option<&str>) -> Markup {
    let text = match code.unwrap_or("") {
        "updated" => Some("Saved."),
        "deleted" => Some("Deleted."),
        "ended" => Some("The session has ended."),
        "voted" => Some("Your vote is recorded."),
        "requested" => Some("The request waits for approvals; see Approvals."),
        "fetched" => Some(
            "JWKS fetch done; see the JWKS cache column (one fetch per oauth.jwks_refetch_interval at most).",
        ),
        _ => None,
    };
    html! {
        @if let Some(m) = text { p.notice role="status" { (m) } }
    }
}

/// `?q=` (text filter) and `?page=` of a list page.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub q: Option<String>,
    pub page: Option<usize>,
    /// A message to show (after a redirect).
    pub done: Option<String>,
}

impl ListQuery {
    fn needle(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase)
    }
}

/// One page of `rows` after the text filter (case-insensitive, on `text` of each row),
/// with the number of matching rows.
pub fn paginate<T>(rows: Vec<T>, q: &ListQuery, text: impl Fn(&T) -> String) -> (Vec<T>, usize) {
    let needle = q.needle();
    let matching: Vec<T> = rows
        .into_iter()
        .filter(|r| {
            needle
                .as_deref()
                .is_none_or(|n| text(r).to_lowercase().contains(n))
        })
        .collect();
    let total = matching.len();
    let page = q.page.unwrap_or(1).max(1);
    let rows = matching
        .into_iter()
        .skip((page - 1).saturating_mul(PAGE_SIZE))
        .take(PAGE_SIZE)
        .collect();
    (rows, total)
}

/// The filter form and the page links of a list at `path`.
pub fn filter_form(path: &str, q: &ListQuery) -> Markup {
    html! {
        form.filter method="get" action=(path) role="search" {
            label for="q" { "Filter" }
            input id="q" type="search" name="q" value=[q.q.as_deref()];
            button type="submit" { "Apply" }
        }
    }
}

/// Previous/next links under a list.
pub fn pager(path: &str, q: &ListQuery, total: usize) -> Markup {
    let page = q.page.unwrap_or(1).max(1);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let filter = q.q.as_deref().unwrap_or("");
    let link = |p: usize| format!("{path}?page={p}&q={}", form_urlencoded_component(filter));
    html! {
        nav.pager aria-label="Pages" {
            @if page > 1 { a href=(link(page - 1)) { "Previous" } }
            span { "Page " (page) " of " (pages) " (" (total) " items)" }
            @if page < pages { a href=(link(page + 1)) { "Next" } }
        }
    }
}

/// Percent-encodes a query value.
pub fn form_urlencoded_component(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// A redirect after a successful form (303: the browser GETs the target).
pub fn see_other(to: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, to.to_string())],
    )
        .into_response()
}

/// [`see_other`] to `path` with the notice `code` (see [`notice`]).
pub fn done(path: &str, code: &'static str) -> axum::response::Response {
    see_other(&format!("{path}?done={code}"))
}

/// A form with no fields of its own (the CSRF token only).
#[derive(Debug, Deserialize)]
pub struct NoFields {}

/// A form read as its name/value pairs: for forms with repeated fields (checkboxes).
pub type Pairs = Vec<(String, String)>;

/// The first value of field `name`, trimmed (empty when absent).
pub fn field(pairs: &Pairs, name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// Every value of field `name` (the checked boxes of a group of checkboxes).
pub fn fields(pairs: &Pairs, name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}
