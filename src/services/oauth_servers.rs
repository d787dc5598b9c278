//! External OAuth 2.0 / OIDC servers (IdPs) whose tokens keygate accepts.
//!
//! INTEGRATION SCAFFOLD: this file only fixes the interface the rest of keygate calls;
//! the oauth-servers branch replaces it whole. Until then no server is registered, so no
//! IdP token authenticates.

use crate::config::Config;
use crate::services::{Principal, ServiceError};
use crate::store::Store;

pub struct OAuthServerService {
    _store: Store,
}

impl std::fmt::Debug for OAuthServerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthServerService").finish_non_exhaustive()
    }
}

impl OAuthServerService {
    pub async fn new(store: Store, _config: &Config) -> Result<OAuthServerService, ServiceError> {
        Ok(OAuthServerService { _store: store })
    }

    /// Whether `iss` is the issuer of a registered server (exact match).
    pub fn issuer_registered(&self, _iss: &str) -> bool {
        false
    }

    /// Verifies an IdP token and maps it to a principal `<oauth_id>:<sub>`.
    pub async fn authenticate(&self, _token: &str, _now: i64) -> Result<Principal, ServiceError> {
        Err(ServiceError::Unauthenticated(
            "token issuer is not a registered OAuth server".into(),
        ))
    }

    /// Names of the servers whose `role_mapping` maps to local role `role`.
    pub fn servers_mapping_role(&self, _role: &str) -> Vec<String> {
        Vec::new()
    }

    /// Reloads when another process changed the servers; returns whether it did.
    pub async fn refresh_if_changed(&self) -> Result<bool, ServiceError> {
        Ok(false)
    }
}
