//! The rules a registration must pass before anything is stored: URLs, texts and the
//! role mapping. Each failure names the field, so the caller's 400 says what to fix.

use crate::services::authz::Role;
use crate::services::{validate_text, ServiceError};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Most entries in one `role_mapping`.
pub const MAX_MAPPINGS: usize = 256;
const MAX_URL_LEN: usize = 2048;

fn invalid(field: &str, m: impl std::fmt::Display) -> ServiceError {
    ServiceError::Invalid(format!("{field}: {m}"))
}

fn parse_url(field: &str, s: &str) -> Result<reqwest::Url, ServiceError> {
    if s.len() > MAX_URL_LEN || s.trim() != s || s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("must be a URL of at most {MAX_URL_LEN} characters without spaces"),
        ));
    }
    let url = reqwest::Url::parse(s)
        .map_err(|e| invalid(field, format!("{s:?} is not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(field, format!("{s:?} is not an http(s) URL")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(field, "must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid(field, "must not carry a #fragment"));
    }
    Ok(url)
}

/// An issuer is an absolute http(s) URL, compared with a token's `iss` exactly as given.
/// keygate's own issuer is refused: its tokens have their own verifier.
pub fn issuer(s: &str, own_issuer: &str) -> Result<(), ServiceError> {
    parse_url("issuer", s)?;
    if s.trim_end_matches('/') == own_issuer.trim_end_matches('/') {
        return Err(invalid(
            "issuer",
            "this is keygate's own issuer; its tokens need no registration",
        ));
    }
    Ok(())
}

/// Whether `url`'s host is a loopback address (or `localhost`).
fn loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// A JWKS URI is https; plain http only to a loopback address and only when
/// `oauth.allow_insecure_loopback_jwks` is set (tests). Checked at registration and again
/// before every fetch, so turning the setting off stops such fetches at once.
pub fn jwks_uri(s: &str, allow_insecure_loopback: bool) -> Result<reqwest::Url, ServiceError> {
    let url = parse_url("jwks_uri", s)?;
    match url.scheme() {
        "https" => Ok(url),
        _ if allow_insecure_loopback && loopback(&url) => Ok(url),
        _ if loopback(&url) => Err(invalid(
            "jwks_uri",
            "must use https (http to loopback needs oauth.allow_insecure_loopback_jwks, for tests only)",
        )),
        _ => Err(invalid("jwks_uri", "must use https")),
    }
}

pub fn name(s: &str) -> Result<(), ServiceError> {
    validate_text("name", s, 128, true)
}

pub fn audience(s: &str) -> Result<(), ServiceError> {
    validate_text("audience", s, 512, true)
}

/// A claim name, or a dotted path into nested objects (`realm_access.roles`).
pub fn role_claim(s: &str) -> Result<(), ServiceError> {
    validate_text("role_claim", s, 256, true)?;
    if s.trim() != s {
        return Err(invalid("role_claim", "must not start or end with spaces"));
    }
    Ok(())
}

/// Every IdP value is non-empty text and every local role exists now. Returns the local
/// roles the mapping grants, for the caller's right to grant them.
pub fn role_mapping(m: &BTreeMap<String, String>) -> Result<Vec<Role>, ServiceError> {
    if m.is_empty() {
        return Err(invalid(
            "role_mapping",
            "map at least one IdP value to a local role",
        ));
    }
    if m.len() > MAX_MAPPINGS {
        return Err(invalid(
            "role_mapping",
            format!("at most {MAX_MAPPINGS} entries"),
        ));
    }
    let mut roles = Vec::with_capacity(m.len());
    for (value, local) in m {
        validate_text("role_mapping key", value, 256, true)?;
        let role = Role::lookup(local).ok_or_else(|| {
            invalid(
                "role_mapping",
                format!(
                    "{value:?} maps to {local:?}, which is not a local role (built-in: super-admin, admin, help-desk, read-only, gateway; GET /api/v1/roles lists custom ones)"
                ),
            )
        })?;
        roles.push(role);
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_absolute_http_urls_and_never_keygates_own() {
        for ok in [
            "https://idp.example",
            "https://login.example/realms/x",
            "http://127.0.0.1:8080/realms/x",
        ] {
            assert!(issuer(ok, "https://keygate.example").is_ok(), "{ok}");
        }
        for bad in [
            "idp.example",
            "/realms/x",
            "ftp://idp.example",
            "https://",
            "https://u:p@idp.example",
            "https://idp.example/#x",
            " https://idp.example",
            "urn:example:idp",
        ] {
            assert!(issuer(bad, "https://keygate.example").is_err(), "{bad}");
        }
        assert!(issuer("https://keygate.example/", "https://keygate.example").is_err());
    }

    #[test]
    fn jwks_uris_need_https_unless_loopback_is_allowed() {
        assert!(jwks_uri("https://idp.example/jwks", false).is_ok());
        assert!(jwks_uri("http://idp.example/jwks", false).is_err());
        assert!(jwks_uri("http://idp.example/jwks", true).is_err());
        assert!(jwks_uri("http://127.0.0.1:9/jwks", false).is_err());
        assert!(jwks_uri("http://127.0.0.1:9/jwks", true).is_ok());
        assert!(jwks_uri("http://[::1]:9/jwks", true).is_ok());
        assert!(jwks_uri("http://localhost:9/jwks", true).is_ok());
        assert!(jwks_uri("http://127.0.0.1.nip.io/jwks", true).is_err());
    }
}
