//! The OpenAPI document at `/api/v1/openapi.json`, generated from the handlers'
//! annotations so it cannot drift from the routes (a test checks every route is listed).

use super::error::Problem;
use super::routes::{api_keys, auth, discovery, health, keys, tls, users};
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "keygate", description = "Hardware-backed key and token service"),
    paths(
        health::healthz, health::readyz, health::metrics,
        keys::list, keys::create, keys::jwks, keys::rotate, keys::sign,
        auth::token, auth::revoke, auth::introspect, auth::sessions, auth::end_session,
        discovery::openid_configuration,
        api_keys::create, api_keys::list, api_keys::get, api_keys::update,
        api_keys::regenerate, api_keys::delete,
        users::create, users::list, users::get, users::update, users::delete,
        tls::status, tls::reload, tls::create, tls::list, tls::get, tls::update, tls::delete,
        serve,
    ),
    components(schemas(Problem, keys::KeyVersionView, keys::CreateRing,
        api_keys::ApiKeyView, api_keys::ApiKeyWithSecret, api_keys::CreateApiKey,
        api_keys::UpdateApiKey, crate::services::authz::Role,
        keys::RotateRequest, keys::SignBody, keys::Signed,
        auth::TokenResponse, auth::OAuthErrorBody, auth::TokenRequest, auth::TokenParam,
        auth::SessionView, crate::services::tokens::Introspection,
        users::UserView, users::CreateUser, users::UpdateUser,
        tls::CaProfileView, tls::CreateCaProfile, tls::UpdateCaProfile,
        crate::tls::state::TlsReport, crate::tls::identity::CertSummary,
        crate::tls::profiles::ProfileStatus, crate::tls::settings::MtlsMode,
        crate::tls::settings::RevocationCheck, crate::tls::settings::StaleCrl,
        crate::tls::settings::PrincipalMatch)),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
