//! The admin web console at `/console/` (docs/console.md): server-rendered HTML (maud),
//! one stylesheet and one script embedded in the binary, served on the API's listener.
//!
//! Pages call the use-case layer ([`crate::app`]) and services in-process with the
//! signed-in [`crate::services::Principal`], exactly as the API handlers do, so every
//! permission, approval and audit rule applies unchanged; console code only hides the
//! controls a role lacks. Sessions, the cookie and CSRF are in [`session`]; the
//! headers of every console response in [`headers`].

pub mod assets;
pub mod error;
pub mod headers;
pub mod layout;
pub mod pages;
pub mod session;

use crate::http::AppState;
use axum::routing::{get, post};
use axum::Router;
use pages::{
    api_keys, approvals, audit, groups, key_files, keys, oauth_servers, roles, sessions, sign_in,
    tls, users,
};

/// The console's routes, merged into the API router (so the audit, rate-limit and
/// timeout layers apply to them too).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(sign_in::slash))
        .route("/console/", get(sign_in::home))
        .route("/console/assets/console.css", get(assets::css))
        .route("/console/assets/console.js", get(assets::js))
        .route("/console/sign-in", get(sign_in::show).post(sign_in::submit))
        .route("/console/sign-out", post(sign_in::sign_out))
        .route(
            "/console/api-keys",
            get(api_keys::list).post(api_keys::create),
        )
        .route(
            "/console/api-keys/{id}/edit",
            get(api_keys::edit).post(api_keys::update),
        )
        .route(
            "/console/api-keys/{id}/regenerate",
            get(api_keys::confirm_regenerate).post(api_keys::regenerate),
        )
        .route(
            "/console/api-keys/{id}/delete",
            get(api_keys::confirm_delete).post(api_keys::delete),
        )
        .route(
            "/console/key-files",
            get(key_files::list).post(key_files::create),
        )
        .route(
            "/console/key-files/{id}/regenerate",
            get(key_files::confirm_regenerate).post(key_files::regenerate),
        )
        .route(
            "/console/key-files/{id}/delete",
            get(key_files::confirm_delete).post(key_files::delete),
        )
        .route(
            "/console/oauth-servers",
            get(oauth_servers::list).post(oauth_servers::create),
        )
        .route(
            "/console/oauth-servers/{id}/edit",
            get(oauth_servers::edit).post(oauth_servers::update),
        )
        .route(
            "/console/oauth-servers/{id}/fetch-jwks",
            post(oauth_servers::fetch_jwks),
        )
        .route(
            "/console/oauth-servers/{id}/delete",
            get(oauth_servers::confirm_delete).post(oauth_servers::delete),
        )
        .route("/console/keys", get(keys::list))
        .route("/console/keys/{ring}/rotate", post(keys::rotate))
        .route(
            "/console/keys/{ring}/regenerate",
            get(keys::confirm_regenerate).post(keys::regenerate),
        )
        .route(
            "/console/keys/{ring}/versions/{version}/destroy",
            post(keys::destroy),
        )
        .route("/console/approvals", get(approvals::list))
        .route("/console/approvals/{id}/approve", post(approvals::approve))
        .route("/console/approvals/{id}/reject", post(approvals::reject))
        .route("/console/users", get(users::list).post(users::create))
        .route(
            "/console/users/{name}/delete",
            get(users::confirm_delete).post(users::delete),
        )
        .route("/console/groups", get(groups::list).post(groups::create))
        .route("/console/groups/{name}", get(groups::show))
        .route("/console/groups/{name}/edit", post(groups::update))
        .route(
            "/console/groups/{name}/delete",
            get(groups::confirm_delete).post(groups::delete),
        )
        .route("/console/groups/{name}/members", post(groups::add_member))
        .route(
            "/console/groups/{name}/members/remove",
            post(groups::remove_member),
        )
        .route("/console/groups/{name}/grants", post(groups::put_grant))
        .route(
            "/console/groups/{name}/grants/remove",
            post(groups::delete_grant),
        )
        .route("/console/roles", get(roles::list).post(roles::create))
        .route(
            "/console/roles/{name}/edit",
            get(roles::edit).post(roles::update),
        )
        .route(
            "/console/roles/{name}/delete",
            get(roles::confirm_delete).post(roles::delete),
        )
        .route("/console/tls", get(tls::status).post(tls::create))
        .route(
            "/console/tls/ca-profiles/{name}/delete",
            get(tls::confirm_delete).post(tls::delete),
        )
        .route("/console/sessions", get(sessions::list))
        .route("/console/sessions/{id}/end", post(sessions::end))
        .route("/console/audit", get(audit::list))
        .route("/console/audit/verify", post(audit::verify))
        .route("/console/audit/export.jsonl", get(audit::export))
}
