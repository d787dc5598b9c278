//! Route table. One module per resource.

pub mod api_keys;
pub mod approvals;
pub mod attestation;
pub mod audit;
pub mod auth;
pub mod discovery;
pub mod groups;
pub mod health;
pub mod key_files;
pub mod keys;
pub mod oauth_servers;
pub mod roles;
pub mod tls;
pub mod users;

use super::error::ApiError;
use super::AppState;
use axum::routing::{delete, get, post};
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/openapi.json", get(super::openapi::serve))
        .route("/.well-known/jwks.json", get(keys::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route("/api/v1/keys", get(keys::list).post(keys::create))
        .route("/api/v1/keys/{ring}/rotate", post(keys::rotate))
        .route("/api/v1/keys/{ring}/sign", post(keys::sign))
        .route("/api/v1/keys/{ring}/regenerate", post(keys::regenerate))
        .route(
            "/api/v1/keys/{ring}/versions/{version}/attestation",
            get(attestation::attest),
        )
        .route(
            "/api/v1/keys/{ring}/versions/{version}/destroy",
            post(keys::destroy),
        )
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/approvals/{id}", get(approvals::get))
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/reject", post(approvals::reject))
        .route("/api/v1/approvals/{id}/redeem", post(approvals::redeem))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/audit/keys", get(audit::keys))
        .route("/api/v1/auth/token", post(auth::token))
        .route("/api/v1/auth/revoke", post(auth::revoke))
        .route("/api/v1/auth/introspect", post(auth::introspect))
        .route("/api/v1/auth/sessions", get(auth::sessions))
        .route("/api/v1/auth/sessions/{id}", delete(auth::end_session))
        .route(
            "/api/v1/api-keys",
            get(api_keys::list).post(api_keys::create),
        )
        .route(
            "/api/v1/api-keys/{id}",
            get(api_keys::get)
                .patch(api_keys::update)
                .delete(api_keys::delete),
        )
        .route(
            "/api/v1/api-keys/{id}/regenerate",
            post(api_keys::regenerate),
        )
        .route("/api/v1/tls", get(tls::status))
        .route("/api/v1/tls/reload", post(tls::reload))
        .route("/api/v1/ca-profiles", get(tls::list).post(tls::create))
        .route(
            "/api/v1/ca-profiles/{name}",
            get(tls::get).patch(tls::update).delete(tls::delete),
        )
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{username}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route(
            "/api/v1/users/{username}/lockout",
            delete(users::clear_lockout),
        )
        .route(
            "/api/v1/key-files",
            get(key_files::list).post(key_files::create),
        )
        .route(
            "/api/v1/key-files/{access_id}",
            get(key_files::get)
                .patch(key_files::update)
                .delete(key_files::delete),
        )
        .route(
            "/api/v1/key-files/{access_id}/regenerate",
            post(key_files::regenerate),
        )
        .route("/api/v1/roles", get(roles::list).post(roles::create))
        .route(
            "/api/v1/roles/{name}",
            get(roles::get).patch(roles::update).delete(roles::delete),
        )
        .route("/api/v1/groups", get(groups::list).post(groups::create))
        .route(
            "/api/v1/groups/{name}",
            get(groups::get)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route(
            "/api/v1/groups/{name}/members",
            get(groups::members).post(groups::add_member),
        )
        .route(
            "/api/v1/groups/{name}/members/{principal}",
            delete(groups::remove_member),
        )
        .route(
            "/api/v1/groups/{name}/grants",
            get(groups::grants).post(groups::put_grant),
        )
        .route(
            "/api/v1/groups/{name}/grants/{resource}",
            delete(groups::delete_grant),
        )
        .route(
            "/api/v1/oauth-servers",
            get(oauth_servers::list).post(oauth_servers::create),
        )
        .route(
            "/api/v1/oauth-servers/{oauth_id}",
            get(oauth_servers::get)
                .patch(oauth_servers::update)
                .delete(oauth_servers::delete),
        )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
