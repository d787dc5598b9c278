//! Fetching an IdP's JWKS: one HTTPS GET with hard limits, through the outbound client.
//!
//! Why it exists: a JWKS URI points at a server keygate does not control, and a slow or
//! hostile one must not tie up keygate. So: no redirects (a JWKS URI names the document,
//! not a place to start from), one deadline for the whole request including the body
//! (`oauth.jwks_fetch_timeout`), and a body read in chunks and cut off at
//! `oauth.jwks_max_bytes`. Which addresses a JWKS URI may reach is the outbound policy's
//! decision (`src/outbound.rs`, `[outbound]` in `docs/configuration.md`). TLS is rustls
//! with aws-lc-rs and the operating system's trust store plus the Mozilla roots, so IdPs
//! under an internal CA work once that CA is installed the usual way.

use crate::config::Config;
use std::time::Duration;

/// Why a fetch failed; logged with the server's name, never returned to callers.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A URI that may not be fetched: malformed, or refused by the outbound policy.
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

/// The HTTP client for JWKS documents: the outbound client (`src/outbound.rs`), whose
/// network policy decides which addresses a JWKS URI may reach.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: crate::outbound::Outbound,
    timeout: Duration,
    max_bytes: usize,
    allow_insecure_loopback: bool,
}

impl Fetcher {
    pub fn new(config: &Config) -> Result<Fetcher, String> {
        let cfg = &config.oauth;
        if cfg.jwks_fetch_timeout.0.is_zero() {
            return Err("oauth.jwks_fetch_timeout must be positive".into());
        }
        if cfg.jwks_max_bytes == 0 {
            return Err("oauth.jwks_max_bytes must be positive".into());
        }
        Ok(Fetcher {
            client: crate::outbound::Outbound::new(
                &config.outbound,
                cfg.allow_insecure_loopback_jwks,
            )?,
            timeout: cfg.jwks_fetch_timeout.0,
            max_bytes: cfg.jwks_max_bytes,
            allow_insecure_loopback: cfg.allow_insecure_loopback_jwks,
        })
    }

    /// GETs `uri` and returns its body: at most `jwks_max_bytes`, within the deadline,
    /// no redirects, and only to addresses the outbound policy allows.
    pub async fn get(&self, uri: &str) -> Result<Vec<u8>, FetchError> {
        let url = super::input::jwks_uri(uri, self.allow_insecure_loopback)
            .map_err(|e| FetchError::Uri(e.to_string()))?;
        let limits = crate::outbound::Limits {
            timeout: self.timeout,
            max_bytes: self.max_bytes,
            follow_redirects: false,
        };
        use crate::outbound::OutboundError as E;
        self.client
            .get(
                url.as_str(),
                "application/jwk-set+json, application/json",
                limits,
            )
            .await
            .map_err(|e| match e {
                E::Refused(m) => FetchError::Uri(m),
                E::Timeout(d) => FetchError::Timeout(d),
                E::Transport(m) => FetchError::Transport(m),
                E::Status(s) => FetchError::Status(s),
                E::TooLarge(n) => FetchError::TooLarge(n),
            })
    }
}
