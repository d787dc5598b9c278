//! Entry points of the fuzz targets in `fuzz/` (docs/operations.md "Fuzzing").
//!
//! Each function takes arbitrary bytes and runs one parser the server exposes to
//! untrusted input, the way the server runs it. They must never panic: a panic here is
//! a bug. `fuzz/fuzz_targets/*.rs` call them under libFuzzer (nightly); the test
//! `fuzz_corpus` replays every committed corpus file through them on stable Rust.

use crate::services::tokens::claims::{self, TimeRules};
use crate::services::tokens::jws;
use serde_json::Value;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("jws", jws_and_claims),
    ("credentials", credentials),
    ("key_file", key_file),
    ("x509", x509),
    ("token_request", token_request),
    ("config", config),
];

const ISSUER: &str = "https://keygate.example";

/// A compact JWS and its claims: keygate access tokens, key-file assertions and IdP
/// tokens all start here.
pub fn jws_and_claims(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = jws::unverified_issuer(token);
    let Ok(parsed) = jws::parse(token) else {
        return;
    };
    let _ = parsed.header.typ.as_deref().map(claims::is_access_typ);
    let Ok(map) = jws::claims(&parsed.payload) else {
        return;
    };
    let rules = TimeRules {
        now: 1_800_000_000,
        leeway: 60,
    };
    // IdP tokens: the generic claim checks and role-claim lookups.
    let _ = crate::services::oauth_servers::verify::check_claims(&map, Some(ISSUER), rules);
    let _ = crate::services::oauth_servers::verify::role_values(&map, "realm_access.roles");
    let _ = crate::services::oauth_servers::verify::claim_at(&map, "a.b.c");
    // keygate's own access tokens.
    let _ = claims::validate_access(map, ISSUER, ISSUER, rules);
}

/// API keys and refresh tokens, current and old format.
pub fn credentials(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::services::credential::parse(crate::services::api_keys::SECRET_PREFIX, s);
    let _ = crate::services::credential::parse(crate::services::tokens::REFRESH_PREFIX, s);
    let _ = crate::services::tokens::classify(s);
}

/// A downloaded key file (JSON) and its `accessKey`, plain or encrypted PKCS#8.
pub fn key_file(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let pass = secrecy::SecretString::from("fuzz".to_string());
    let opts = crate::key_file_client::AssertionOptions {
        audience: None,
        ttl: 60,
        now: 1_800_000_000,
    };
    let _ = crate::key_file_client::assertion(s, Some(&pass), &opts);
}

/// PEM and DER certificates, CRLs and CA-profile input.
pub fn x509(data: &[u8]) {
    let _ = crate::tls::pem::certificates(data, "fuzz");
    let _ = crate::tls::pem::crl(data, "fuzz");
    let der = rustls::pki_types::CertificateDer::from(data.to_vec());
    let _ = crate::tls::identity::check_chain(&[der], &[]);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::tls::profiles::check_ca_pem(s);
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(s) {
            if let Some(Value::String(pem)) = o.get("ca_pem") {
                let _ = crate::tls::profiles::check_ca_pem(pem);
            }
        }
    }
}

/// The token endpoint's body: the first byte picks form or JSON, the rest is the body;
/// then every parameter is read the way the grants read it.
pub fn token_request(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let ctype = if first % 2 == 0 {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let Ok(mut p) = crate::http::oauth::OAuthParams::decode(ctype, body) else {
        return;
    };
    for name in [
        "grant_type",
        "username",
        "subject",
        "role",
        "client_assertion_type",
        "client_assertion",
        "client_id",
        "token_type_hint",
    ] {
        let _ = p.str(name);
    }
    let _ = p.int("expires_in");
    let _ = p.strings("audience");
    let _ = p.object("claims");
    let _ = p.take_secret("password");
    let _ = p.take_secret("refresh_token");
}

/// The TOML configuration file.
pub fn config(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::Config::from_toml(s);
}
