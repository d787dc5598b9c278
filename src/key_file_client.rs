//! The client side of key files: turning a downloaded key file into a fresh assertion
//! (`keygate client assertion`), so a shell user can call the API with curl.
//!
//! Why it lives in keygate: it is the reference client for the key-file assertion of `docs/key-files.md`,
//! and it needs no server, store or hardware. The private key is read from the file,
//! decrypted with the passphrase if it is encrypted, used once and zeroized.

use crate::services::tokens::jws;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

/// Why no assertion could be made. Messages never include key material.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("key file: {0}")]
    File(String),
    #[error("the key file has no accessKey: it was registered with your own public key, so sign the assertion with that key")]
    NoAccessKey,
    #[error("the accessKey is encrypted; give its passphrase with --passphrase-file")]
    NeedPassphrase,
    #[error("cannot decrypt the accessKey: wrong passphrase, or a damaged file")]
    Decrypt,
    #[error("accessKey: {0}")]
    Key(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    #[serde(rename = "accessID")]
    access_id: String,
    access_key: Option<Zeroizing<String>>,
    admin_rest_api_url: String,
}

/// What the assertion should say beyond the file's own fields.
#[derive(Debug, Clone)]
pub struct AssertionOptions {
    /// `aud`; defaults to the file's `adminRestApiUrl`.
    pub audience: Option<String>,
    /// Seconds of validity, at most 3600.
    pub ttl: i64,
    pub now: i64,
}

/// The signing key inside an `accessKey`.
enum SigningKey {
    Es256(aws_lc_rs::signature::EcdsaKeyPair),
    Rs256(aws_lc_rs::rsa::KeyPair),
}

fn signing_key(pem: &str, passphrase: Option<&SecretString>) -> Result<SigningKey, ClientError> {
    let (label, der) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
        .map_err(|e| ClientError::Key(format!("not a PEM document ({e})")))?;
    let der = Zeroizing::new(der);
    let plain: Zeroizing<Vec<u8>> = match label {
        "PRIVATE KEY" => der,
        "ENCRYPTED PRIVATE KEY" => {
            let pass = passphrase.ok_or(ClientError::NeedPassphrase)?;
            let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
                .map_err(|e| ClientError::Key(format!("encrypted PKCS#8: {e}")))?;
            let doc = info
                .decrypt(pass.expose_secret().as_bytes())
                .map_err(|_| ClientError::Decrypt)?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
        other => {
            return Err(ClientError::Key(format!(
                "expected a PKCS#8 PRIVATE KEY PEM, got {other}"
            )))
        }
    };
    if let Ok(k) = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &plain,
    ) {
        return Ok(SigningKey::Es256(k));
    }
    aws_lc_rs::rsa::KeyPair::from_pkcs8(&plain)
        .map(SigningKey::Rs256)
        .map_err(|_| ClientError::Key("neither a P-256 nor an RSA private key".into()))
}

/// A fresh assertion for the key file `file_json`: `iss` = `sub` = accessID, `aud` =
/// `adminRestApiUrl` (or `opts.audience`), `iat` = now, `exp` = now + ttl, a random
/// `jti`.
pub fn assertion(
    file_json: &str,
    passphrase: Option<&SecretString>,
    opts: &AssertionOptions,
) -> Result<String, ClientError> {
    if !(1..=crate::services::key_files::MAX_ASSERTION_LIFETIME).contains(&opts.ttl) {
        return Err(ClientError::File(format!(
            "the lifetime must be 1 to {} seconds",
            crate::services::key_files::MAX_ASSERTION_LIFETIME
        )));
    }
    let file: KeyFile = serde_json::from_str(file_json)
        .map_err(|e| ClientError::File(format!("not a keygate key file ({e})")))?;
    let pem = file.access_key.as_ref().ok_or(ClientError::NoAccessKey)?;
    let key = signing_key(pem, passphrase)?;
    let alg = match key {
        SigningKey::Es256(_) => "ES256",
        SigningKey::Rs256(_) => "RS256",
    };
    let claims = json!({
        "iss": file.access_id,
        "sub": file.access_id,
        "aud": opts.audience.clone().unwrap_or(file.admin_rest_api_url),
        "iat": opts.now,
        "exp": opts.now + opts.ttl,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let input = jws::signing_input(&json!({"alg": alg, "typ": "JWT"}), &claims)
        .map_err(|e| ClientError::File(e.to_string()))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signature = match key {
        SigningKey::Es256(k) => k
            .sign(&rng, input.as_bytes())
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| ClientError::Key(format!("signing: {e}")))?,
        SigningKey::Rs256(k) => {
            let mut sig = vec![0u8; k.public_modulus_len()];
            k.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &rng,
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|e| ClientError::Key(format!("signing: {e}")))?;
            sig
        }
    };
    Ok(jws::finish(input, &signature))
}
