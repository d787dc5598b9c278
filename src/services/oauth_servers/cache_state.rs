//! Reading, and refreshing on request, the JWKS caches of registered servers, for the
//! console's OAuth Servers page (docs/console.md). The state is this process's: every
//! replica keeps and fetches its own cache ([`super::jwks`]).

use super::jwks::CacheState;
use super::{KeySource, OAuthServerService};
use crate::services::authz::{self, Permission};
use crate::services::{Principal, ServiceError};
use std::collections::HashMap;
use std::sync::Arc;

impl OAuthServerService {
    fn cache_of(
        &self,
        oauth_id: &str,
    ) -> Result<Option<Arc<super::jwks::JwksCache>>, ServiceError> {
        let table = self.table();
        let server = table
            .by_issuer
            .values()
            .find(|r| r.row.oauth_id == oauth_id)
            .ok_or_else(|| ServiceError::NotFound(format!("no OAuth server {oauth_id:?}")))?;
        Ok(match &server.keys {
            Some(KeySource::Jwks(c)) => Some(c.clone()),
            _ => None,
        })
    }

    /// The JWKS cache state of every server with a `jwks_uri`, by `oauth_id`.
    pub fn jwks_states(
        &self,
        caller: &Principal,
    ) -> Result<HashMap<String, CacheState>, ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersRead,
            "read OAuth servers",
        )?;
        Ok(self
            .table()
            .by_issuer
            .values()
            .filter_map(|r| match &r.keys {
                Some(KeySource::Jwks(c)) => Some((r.row.oauth_id.clone(), c.state())),
                _ => None,
            })
            .collect())
    }

    /// Fetches server `oauth_id`'s JWKS now, within the cache's single flight and
    /// `oauth.jwks_refetch_interval` limit (a request inside the interval fetches
    /// nothing), and answers the state after it. A server with a PEM key is `Invalid`.
    pub async fn refresh_jwks(
        &self,
        caller: &Principal,
        oauth_id: &str,
    ) -> Result<CacheState, ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersWrite,
            "manage OAuth servers",
        )?;
        let cache = self.cache_of(oauth_id)?.ok_or_else(|| {
            ServiceError::Invalid(format!(
                "OAuth server {oauth_id:?} has a PEM key, not a JWKS URI"
            ))
        })?;
        cache.refresh_now(&self.fetcher, self.timings).await;
        tracing::info!(oauth_id = %oauth_id, by = %caller.name, "JWKS fetch requested");
        Ok(cache.state())
    }
}
