//! An IdP's verification keys, from a registered PEM or from a fetched JWKS.
//!
//! Why it exists: the one place that decides which token `alg` a key may verify. Each
//! key has a type (P-256, P-384, Ed25519, RSA ≥ 2048 bits) and each accepted `alg` needs
//! exactly one type: ES256↔P-256, ES384↔P-384, EdDSA↔Ed25519, RS256/PS256↔RSA. `none`,
//! every `HS*` and anything else is refused before a key is looked at, so an IdP's
//! public key can never be used as an HMAC secret. A JWK that states `alg` verifies only
//! tokens with that `alg`; a JWK whose `use` is not `sig`, or whose `key_ops` lack
//! `verify`, is ignored.

use crate::hardware::public_key::PublicKeyMaterial;
use crate::hardware::{Algorithm, PublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use zeroize::Zeroizing;

/// Most keys taken from one JWKS; real IdPs publish a handful.
pub const MAX_JWKS_KEYS: usize = 64;
/// Longest accepted `public_key_pem`.
pub const MAX_PEM_LEN: usize = 16 * 1024;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// What kind of public key a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    P256,
    P384,
    Ed25519,
    Rsa,
}

/// The JWS algorithms keygate accepts from IdPs, with the key type each needs.
pub fn token_algorithm(alg: &str) -> Option<(Algorithm, KeyType)> {
    match alg {
        "ES256" => Some((Algorithm::ES256, KeyType::P256)),
        "ES384" => Some((Algorithm::ES384, KeyType::P384)),
        "EdDSA" => Some((Algorithm::EdDSA, KeyType::Ed25519)),
        "RS256" => Some((Algorithm::RS256, KeyType::Rsa)),
        "PS256" => Some((Algorithm::PS256, KeyType::Rsa)),
        _ => None,
    }
}

/// One verification key.
#[derive(Debug, Clone)]
pub struct VerifyKey {
    /// The JWK's `kid`; `None` for a PEM key.
    pub kid: Option<String>,
    /// The JWK's `alg`, when it states one.
    pub alg: Option<String>,
    pub kind: KeyType,
    key: PublicKey,
}

impl VerifyKey {
    /// Whether this key may verify a token whose header says `alg`.
    pub fn accepts(&self, alg: &str) -> bool {
        token_algorithm(alg).is_some_and(|(_, kind)| kind == self.kind)
            && self.alg.as_deref().is_none_or(|a| a == alg)
    }

    /// True when `sig` is a valid `alg` signature of `msg` under this key.
    pub fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
        match token_algorithm(alg) {
            Some((algorithm, _)) if self.accepts(alg) => {
                crate::keys::verify::verify_signature(&self.key, algorithm, msg, sig)
            }
            _ => false,
        }
    }

    fn new(key: PublicKey, kid: Option<String>, alg: Option<String>) -> Result<Self, String> {
        let kind = match &key.material {
            PublicKeyMaterial::Ec { point } if point.len() == 65 => KeyType::P256,
            PublicKeyMaterial::Ec { point } if point.len() == 97 => KeyType::P384,
            PublicKeyMaterial::Ec { .. } => return Err("unsupported EC point size".into()),
            PublicKeyMaterial::Ed25519 { .. } => KeyType::Ed25519,
            PublicKeyMaterial::Rsa { n, .. } => {
                let bits = rsa_bits(n);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(format!(
                        "RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {bits}"
                    ));
                }
                KeyType::Rsa
            }
        };
        Ok(VerifyKey {
            kid,
            alg,
            kind,
            key,
        })
    }
}

/// Bit length of a big-endian modulus without leading zero bytes.
fn rsa_bits(n: &[u8]) -> usize {
    match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Parses a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) of a P-256, P-384,
/// Ed25519 or RSA (2048-8192 bits) key. Private keys and certificates are refused with
/// a message saying what to send instead.
pub fn from_pem(pem: &str) -> Result<VerifyKey, String> {
    let pem = pem.trim();
    if pem.len() > MAX_PEM_LEN {
        return Err(format!("longer than {} KiB", MAX_PEM_LEN / 1024));
    }
    let (label, der) = pkcs8::der::pem::decode_vec(pem.as_bytes())
        .map_err(|e| format!("not a PEM document ({e})"))?;
    // Whatever it holds, it is dropped zeroized: it may be a private key sent by mistake.
    let der = Zeroizing::new(der);
    if label.contains("PRIVATE KEY") {
        return Err(
            "this is a private key; send only the IdP's public key (-----BEGIN PUBLIC KEY-----)"
                .into(),
        );
    }
    if label == "CERTIFICATE" {
        return Err(
            "this is a certificate; send its public key (`openssl x509 -pubkey -noout`)".into(),
        );
    }
    if label != "PUBLIC KEY" {
        return Err(format!(
            "expected a PUBLIC KEY (SubjectPublicKeyInfo) PEM, got {label}"
        ));
    }
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::RS256,
    ] {
        if let Ok(key) = PublicKey::from_spki_der(alg, &der) {
            return VerifyKey::new(key, None, None);
        }
    }
    Err("not a P-256, P-384, Ed25519 or RSA public key".into())
}

fn b64(jwk: &serde_json::Map<String, Value>, member: &str) -> Result<Vec<u8>, String> {
    let s = jwk
        .get(member)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{member} is missing"))?;
    // RFC 7518 says unpadded; some servers pad anyway.
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("{member} is not base64url"))
}

fn text(jwk: &serde_json::Map<String, Value>, member: &str) -> Option<String> {
    jwk.get(member).and_then(Value::as_str).map(str::to_string)
}

/// One JWK: `Ok(None)` for a key that is not for verifying JWS signatures, or of a type
/// keygate does not accept (which is not an error: JWKS often hold encryption keys).
pub fn from_jwk(jwk: &Value) -> Result<Option<VerifyKey>, String> {
    let Some(jwk) = jwk.as_object() else {
        return Err("a key is not a JSON object".into());
    };
    if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Ok(None);
        }
    }
    let kid = text(jwk, "kid");
    let alg = text(jwk, "alg");
    if alg.as_deref().is_some_and(|a| token_algorithm(a).is_none()) {
        return Ok(None);
    }
    let key = match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (algorithm, size) = if crv == "P-256" {
                (Algorithm::ES256, 32)
            } else {
                (Algorithm::ES384, 48)
            };
            let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
            if x.len() != size || y.len() != size {
                return Err(format!("{crv} coordinates must be {size} bytes each"));
            }
            let point = [&[4u8][..], &x, &y].concat();
            PublicKey::ec(algorithm, point).map_err(|e| e.to_string())?
        }
        (Some("OKP"), Some("Ed25519")) => {
            PublicKey::ed25519(b64(jwk, "x")?).map_err(|e| e.to_string())?
        }
        (Some("RSA"), _) => {
            let (n, e) = (b64(jwk, "n")?, b64(jwk, "e")?);
            if e.is_empty() || e.len() > 8 {
                return Err("RSA exponent has an unusable size".into());
            }
            PublicKey::rsa(Algorithm::RS256, &n, &e)
        }
        _ => return Ok(None),
    };
    VerifyKey::new(key, kid, alg).map(Some)
}

/// The usable keys of a JWKS document (`{"keys": [...]}`). Unusable keys are skipped,
/// with the reason in `skipped`; at most [`MAX_JWKS_KEYS`] keys are read.
pub fn parse_jwks(body: &[u8]) -> Result<(Vec<VerifyKey>, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in keys.iter().enumerate().take(MAX_JWKS_KEYS) {
        match from_jwk(k) {
            Ok(Some(key)) => usable.push(key),
            Ok(None) => {}
            Err(e) => skipped.push(format!("key {i}: {e}")),
        }
    }
    if keys.len() > MAX_JWKS_KEYS {
        skipped.push(format!(
            "{} keys beyond the first {MAX_JWKS_KEYS}",
            keys.len() - MAX_JWKS_KEYS
        ));
    }
    Ok((usable, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p256() -> (aws_lc_rs::signature::EcdsaKeyPair, Value) {
        use aws_lc_rs::signature::KeyPair;
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .unwrap();
        let pk = PublicKey::ec(Algorithm::ES256, pair.public_key().as_ref().to_vec()).unwrap();
        let jwk = pk.jwk("k1");
        (pair, jwk)
    }

    fn sign(pair: &aws_lc_rs::signature::EcdsaKeyPair, msg: &[u8]) -> Vec<u8> {
        pair.sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted_and_each_needs_its_key_type() {
        for alg in [
            "none", "HS256", "HS384", "HS512", "RS384", "ES512", "", "es256",
        ] {
            assert!(token_algorithm(alg).is_none(), "{alg}");
        }
        let (pair, jwk) = p256();
        let key = from_jwk(&jwk).unwrap().unwrap();
        assert_eq!(key.kind, KeyType::P256);
        let sig = sign(&pair, b"msg");
        assert!(key.verify("ES256", b"msg", &sig));
        assert!(!key.verify("ES256", b"msg2", &sig));
        for other in ["ES384", "RS256", "PS256", "EdDSA", "HS256", "none"] {
            assert!(!key.verify(other, b"msg", &sig), "{other}");
        }
    }

    #[test]
    fn a_jwk_alg_pins_the_token_alg_and_non_signing_keys_are_ignored() {
        let (_, mut jwk) = p256();
        jwk["alg"] = json!("ES256");
        assert!(from_jwk(&jwk).unwrap().unwrap().accepts("ES256"));
        let mut enc = jwk.clone();
        enc["use"] = json!("enc");
        assert!(from_jwk(&enc).unwrap().is_none());
        let mut ops = jwk.clone();
        ops.as_object_mut().unwrap().remove("use");
        ops["key_ops"] = json!(["encrypt"]);
        assert!(from_jwk(&ops).unwrap().is_none());
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert!(from_jwk(&oct).unwrap().is_none());
        let mut hs = jwk.clone();
        hs["alg"] = json!("HS256");
        assert!(from_jwk(&hs).unwrap().is_none());
    }

    #[test]
    fn short_rsa_keys_and_wrong_coordinate_sizes_are_refused() {
        let n = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let jwk = json!({"kty": "RSA", "n": n, "e": "AQAB"});
        assert!(from_jwk(&jwk).unwrap_err().contains("1024"));
        let (_, mut jwk) = p256();
        jwk["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 31]));
        assert!(from_jwk(&jwk).is_err());
        assert_eq!(rsa_bits(&[0x01, 0, 0]), 17);
    }

    #[test]
    fn pem_input_must_be_a_public_key() {
        let (_, jwk) = p256();
        let key = from_jwk(&jwk).unwrap().unwrap();
        let der = key.key.spki_der().unwrap();
        let pem =
            pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::LineEnding::LF, &der).unwrap();
        assert_eq!(from_pem(&pem).unwrap().kind, KeyType::P256);
        let private =
            pkcs8::der::pem::encode_string("PRIVATE KEY", pkcs8::LineEnding::LF, &der).unwrap();
        assert!(from_pem(&private).unwrap_err().contains("private key"));
        assert!(from_pem("not a pem").is_err());
        let garbage =
            pkcs8::der::pem::encode_string("PUBLIC KEY", pkcs8::LineEnding::LF, b"xx").unwrap();
        assert!(from_pem(&garbage).is_err());
    }
}
