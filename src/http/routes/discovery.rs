//! OpenID Provider / OAuth 2.0 Authorization Server metadata (RFC 8414), so standard
//! clients find the JWKS and the token, revocation and introspection endpoints.

use crate::http::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

/// Discovery document.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "tokens",
    responses((status = 200, description = "Provider metadata", body = Object)))]
pub async fn openid_configuration(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.rt.tokens.settings();
    let iss = &s.issuer;
    let algs: Vec<&str> = {
        let mut v: Vec<&str> = state
            .rt
            .keys
            .versions()
            .iter()
            .filter(|k| k.purpose == crate::keys::Purpose::Jwt && k.published())
            .map(|k| k.algorithm.jws_alg())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let max_age = state.rt.config.jwks.max_age.secs();
    (
        [(header::CACHE_CONTROL, format!("public, max-age={max_age}"))],
        Json(json!({
            "issuer": iss,
            "jwks_uri": format!("{iss}/.well-known/jwks.json"),
            "token_endpoint": format!("{iss}/api/v1/auth/token"),
            "revocation_endpoint": format!("{iss}/api/v1/auth/revoke"),
            "introspection_endpoint": format!("{iss}/api/v1/auth/introspect"),
            "grant_types_supported": ["password", "refresh_token", "custom_token", "client_credentials"],
            // private_key_jwt: key-file assertions (RFC 7523) for client_credentials.
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "introspection_endpoint_auth_methods_supported": ["bearer", "api_key"],
            "response_types_supported": [],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"],
            "access_token_signing_alg_values_supported": algs,
        })),
    )
}
