//! Fetching an IdP's JWKS: one HTTPS GET with hard limits.
//!
//! Why it exists: a JWKS URI points at a server keygate does not control, and a slow or
//! hostile one must not tie up keygate. So: no redirects (a JWKS URI names the document,
//! not a place to start from), one deadline for the whole request including the body
//! (`oauth.jwks_fetch_timeout`), and a body read in chunks and cut off at
//! `oauth.jwks_max_bytes`. TLS is rustls with aws-lc-rs (the crypto keygate already
//! uses) and the operating system's trust store, so IdPs under an internal CA work
//! once that CA is installed the usual way.

use crate::config::OAuthConfig;
use std::sync::Arc;
use std::time::Duration;

/// Why a fetch failed; logged with the server's name, never returned to callers.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Uri(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answered HTTP {0} (redirects are not followed)")]
    Status(u16),
    #[error("the document is larger than {0} bytes (oauth.jwks_max_bytes)")]
    TooLarge(usize),
}

/// The HTTP client for JWKS documents.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    max_bytes: usize,
    allow_insecure_loopback: bool,
}

fn tls_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "reading the system trust store for JWKS fetches");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            ignored,
            "the system trust store holds no usable CA certificate; https JWKS fetches will fail"
        );
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Fetcher {
    pub fn new(cfg: &OAuthConfig) -> Result<Fetcher, String> {
        if cfg.jwks_fetch_timeout.0.is_zero() {
            return Err("oauth.jwks_fetch_timeout must be positive".into());
        }
        if cfg.jwks_max_bytes == 0 {
            return Err("oauth.jwks_max_bytes must be positive".into());
        }
        let timeout = cfg.jwks_fetch_timeout.0;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config()?)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("JWKS HTTP client: {e}"))?;
        Ok(Fetcher {
            client,
            timeout,
            max_bytes: cfg.jwks_max_bytes,
            allow_insecure_loopback: cfg.allow_insecure_loopback_jwks,
        })
    }

    /// GETs `uri` and returns its body: at most `jwks_max_bytes`, within the deadline.
    pub async fn get(&self, uri: &str) -> Result<Vec<u8>, FetchError> {
        let url = super::input::jwks_uri(uri, self.allow_insecure_loopback)
            .map_err(|e| FetchError::Uri(e.to_string()))?;
        // reqwest's timeout covers the body too; the outer one is the guarantee.
        match tokio::time::timeout(self.timeout, self.get_bounded(url)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn get_bounded(&self, url: reqwest::Url) -> Result<Vec<u8>, FetchError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout(self.timeout)
            } else {
                FetchError::Transport(e.without_url().to_string())
            }
        };
        let mut resp = self
            .client
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(transport)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
