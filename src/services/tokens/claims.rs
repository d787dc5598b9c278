//! The claims of keygate access tokens, and their strict validation.
//!
//! Every JWT check in keygate uses the same rules: `exp` is required and `now` must be
//! before `exp + leeway`; `nbf`, when present, must be at most `now + leeway`; `iat` must
//! not be after `now + leeway`; `iss` must match exactly. An access token additionally
//! needs `typ: at+jwt` (RFC 9068) and keygate's audience in `aud`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }

    /// One value stays a string; several become an array.
    pub fn from_vec(mut v: Vec<String>) -> Audience {
        if v.len() == 1 {
            Audience::One(v.remove(0))
        } else {
            Audience::Many(v)
        }
    }
}

/// The claims of an access token keygate issues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The login session, for tokens of the password and refresh grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// For tokens minted with an API key (directly or through a token minted with one):
    /// the key's binding. The token verifies only while that key lives with that secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kgk: Option<String>,
    /// Set on custom tokens: the subject was chosen by the caller, so the token proves no
    /// identity. It carries its role's permissions, never the subject's group grants,
    /// ring ownership or `signers` entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kgm: bool,
    /// Caller-supplied claims of a custom token.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Claims a caller may never set through `claims`: keygate sets them itself.
pub const RESERVED: &[&str] = &[
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "role", "sid", "kgk", "kgm", "typ",
];

/// Checks caller-supplied audience values (custom tokens, the signing service): each
/// 1-512 characters without control characters. Returns the problem as text.
pub fn check_audiences(values: &[String]) -> Result<(), String> {
    if values
        .iter()
        .any(|a| a.is_empty() || a.len() > 512 || a.chars().any(char::is_control))
    {
        return Err("audience values must be 1-512 characters without control characters".into());
    }
    Ok(())
}

/// Why a token's claims are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token's issuer is not this server")]
    Issuer,
    #[error("the token is not meant for this audience")]
    Audience,
    #[error("claims are missing or have the wrong type")]
    Shape,
}

/// The time and issuer rules shared by every JWT check.
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    pub now: i64,
    pub leeway: i64,
}

impl TimeRules {
    pub fn check(&self, exp: i64, nbf: Option<i64>, iat: Option<i64>) -> Result<(), ClaimsError> {
        if self.now >= exp.saturating_add(self.leeway) {
            return Err(ClaimsError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > self.now.saturating_add(self.leeway)) {
            return Err(ClaimsError::NotYetValid);
        }
        if iat.is_some_and(|iat| iat > self.now.saturating_add(self.leeway)) {
            return Err(ClaimsError::IssuedInFuture);
        }
        Ok(())
    }
}

/// Parses and validates access-token claims for `issuer` and `audience`.
pub fn validate_access(
    claims: Map<String, Value>,
    issuer: &str,
    audience: &str,
    rules: TimeRules,
) -> Result<AccessClaims, ClaimsError> {
    let c: AccessClaims =
        serde_json::from_value(Value::Object(claims)).map_err(|_| ClaimsError::Shape)?;
    rules.check(c.exp, Some(c.nbf), Some(c.iat))?;
    if c.iss != issuer {
        return Err(ClaimsError::Issuer);
    }
    if !c.aud.contains(audience) {
        return Err(ClaimsError::Audience);
    }
    Ok(c)
}

/// True for `at+jwt` and `application/at+jwt`, in any case (RFC 9068 §2.1, RFC 7515
/// §4.1.9).
pub fn is_access_typ(typ: &str) -> bool {
    let t = typ.to_ascii_lowercase();
    t == "at+jwt" || t == "application/at+jwt"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn base() -> Value {
        json!({"iss": "https://i", "sub": "u", "aud": ["https://i", "x"], "iat": 1000,
               "nbf": 1000, "exp": 1900, "jti": "j", "role": "admin"})
    }

    #[test]
    fn a_fresh_token_with_the_right_issuer_and_audience_passes() {
        let rules = TimeRules {
            now: 1500,
            leeway: 60,
        };
        let c = validate_access(claims(base()), "https://i", "https://i", rules).unwrap();
        assert_eq!(c.sub, "u");
        assert!(c.extra.is_empty());
    }

    #[test]
    fn leeway_applies_to_exp_nbf_and_iat_and_no_further() {
        let ok = |now| {
            validate_access(
                claims(base()),
                "https://i",
                "https://i",
                TimeRules { now, leeway: 60 },
            )
        };
        assert!(ok(1959).is_ok());
        assert_eq!(ok(1960).unwrap_err(), ClaimsError::Expired);
        assert!(ok(940).is_ok());
        assert_eq!(ok(939).unwrap_err(), ClaimsError::NotYetValid);
        let mut c = base();
        c["nbf"] = json!(900);
        c["iat"] = json!(1100);
        let r = validate_access(
            claims(c),
            "https://i",
            "https://i",
            TimeRules {
                now: 1000,
                leeway: 60,
            },
        );
        assert_eq!(r.unwrap_err(), ClaimsError::IssuedInFuture);
    }

    #[test]
    fn wrong_issuer_audience_or_types_are_refused() {
        let rules = TimeRules {
            now: 1500,
            leeway: 0,
        };
        assert_eq!(
            validate_access(claims(base()), "https://other", "https://i", rules).unwrap_err(),
            ClaimsError::Issuer
        );
        assert_eq!(
            validate_access(claims(base()), "https://i", "https://api", rules).unwrap_err(),
            ClaimsError::Audience
        );
        let mut c = base();
        c["exp"] = json!("1900");
        assert_eq!(
            validate_access(claims(c), "https://i", "https://i", rules).unwrap_err(),
            ClaimsError::Shape
        );
        let mut c = base();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            validate_access(claims(c), "https://i", "https://i", rules).unwrap_err(),
            ClaimsError::Shape
        );
    }

    #[test]
    fn typ_matching_follows_rfc_9068() {
        assert!(is_access_typ("at+jwt"));
        assert!(is_access_typ("AT+JWT"));
        assert!(is_access_typ("application/at+jwt"));
        assert!(!is_access_typ("JWT"));
    }
}
