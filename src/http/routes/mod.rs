//! Route table. One module per resource.

pub mod api_keys;
pub mod health;
pub mod keys;
pub mod users;

use super::error::ApiError;
use super::AppState;
use axum::routing::{get, post};
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/openapi.json", get(super::openapi::serve))
        .route("/.well-known/jwks.json", get(keys::jwks))
        .route("/api/v1/keys", get(keys::list).post(keys::create))
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
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{username}",
            get(users::get).patch(users::update).delete(users::delete),
        )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
