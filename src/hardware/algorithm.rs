//! The algorithms keygate can hold in hardware, named by their JOSE identifiers.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A key algorithm. The JOSE name is the canonical spelling in the API, config and store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Algorithm {
    ES256,
    ES384,
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256 on a 2048-bit key.
    RS256,
    /// RSASSA-PSS with SHA-256 (MGF1-SHA-256, 32-byte salt) on a 2048-bit key.
    PS256,
    /// RS256 on a 3072-bit key. Same JWS `alg`, larger modulus.
    #[serde(rename = "RS256-3072")]
    RS256_3072,
    /// PS256 on a 3072-bit key.
    #[serde(rename = "PS256-3072")]
    PS256_3072,
    /// HMAC-SHA256 with a 256-bit generic secret. MAC only, never published.
    HS256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 8] = [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::RS256_3072,
        Algorithm::PS256_3072,
        Algorithm::HS256,
    ];

    /// The canonical name used in the API, the config and the store.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
            Algorithm::RS256_3072 => "RS256-3072",
            Algorithm::PS256_3072 => "PS256-3072",
            Algorithm::HS256 => "HS256",
        }
    }

    /// The JWS `alg` header value.
    pub fn jws_alg(self) -> &'static str {
        match self {
            Algorithm::RS256_3072 => "RS256",
            Algorithm::PS256_3072 => "PS256",
            other => other.name(),
        }
    }

    /// True for MAC (secret-key) algorithms, which have no public key.
    pub fn is_mac(self) -> bool {
        matches!(self, Algorithm::HS256)
    }

    /// RSA modulus size, for RSA algorithms.
    pub fn rsa_bits(self) -> Option<u32> {
        match self {
            Algorithm::RS256 | Algorithm::PS256 => Some(2048),
            Algorithm::RS256_3072 | Algorithm::PS256_3072 => Some(3072),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown algorithm {s:?}; expected one of ES256, ES384, EdDSA, RS256, PS256, RS256-3072, PS256-3072, HS256"
                )
            })
    }
}
