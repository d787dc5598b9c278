//! The OpenAPI document at `/api/v1/openapi.json`, generated from the handlers'
//! annotations so it cannot drift from the routes (a test checks every route is listed).

use super::error::Problem;
use super::openapi_problems::ProblemResponses;
use super::routes::{
    api_keys, approvals, attestation, audit, auth, discovery, groups, health, key_files, keys,
    oauth_servers, roles, tls, users,
};
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
        components.add_security_scheme(
            "idp_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-oauth2-token"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "keygate", description = "Hardware-backed key and token service"),
    paths(
        health::healthz, health::readyz,
        keys::list, keys::create, keys::jwks, keys::rotate, keys::sign,
        auth::token, auth::revoke, auth::introspect, auth::sessions, auth::end_session,
        discovery::openid_configuration,
        api_keys::create, api_keys::list, api_keys::get, api_keys::update,
        api_keys::regenerate, api_keys::delete,
        users::create, users::list, users::get, users::update, users::delete,
        users::clear_lockout,
        key_files::create, key_files::list, key_files::get, key_files::update,
        key_files::regenerate, key_files::delete,
        roles::create, roles::list, roles::get, roles::update, roles::delete,
        groups::create, groups::list, groups::get, groups::update, groups::delete,
        groups::members, groups::add_member, groups::remove_member,
        groups::grants, groups::put_grant, groups::delete_grant,
        oauth_servers::create, oauth_servers::list, oauth_servers::get,
        oauth_servers::update, oauth_servers::delete,
        keys::regenerate, keys::destroy, attestation::attest,
        approvals::list, approvals::get, approvals::approve, approvals::reject,
        approvals::redeem,
        audit::list, audit::keys,
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
        key_files::KeyFileView, key_files::KeyFileJson, key_files::CreateKeyFile,
        key_files::UpdateKeyFile, key_files::RegenerateKeyFile,
        roles::RoleView, roles::CreateRole, roles::UpdateRole,
        groups::GroupView, groups::MemberView, groups::GrantView, groups::CreateGroup,
        groups::UpdateGroup, groups::AddMember, groups::PutGrant,
        oauth_servers::OAuthServerView, oauth_servers::CreateOAuthServer,
        oauth_servers::UpdateOAuthServer,
        keys::RegenerateRequest, crate::services::approvals::Approval,
        crate::services::approvals::Vote, audit::AuditEntryView,
        tls::CaProfileView, tls::CreateCaProfile, tls::UpdateCaProfile,
        crate::tls::state::TlsReport, crate::tls::identity::CertSummary,
        crate::tls::profiles::ProfileStatus, crate::tls::settings::MtlsMode,
        crate::tls::settings::RevocationCheck, crate::tls::settings::StaleCrl,
        crate::tls::settings::PrincipalMatch, attestation::AttestationView,
        attestation::TpmAttestationView, attestation::Pkcs11AttestationView)),
    modifiers(&Security, &ProblemResponses),
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
