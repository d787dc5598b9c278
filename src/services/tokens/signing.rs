//! The signing service: other gateways ask keygate to sign JWTs with a ring's hardware
//! key (`POST /api/v1/keys/{ring}/sign`).
//!
//! A signed token can never pass as a keygate access token: its `typ` is never `at+jwt`
//! and its audience never includes keygate's own. The server sets `iss`, `iat`, `exp`
//! and `jti`; a request that tries to set them is refused, never silently overridden.
//!
//! Rings are kept apart (`docs/tokens.md`, "The signing service"): the access-token ring
//! (`tokens.ring`) and the audit ring never sign for callers, access-token verification
//! accepts only kids of `tokens.ring`, and each signing ring signs with its own issuer
//! `<tokens.issuer>/rings/<ring>`, so a verifier that checks `iss` (as it must) never
//! takes one ring's token for another's, or for an access token.

use super::TokenService;
use crate::keys::Purpose;
use crate::services::{Principal, ServiceError};
use serde_json::{Map, Value};

/// A signing request.
#[derive(Debug, Clone, Default)]
pub struct SignRequest {
    pub claims: Map<String, Value>,
    pub expires_in: Option<i64>,
    pub audience: Vec<String>,
    pub typ: Option<String>,
}

/// Claims the server always sets, and that configuration may open to callers.
const TIME_CLAIMS: &[&str] = &["iat", "nbf", "exp", "jti"];

impl TokenService {
    /// Signs for a caller whose `sign` grant on `ring` (and on every resource the request
    /// touches) was already checked by the one ring-access rule
    /// ([`crate::services::groups::GroupService::allows`], called by `app::keys::sign`).
    /// Returns the token and the kid that verifies it.
    pub async fn sign_authorized(
        &self,
        caller: &Principal,
        ring: &str,
        req: SignRequest,
        now: i64,
    ) -> Result<(String, String), ServiceError> {
        if ring == self.settings.ring || ring == crate::services::audit::AUDIT_RING {
            return Err(ServiceError::Invalid(format!(
                "ring {ring:?} is reserved ({}); the signing service signs with rings created for it",
                if ring == self.settings.ring {
                    "it signs keygate's access tokens"
                } else {
                    "it signs the audit log"
                }
            )));
        }
        let active = self.keys.active(ring)?;
        if active.purpose != Purpose::Jwt {
            return Err(ServiceError::Invalid(format!(
                "ring {ring:?} is a {} ring, not a JWT-signing ring",
                active.purpose.name()
            )));
        }
        let typ = req.typ.unwrap_or_else(|| "JWT".to_string());
        if super::claims::is_access_typ(&typ) {
            return Err(ServiceError::Invalid(
                "typ at+jwt is reserved for keygate's own access tokens".into(),
            ));
        }
        if typ.is_empty() || typ.len() > 64 || !typ.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServiceError::Invalid(
                "typ must be 1-64 visible ASCII characters".into(),
            ));
        }
        if req.audience.is_empty() {
            return Err(ServiceError::Invalid("audience is required".into()));
        }
        super::claims::check_audiences(&req.audience).map_err(ServiceError::Invalid)?;
        for a in &req.audience {
            if *a == self.settings.audience || *a == self.settings.issuer {
                return Err(ServiceError::Invalid(
                    "audience may not be keygate's own audience".into(),
                ));
            }
        }
        let mut claims = req.claims;
        for k in ["iss", "aud"] {
            if claims.contains_key(k) {
                return Err(ServiceError::Invalid(format!(
                    "claims may not set {k:?}; {}",
                    if k == "iss" {
                        "the server sets it"
                    } else {
                        "use the audience field"
                    }
                )));
            }
        }
        let max = self.settings.signing_max_ttl;
        let ttl = req.expires_in.unwrap_or(self.settings.signing_default_ttl);
        if ttl <= 0 || ttl > max {
            return Err(ServiceError::Invalid(format!(
                "expires_in must be between 1 and {max} seconds (signing.max_ttl)"
            )));
        }
        if self.settings.signing_allow_caller_times {
            check_caller_times(&claims, now, max)?;
        } else if let Some(k) = TIME_CLAIMS.iter().find(|k| claims.contains_key(**k)) {
            return Err(ServiceError::Invalid(format!(
                "claims may not set {k:?}; the server sets it (signing.allow_caller_times is off)"
            )));
        }
        claims.entry("iat").or_insert_with(|| Value::from(now));
        claims
            .entry("exp")
            .or_insert_with(|| Value::from(now.saturating_add(ttl)));
        claims
            .entry("jti")
            .or_insert_with(|| Value::from(uuid::Uuid::new_v4().to_string()));
        claims.insert(
            "iss".into(),
            Value::from(ring_issuer(&self.settings.issuer, ring)),
        );
        let aud = if req.audience.len() == 1 {
            Value::from(req.audience[0].clone())
        } else {
            Value::from(req.audience)
        };
        claims.insert("aud".into(), aud);
        let (token, kid) = self.sign_jwt(ring, &typ, &Value::Object(claims)).await?;
        super::count_issued("signed");
        tracing::debug!(ring = %ring, by = %caller.name, "signed a token for a caller");
        Ok((token, kid))
    }
}

/// The issuer of the tokens ring `ring` signs for callers: `<issuer>/rings/<ring>`.
pub fn ring_issuer(issuer: &str, ring: &str) -> String {
    format!("{}/rings/{ring}", issuer.trim_end_matches('/'))
}

/// With caller-set times allowed, they must still be sane: numeric dates, and an `exp`
/// no further than `max` seconds away.
fn check_caller_times(claims: &Map<String, Value>, now: i64, max: i64) -> Result<(), ServiceError> {
    for k in ["iat", "nbf", "exp"] {
        if let Some(v) = claims.get(k) {
            if v.as_i64().is_none() {
                return Err(ServiceError::Invalid(format!(
                    "{k} must be an integer NumericDate"
                )));
            }
        }
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        if exp <= now || exp - now > max {
            return Err(ServiceError::Invalid(format!(
                "exp must be in the future and at most {max} seconds away"
            )));
        }
    }
    if claims.get("jti").is_some_and(|j| !j.is_string()) {
        return Err(ServiceError::Invalid("jti must be a string".into()));
    }
    Ok(())
}
