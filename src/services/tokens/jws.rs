//! Compact JWS (RFC 7515) encoding and strict parsing.
//!
//! Parsing rejects before any cryptography: a token longer than [`MAX_TOKEN_LEN`], a
//! header segment longer than [`MAX_HEADER_LEN`], anything but three segments, padded or
//! non-base64url text, a header that is not a JSON object, `alg: none`, and any `crit`
//! header (RFC 7515 §4.1.11: keygate understands no extensions, so it must refuse them).
//! Headers that point at keys (`jku`, `jwk`, `x5u`, `x5c`) are never followed: the key
//! comes from the `kid` in keygate's own registry, nowhere else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest token accepted, in bytes. An RS256-3072 token with generous claims fits.
pub const MAX_TOKEN_LEN: usize = 8192;
/// Longest header segment accepted, in base64url characters.
pub const MAX_HEADER_LEN: usize = 1024;

/// Why a compact JWS could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token must have three dot-separated segments")]
    Segments,
    #[error("header is longer than {MAX_HEADER_LEN} characters")]
    HeaderTooLong,
    #[error("{0} is not unpadded base64url")]
    Base64(&'static str),
    #[error("{0} is not a JSON object")]
    Json(&'static str),
    #[error("alg \"none\" is never accepted")]
    AlgNone,
    #[error("header carries crit, and keygate supports no JWS extensions")]
    Critical,
}

/// The header fields keygate reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Header,
    /// `base64url(header) || '.' || base64url(payload)`: what the signature covers.
    pub signing_input: &'a [u8],
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

fn b64(segment: &str, what: &'static str) -> Result<Vec<u8>, JwsError> {
    // The engine refuses padding and non-alphabet bytes; canonical trailing bits are
    // enforced too, so one token has exactly one spelling.
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwsError::Base64(what))
}

/// Splits and decodes a compact JWS without checking its signature.
pub fn parse(token: &str) -> Result<Parsed<'_>, JwsError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Segments);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JwsError::Segments);
    }
    if h.len() > MAX_HEADER_LEN {
        return Err(JwsError::HeaderTooLong);
    }
    let header_bytes = b64(h, "header")?;
    // Through a map first: serde would also build the struct from a JSON array.
    let header_map: Map<String, Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| JwsError::Json("header"))?;
    let header: Header =
        serde_json::from_value(Value::Object(header_map)).map_err(|_| JwsError::Json("header"))?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(JwsError::AlgNone);
    }
    if header.crit.is_some() {
        return Err(JwsError::Critical);
    }
    let payload = b64(p, "payload")?;
    let signature = b64(s, "signature")?;
    Ok(Parsed {
        header,
        signing_input: &token.as_bytes()[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

/// Parses the payload as a JSON object.
pub fn claims(payload: &[u8]) -> Result<Map<String, Value>, JwsError> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwsError::Json("payload")),
    }
}

/// The `iss` of a token, read without verifying anything: only to choose which verifier
/// (keygate's own, a key file's, an IdP's) gets the token. `None` for anything that does
/// not parse as a JWS with a string `iss`.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let parsed = parse(token).ok()?;
    match claims(&parsed.payload).ok()?.remove("iss")? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// `base64url(header) . base64url(claims)`, ready to be signed.
pub fn signing_input(header: &Value, claims: &Value) -> Result<String, serde_json::Error> {
    let h = serde_json::to_vec(header)?;
    let c = serde_json::to_vec(claims)?;
    let mut out = String::with_capacity((h.len() + c.len()) * 4 / 3 + 4);
    URL_SAFE_NO_PAD.encode_string(&h, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&c, &mut out);
    Ok(out)
}

/// Appends the signature to a signing input, completing the compact JWS.
pub fn finish(mut signing_input: String, signature: &[u8]) -> String {
    signing_input.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut signing_input);
    signing_input
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(header: &Value, claims: &Value) -> String {
        finish(signing_input(header, claims).unwrap(), b"sig")
    }

    #[test]
    fn a_well_formed_token_round_trips() {
        let t = token(
            &json!({"alg": "ES256", "kid": "k", "typ": "at+jwt"}),
            &json!({"sub": "a"}),
        );
        let p = parse(&t).unwrap();
        assert_eq!(p.header.alg, "ES256");
        assert_eq!(p.header.kid.as_deref(), Some("k"));
        assert_eq!(p.signature, b"sig");
        assert_eq!(claims(&p.payload).unwrap()["sub"], "a");
        assert!(t.starts_with(std::str::from_utf8(p.signing_input).unwrap()));
    }

    #[test]
    fn wrong_segment_counts_are_refused() {
        for t in ["", "a", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b."] {
            assert_eq!(parse(t).unwrap_err(), JwsError::Segments, "{t:?}");
        }
    }

    #[test]
    fn bad_base64_and_padding_are_refused() {
        let good = token(&json!({"alg": "ES256"}), &json!({}));
        let (h, rest) = good.split_once('.').unwrap();
        assert!(matches!(
            parse(&format!("{h}=.{rest}")),
            Err(JwsError::Base64(_))
        ));
        assert!(matches!(
            parse(&format!("{h}.%%.x")),
            Err(JwsError::Base64(_))
        ));
        assert!(matches!(parse("eyJ.e30.c2ln"), Err(JwsError::Base64(_))));
    }

    #[test]
    fn alg_none_crit_and_non_object_headers_are_refused() {
        for alg in ["none", "None", "NONE"] {
            let t = token(&json!({"alg": alg}), &json!({}));
            assert_eq!(parse(&t).unwrap_err(), JwsError::AlgNone);
        }
        let t = token(&json!({"alg": "ES256", "crit": ["exp"]}), &json!({}));
        assert_eq!(parse(&t).unwrap_err(), JwsError::Critical);
        let t = token(&json!(["alg"]), &json!({}));
        assert_eq!(parse(&t).unwrap_err(), JwsError::Json("header"));
        let t = token(&json!({"kid": "x"}), &json!({}));
        assert_eq!(parse(&t).unwrap_err(), JwsError::Json("header"));
    }

    #[test]
    fn oversized_tokens_and_headers_are_refused_before_decoding() {
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(parse(&big).unwrap_err(), JwsError::TooLong);
        let h = "a".repeat(MAX_HEADER_LEN + 1);
        assert_eq!(
            parse(&format!("{h}.e30.c2ln")).unwrap_err(),
            JwsError::HeaderTooLong
        );
    }
}
