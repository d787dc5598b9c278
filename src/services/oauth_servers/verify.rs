//! The claim rules for IdP tokens, once the signature has verified, and the mapping of
//! the token's role claim to local roles.
//!
//! `exp` is required; `exp`, `nbf` and `iat` follow the same [`TimeRules`] (and the same
//! bounded `tokens.leeway`) as every other JWT keygate checks. `aud` must hold the
//! server's `audience` unless the registration opted out (`audience_check = false`).
//! Only access tokens count: see [`check_token_type`]. `sub` is required: the principal is
//! `<oauth_id>:<sub>`.

use crate::services::authz::Role;
use crate::services::tokens::claims::{Audience, ClaimsError, TimeRules};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Longest accepted `sub` and `jti`.
const MAX_ID_LEN: usize = 256;
/// Most role values read from one token.
const MAX_ROLE_VALUES: usize = 256;

/// Why an IdP token was refused. Callers get a 401 naming the reason; the reason is
/// also counted (`keygate_idp_token_refusals_total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    UnknownIssuer,
    Algorithm,
    NoKey,
    Signature,
    Time(ClaimsError),
    Audience,
    /// An ID token, or a `typ` that is not an access token's.
    NotAccessToken,
    Claims(&'static str),
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::Algorithm => "algorithm",
            Refusal::NoKey => "no_key",
            Refusal::Signature => "signature",
            Refusal::Time(_) => "time",
            Refusal::Audience => "audience",
            Refusal::NotAccessToken => "not_access_token",
            Refusal::Claims(_) => "claims",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Refusal::Malformed => "the token is not a well-formed signed JWT".into(),
            Refusal::UnknownIssuer => "the token's issuer is not a registered OAuth server".into(),
            Refusal::Algorithm => {
                "the token's alg is not accepted (ES256, ES384, EdDSA, RS256, PS256, matching the key)"
                    .into()
            }
            Refusal::NoKey => "no key of the OAuth server matches the token's kid and alg".into(),
            Refusal::Signature => "the token's signature does not verify".into(),
            Refusal::Time(e) => e.to_string(),
            Refusal::Audience => "the token is not meant for this audience".into(),
            Refusal::NotAccessToken => {
                "the token is not an access token (an ID token, or its typ is not JWT or at+jwt)"
                    .into()
            }
            Refusal::Claims(what) => format!("the token's claims are unusable: {what}"),
        }
    }
}

/// The checked claims keygate uses.
#[derive(Debug, Clone)]
pub struct Checked {
    pub sub: String,
    pub jti: Option<String>,
    pub exp: i64,
    pub iat: Option<i64>,
    pub aud: Option<Audience>,
}

/// A NumericDate: an integer, or a finite number whose fraction is dropped.
fn time(claims: &Map<String, Value>, k: &str) -> Result<Option<i64>, Refusal> {
    match claims.get(k) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(Refusal::Claims("a time claim is out of range")),
        Some(_) => Err(Refusal::Claims("a time claim is not a number")),
    }
}

/// Only access tokens are credentials: a `typ` header other than `JWT` or `at+jwt` (RFC
/// 9068, with or without `application/`) is refused, and so is an OpenID Connect ID
/// token, recognised by the claims only ID tokens carry (`nonce`, `at_hash`, `c_hash`),
/// or by Keycloak's `typ` claim (`ID`, and `Refresh` or `Logout` for its other
/// non-access tokens). An ID token tells a client who signed in; it is not meant for an
/// API.
pub fn check_token_type(typ: Option<&str>, claims: &Map<String, Value>) -> Result<(), Refusal> {
    if let Some(t) = typ {
        let t = t.to_ascii_lowercase();
        let t = t.strip_prefix("application/").unwrap_or(&t);
        if t != "jwt" && t != "at+jwt" {
            return Err(Refusal::NotAccessToken);
        }
    }
    if ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|k| claims.contains_key(*k))
    {
        return Err(Refusal::NotAccessToken);
    }
    if claims
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| ["id", "refresh", "logout"].contains(&t.to_ascii_lowercase().as_str()))
    {
        return Err(Refusal::NotAccessToken);
    }
    Ok(())
}

/// Time, audience and subject rules (the issuer was matched when the server was chosen).
pub fn check_claims(
    claims: &Map<String, Value>,
    audience: Option<&str>,
    rules: TimeRules,
) -> Result<Checked, Refusal> {
    let exp = time(claims, "exp")?.ok_or(Refusal::Claims("exp is missing"))?;
    let nbf = time(claims, "nbf")?;
    let iat = time(claims, "iat")?;
    rules.check(exp, nbf, iat).map_err(Refusal::Time)?;
    let aud = match claims.get("aud") {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<Audience>(v.clone())
                .map_err(|_| Refusal::Claims("aud is not a string or an array of strings"))?,
        ),
    };
    if let Some(want) = audience {
        if !aud.as_ref().is_some_and(|a| a.contains(want)) {
            return Err(Refusal::Audience);
        }
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control))
        .ok_or(Refusal::Claims("sub is missing, empty or too long"))?;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_ID_LEN)
        .map(str::to_string);
    Ok(Checked {
        sub: sub.to_string(),
        jti,
        exp,
        iat,
        aud,
    })
}

/// The value at `path`: the claim of that exact name if there is one (claim names may
/// hold dots, like `https://example.com/roles`), else the dotted path through nested
/// objects (`realm_access.roles`).
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// The token's role values: the claim as a string, or the strings of an array.
pub fn role_values<'a>(claims: &'a Map<String, Value>, path: &str) -> Vec<&'a str> {
    match claim_at(claims, path) {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_ROLE_VALUES)
            .collect(),
        _ => Vec::new(),
    }
}

/// The union of the local roles the values map to; roles that no longer exist locally
/// are skipped. `None` when nothing maps.
pub fn mapped_role(values: &[&str], mapping: &BTreeMap<String, String>) -> Option<Role> {
    let mut roles: Vec<Role> = values
        .iter()
        .filter_map(|v| mapping.get(*v))
        .filter_map(|local| Role::lookup(local))
        .collect();
    roles.sort_unstable_by_key(|r| r.name());
    roles.dedup();
    Role::union(&roles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_access_tokens_pass_the_type_check() {
        let access = claims(json!({"sub": "s", "typ": "Bearer"}));
        for typ in [
            None,
            Some("JWT"),
            Some("at+jwt"),
            Some("application/AT+JWT"),
        ] {
            assert_eq!(check_token_type(typ, &access), Ok(()), "{typ:?}");
        }
        for typ in ["logout+jwt", "secevent+jwt", "dpop+jwt", "id_token"] {
            assert_eq!(
                check_token_type(Some(typ), &access),
                Err(Refusal::NotAccessToken),
                "{typ}"
            );
        }
        for c in [
            json!({"sub": "s", "nonce": "n"}),
            json!({"sub": "s", "at_hash": "h"}),
            json!({"sub": "s", "c_hash": "h"}),
            json!({"sub": "s", "typ": "ID"}),
            json!({"sub": "s", "typ": "Refresh"}),
        ] {
            assert_eq!(
                check_token_type(Some("JWT"), &claims(c.clone())),
                Err(Refusal::NotAccessToken),
                "{c}"
            );
        }
    }

    const RULES: TimeRules = TimeRules {
        now: 1000,
        leeway: 60,
    };

    #[test]
    fn exp_and_sub_are_required_and_time_follows_the_shared_rules() {
        let ok = claims(json!({"sub": "alice", "exp": 1100, "iat": 990, "nbf": 990}));
        let c = check_claims(&ok, None, RULES).unwrap();
        assert_eq!((c.sub.as_str(), c.exp), ("alice", 1100));
        assert_eq!(
            check_claims(&claims(json!({"sub": "a"})), None, RULES).unwrap_err(),
            Refusal::Claims("exp is missing")
        );
        assert!(check_claims(&claims(json!({"exp": 1100})), None, RULES).is_err());
        assert!(check_claims(&claims(json!({"sub": "", "exp": 1100})), None, RULES).is_err());
        assert_eq!(
            check_claims(&claims(json!({"sub": "a", "exp": 940})), None, RULES).unwrap_err(),
            Refusal::Time(ClaimsError::Expired)
        );
        assert_eq!(
            check_claims(
                &claims(json!({"sub": "a", "exp": 2000, "nbf": 1061})),
                None,
                RULES
            )
            .unwrap_err(),
            Refusal::Time(ClaimsError::NotYetValid)
        );
        assert!(check_claims(&claims(json!({"sub": "a", "exp": "2000"})), None, RULES).is_err());
        assert!(check_claims(&claims(json!({"sub": "a", "exp": 1100.7})), None, RULES).is_ok());
    }

    #[test]
    fn a_configured_audience_must_be_in_aud() {
        let one = claims(json!({"sub": "a", "exp": 1100, "aud": "api"}));
        let many = claims(json!({"sub": "a", "exp": 1100, "aud": ["x", "api"]}));
        let none = claims(json!({"sub": "a", "exp": 1100}));
        assert!(check_claims(&one, Some("api"), RULES).is_ok());
        assert!(check_claims(&many, Some("api"), RULES).is_ok());
        assert_eq!(
            check_claims(&one, Some("other"), RULES).unwrap_err(),
            Refusal::Audience
        );
        assert_eq!(
            check_claims(&none, Some("api"), RULES).unwrap_err(),
            Refusal::Audience
        );
        assert!(check_claims(&none, None, RULES).is_ok());
    }

    #[test]
    fn role_claims_are_strings_arrays_or_dotted_paths() {
        let c = claims(json!({
            "roles": ["a", 7, "b"],
            "role": "c",
            "realm_access": {"roles": ["d"]},
            "https://example.com/roles": ["e"],
        }));
        assert_eq!(role_values(&c, "roles"), ["a", "b"]);
        assert_eq!(role_values(&c, "role"), ["c"]);
        assert_eq!(role_values(&c, "realm_access.roles"), ["d"]);
        assert_eq!(role_values(&c, "https://example.com/roles"), ["e"]);
        assert!(role_values(&c, "missing.path").is_empty());
        assert!(role_values(&c, "realm_access").is_empty());
    }

    #[test]
    fn every_mapped_value_counts_and_unmapped_values_grant_nothing() {
        let m: BTreeMap<String, String> = [
            ("readers", "read-only"),
            ("gw", "gateway"),
            ("ghost", "no-such-role"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(mapped_role(&["readers"], &m), Some(Role::ReadOnly));
        let both = mapped_role(&["readers", "gw", "other"], &m).unwrap();
        assert!(both.has(crate::services::authz::Permission::KeysRead));
        assert!(both.has(crate::services::authz::Permission::TokensIntrospect));
        assert!(!both.read_only());
        assert_eq!(mapped_role(&["other", "ghost"], &m), None);
        assert_eq!(mapped_role(&[], &m), None);
    }
}
