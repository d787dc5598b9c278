//! External OAuth 2.0 / OIDC servers (IdPs) whose tokens keygate accepts.
//!
//! Why it exists: sites already run an IdP (Keycloak, Entra ID, Okta, ...) and want its
//! users and services to call keygate with the tokens they already have, carrying a
//! role the site controls through a mapping, without a keygate account per person.
//!
//! - **Registration** (`/api/v1/oauth-servers`): `{name, issuer, public_key_pem |
//!   jwks_uri, audience?, role_claim, role_mapping}`. Reading needs
//!   `oauth-servers:read`; changing needs `oauth-servers:write` and a role that manages
//!   every local role the mapping grants, before and after the change: nobody can
//!   register an IdP that mints a role above their own. Input rules: [`input`].
//! - **Verification** ([`OAuthServerService::authenticate`]): the token's `iss` picks the
//!   server (exact match); the signature is checked with the PEM key or a JWKS key
//!   ([`keys`], [`jwks`]); then the claims ([`verify`]). The role comes from
//!   `role_claim` (a string or an array, optionally a dotted path) through
//!   `role_mapping`; every mapped value that names an existing local role counts and
//!   the caller gets their union. A verified token that maps to no role is 403.
//! - **State**: the process keeps the servers in memory (issuer → server), reloaded after
//!   each change here and when the change feed reports that another process changed
//!   them (`crate::cluster`); a server's JWKS cache survives reloads while its `jwks_uri` stays.

pub mod cache_state;
pub mod fetch;
pub mod input;
pub mod jwks;
pub mod keys;
pub mod verify;

use crate::cluster::snapshot::Snapshot;
use crate::config::Config;
use crate::services::authz::{self, Permission, Role};
use crate::services::tokens::claims::{Audience, TimeRules};
use crate::services::tokens::jws;
use crate::services::{AuthMethod, Principal, ServiceError};
use crate::store::oauth_servers::OAuthServerRow;
use crate::store::{Store, StoreError};
use fetch::Fetcher;
use jwks::{JwksCache, Timings};
use keys::VerifyKey;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use verify::Refusal;

/// Most OAuth servers an installation may register.
pub const MAX_OAUTH_SERVERS: u32 = 100;
/// Default `role_claim`.
pub const DEFAULT_ROLE_CLAIM: &str = "roles";
/// Largest leeway used for IdP tokens, whatever `tokens.leeway` says.
const MAX_LEEWAY: i64 = 300;

/// A registered server, as the API shows it.
pub type OAuthServer = OAuthServerRow;

/// A registration request (already parsed from JSON).
#[derive(Debug, Clone, Default)]
pub struct NewOAuthServer {
    pub name: String,
    pub issuer: String,
    pub public_key_pem: Option<String>,
    pub jwks_uri: Option<String>,
    pub audience: Option<String>,
    /// `Some(false)` opts out of the audience check explicitly; default true.
    pub audience_check: Option<bool>,
    pub role_claim: Option<String>,
    pub role_mapping: BTreeMap<String, String>,
}

/// A change. A new `public_key_pem` replaces a `jwks_uri` and the other way round;
/// `audience: Some(None)` removes the audience, which needs `audience_check: false`.
#[derive(Debug, Clone, Default)]
pub struct OAuthServerPatch {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub public_key_pem: Option<String>,
    pub jwks_uri: Option<String>,
    pub audience: Option<Option<String>>,
    pub audience_check: Option<bool>,
    pub role_claim: Option<String>,
    pub role_mapping: Option<BTreeMap<String, String>>,
}

/// A verified IdP token: what authentication and introspection need.
#[derive(Debug, Clone)]
pub struct IdpToken {
    pub principal: Principal,
    pub iss: String,
    pub sub: String,
    pub aud: Option<Audience>,
    pub iat: Option<i64>,
    pub exp: i64,
    pub jti: Option<String>,
}

/// Where a server's keys come from.
#[derive(Debug)]
enum KeySource {
    Pem(VerifyKey),
    Jwks(Arc<JwksCache>),
}

#[derive(Debug)]
struct Registered {
    row: OAuthServerRow,
    /// `None` when the stored key no longer parses (logged at load): nothing verifies.
    keys: Option<KeySource>,
}

#[derive(Debug, Default)]
struct Table {
    by_issuer: HashMap<String, Arc<Registered>>,
}

pub struct OAuthServerService {
    store: Store,
    fetcher: Fetcher,
    timings: Timings,
    leeway: i64,
    own_issuer: String,
    allow_insecure_loopback: bool,
    table: Snapshot<Table>,
}

impl std::fmt::Debug for OAuthServerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthServerService").finish_non_exhaustive()
    }
}

/// The binding tokens minted with this server's tokens carry: `idp:<oauth_id>.<digest>`
/// over what decides which tokens verify and what they map to (issuer, keys, audience,
/// role claim and mapping). Deleting the server, re-keying it or changing its mapping
/// changes or removes the binding and ends those tokens at once.
pub fn binding_of(row: &OAuthServerRow) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        row.issuer.as_str(),
        row.public_key_pem.as_deref().unwrap_or(""),
        row.jwks_uri.as_deref().unwrap_or(""),
        row.audience.as_deref().unwrap_or(""),
        row.role_claim.as_str(),
    ] {
        ctx.update(part.as_bytes());
        ctx.update(b"\0");
    }
    for (k, v) in &row.role_mapping {
        ctx.update(k.as_bytes());
        ctx.update(b"=");
        ctx.update(v.as_bytes());
        ctx.update(b"\0");
    }
    let d = ctx.finish();
    let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("idp:{}.{hex}", row.oauth_id)
}

impl OAuthServerService {
    /// Whether an `idp:` binding names a registered server as it is now.
    pub fn binding_live(&self, binding: &str) -> bool {
        self.table()
            .by_issuer
            .values()
            .any(|r| binding_of(&r.row) == binding)
    }

    pub async fn new(store: Store, config: &Config) -> Result<OAuthServerService, ServiceError> {
        let o = &config.oauth;
        let fetcher = Fetcher::new(config).map_err(ServiceError::Invalid)?;
        let settings = crate::services::tokens::TokenSettings::from_config(config);
        let svc = OAuthServerService {
            store,
            fetcher,
            timings: Timings {
                ttl: o.jwks_cache_ttl.0,
                refetch_interval: o.jwks_refetch_interval.0,
            },
            leeway: settings.leeway.clamp(0, MAX_LEEWAY),
            own_issuer: settings.issuer,
            allow_insecure_loopback: o.allow_insecure_loopback_jwks,
            table: Snapshot::default(),
        };
        svc.reload().await?;
        for r in svc.table().by_issuer.values() {
            if !r.row.audience_check {
                tracing::warn!(oauth_id = %r.row.oauth_id, server = %r.row.name, issuer = %r.row.issuer,
                    "OAuth server opted out of the audience check (audience_check = false): any token it issues to any client is accepted");
            }
        }
        Ok(svc)
    }

    fn table(&self) -> Arc<Table> {
        self.table.get()
    }

    fn key_source(&self, row: &OAuthServerRow, old: &Table) -> Option<KeySource> {
        match (&row.public_key_pem, &row.jwks_uri) {
            (Some(pem), None) => match keys::from_pem(pem) {
                Ok(k) => Some(KeySource::Pem(k)),
                Err(e) => {
                    tracing::error!(server = %row.name, error = %e,
                        "stored public_key_pem does not parse; this server's tokens are refused");
                    None
                }
            },
            (None, Some(uri)) => {
                // Keep the cache (and its keys) of a server whose JWKS URI is unchanged.
                let kept = old.by_issuer.values().find_map(|r| match &r.keys {
                    Some(KeySource::Jwks(c))
                        if r.row.oauth_id == row.oauth_id && c.uri() == uri =>
                    {
                        Some(c.clone())
                    }
                    _ => None,
                });
                Some(KeySource::Jwks(
                    kept.unwrap_or_else(|| Arc::new(JwksCache::new(&row.name, uri))),
                ))
            }
            _ => {
                tracing::error!(server = %row.name, "stored server has no single key source; its tokens are refused");
                None
            }
        }
    }

    /// Re-reads the registered servers from the store (at start, after a local change,
    /// and when the change feed reports a change made elsewhere). A server's JWKS cache
    /// survives while its `jwks_uri` stays.
    pub async fn reload(&self) -> Result<(), ServiceError> {
        self.table
            .reload(|old| async move {
                let rows = self.store.list_oauth_servers().await?;
                let by_issuer = rows
                    .into_iter()
                    .map(|row| {
                        let keys = self.key_source(&row, &old);
                        (row.issuer.clone(), Arc::new(Registered { row, keys }))
                    })
                    .collect();
                Ok::<_, ServiceError>(Table { by_issuer })
            })
            .await
    }

    async fn after_change(&self) {
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "OAuth server reload failed; the change feed retries");
        }
    }

    /// Whether `iss` is the issuer of a registered server (exact match).
    pub fn issuer_registered(&self, iss: &str) -> bool {
        self.table().by_issuer.contains_key(iss)
    }

    /// Names of the servers whose `role_mapping` maps to local role `role`.
    pub fn servers_mapping_role(&self, role: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .table()
            .by_issuer
            .values()
            .filter(|r| r.row.role_mapping.values().any(|v| v == role))
            .map(|r| r.row.name.clone())
            .collect();
        names.sort();
        names
    }

    // ---- registration ----

    /// The caller needs `oauth-servers:write` and must manage every role in `roles`.
    fn check_manage(caller: &Principal, roles: &[Role]) -> Result<(), ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersWrite,
            "manage OAuth servers",
        )?;
        if let Some(r) = roles.iter().find(|r| !caller.role.manages(**r)) {
            return Err(ServiceError::Forbidden(format!(
                "role {} may not register an IdP that grants role {r}",
                caller.role
            )));
        }
        Ok(())
    }

    /// The local roles a stored mapping grants (ones deleted since are skipped).
    fn granted(row: &OAuthServerRow) -> Vec<Role> {
        row.role_mapping
            .values()
            .filter_map(|r| Role::lookup(r))
            .collect()
    }

    /// Every rule a complete row must pass: fields, key source, mapping, caller's right.
    fn validate(&self, caller: &Principal, row: &OAuthServerRow) -> Result<(), ServiceError> {
        input::name(&row.name)?;
        input::issuer(&row.issuer, &self.own_issuer)?;
        match (&row.public_key_pem, &row.jwks_uri) {
            (Some(pem), None) => {
                keys::from_pem(pem)
                    .map_err(|e| ServiceError::Invalid(format!("public_key_pem: {e}")))?;
            }
            (None, Some(uri)) => {
                input::jwks_uri(uri, self.allow_insecure_loopback)?;
            }
            (Some(_), Some(_)) => {
                return Err(ServiceError::Invalid(
                    "give either public_key_pem or jwks_uri, not both".into(),
                ))
            }
            (None, None) => {
                return Err(ServiceError::Invalid(
                    "give the IdP's public_key_pem or its jwks_uri".into(),
                ))
            }
        }
        match (&row.audience, row.audience_check) {
            (Some(a), true) => input::audience(a)?,
            (None, true) => {
                return Err(ServiceError::Invalid(
                    "audience is required: the value the IdP puts in aud of tokens meant for keygate (or set audience_check to false to accept any audience, explicitly)".into(),
                ))
            }
            (Some(_), false) => {
                return Err(ServiceError::Invalid(
                    "audience_check false takes no audience; remove one of them".into(),
                ))
            }
            (None, false) => {}
        }
        input::role_claim(&row.role_claim)?;
        let roles = input::role_mapping(&row.role_mapping)?;
        Self::check_manage(caller, &roles)
    }

    async fn load(&self, oauth_id: &str) -> Result<OAuthServerRow, ServiceError> {
        match self.store.get_oauth_server(oauth_id).await {
            Ok(r) => Ok(r),
            Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!(
                "no OAuth server {oauth_id:?}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create(
        &self,
        caller: &Principal,
        req: NewOAuthServer,
        now: i64,
    ) -> Result<OAuthServer, ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersWrite,
            "manage OAuth servers",
        )?;
        let row = OAuthServerRow {
            oauth_id: uuid::Uuid::new_v4().to_string(),
            name: req.name,
            issuer: req.issuer,
            public_key_pem: req.public_key_pem.map(|p| p.trim().to_string() + "\n"),
            jwks_uri: req.jwks_uri,
            audience: req.audience,
            audience_check: req.audience_check.unwrap_or(true),
            role_claim: req
                .role_claim
                .unwrap_or_else(|| DEFAULT_ROLE_CLAIM.to_string()),
            role_mapping: req.role_mapping,
            created_by: caller.name.clone(),
            created_at: now,
            updated_at: now,
        };
        self.validate(caller, &row)?;
        self.store
            .insert_oauth_server(&row, MAX_OAUTH_SERVERS)
            .await?;
        self.after_change().await;
        if !row.audience_check {
            tracing::warn!(oauth_id = %row.oauth_id, server = %row.name, by = %caller.name,
                "OAuth server registered with audience_check = false: any token it issues to any client is accepted");
        }
        tracing::info!(oauth_id = %row.oauth_id, server = %row.name, issuer = %row.issuer,
            mapping = ?row.role_mapping, by = %caller.name, "registered OAuth server");
        Ok(row)
    }

    pub async fn list(&self, caller: &Principal) -> Result<Vec<OAuthServer>, ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersRead,
            "read OAuth servers",
        )?;
        Ok(self.store.list_oauth_servers().await?)
    }

    pub async fn get(
        &self,
        caller: &Principal,
        oauth_id: &str,
    ) -> Result<OAuthServer, ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersRead,
            "read OAuth servers",
        )?;
        self.load(oauth_id).await
    }

    pub async fn update(
        &self,
        caller: &Principal,
        oauth_id: &str,
        patch: OAuthServerPatch,
        now: i64,
    ) -> Result<OAuthServer, ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersWrite,
            "manage OAuth servers",
        )?;
        let current = self.load(oauth_id).await?;
        Self::check_manage(caller, &Self::granted(&current))?;
        let mut row = current.clone();
        match (patch.public_key_pem, patch.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(ServiceError::Invalid(
                    "give either public_key_pem or jwks_uri, not both".into(),
                ))
            }
            (Some(pem), None) => {
                row.public_key_pem = Some(pem.trim().to_string() + "\n");
                row.jwks_uri = None;
            }
            (None, Some(uri)) => {
                row.jwks_uri = Some(uri);
                row.public_key_pem = None;
            }
            (None, None) => {}
        }
        if let Some(n) = patch.name {
            row.name = n;
        }
        if let Some(i) = patch.issuer {
            row.issuer = i;
        }
        if let Some(a) = patch.audience {
            row.audience = a;
        }
        if let Some(c) = patch.audience_check {
            row.audience_check = c;
        }
        if let Some(c) = patch.role_claim {
            row.role_claim = c;
        }
        if let Some(m) = patch.role_mapping {
            row.role_mapping = m;
        }
        row.updated_at = now;
        self.validate(caller, &row)?;
        self.store
            .update_oauth_server(&row)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    ServiceError::NotFound(format!("no OAuth server {oauth_id:?}"))
                }
                e => e.into(),
            })?;
        self.after_change().await;
        tracing::info!(oauth_id = %row.oauth_id, server = %row.name, issuer = %row.issuer,
            mapping = ?row.role_mapping, by = %caller.name, "changed OAuth server");
        Ok(row)
    }

    /// Deletes a server: its tokens stop authenticating at once in this process, and
    /// in others at their next poll.
    pub async fn delete(&self, caller: &Principal, oauth_id: &str) -> Result<(), ServiceError> {
        self.check_delete(caller, oauth_id).await?;
        self.delete_approved(oauth_id, &caller.name).await
    }

    /// May `caller` delete server `oauth_id`? The check of a delete request, before any
    /// approvals ([`crate::services::approvals`], operation `delete-oauth-server`).
    pub async fn check_delete(
        &self,
        caller: &Principal,
        oauth_id: &str,
    ) -> Result<(), ServiceError> {
        authz::require(
            caller.role,
            Permission::OAuthServersWrite,
            "manage OAuth servers",
        )?;
        let current = self.load(oauth_id).await?;
        Self::check_manage(caller, &Self::granted(&current))
    }

    /// Deletes server `oauth_id` whose deletion was checked (and approved) already; `by`
    /// is the requester, for the log.
    pub async fn delete_approved(&self, oauth_id: &str, by: &str) -> Result<(), ServiceError> {
        let current = self.load(oauth_id).await?;
        self.store
            .delete_oauth_server(oauth_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    ServiceError::NotFound(format!("no OAuth server {oauth_id:?}"))
                }
                e => e.into(),
            })?;
        self.after_change().await;
        tracing::info!(oauth_id = %oauth_id, server = %current.name, by = %by,
            "deleted OAuth server");
        Ok(())
    }

    // ---- verification ----

    /// Verifies an IdP token and maps it to a principal `<oauth_id>:<sub>`.
    pub async fn authenticate(&self, token: &str, now: i64) -> Result<Principal, ServiceError> {
        self.verify(token, now).await.map(|t| t.principal)
    }

    /// Verifies an IdP token: 401 (`Unauthenticated`, naming the reason) for a token that
    /// does not verify, 403 (`Forbidden`) for a valid token that maps to no local role.
    pub async fn verify(&self, token: &str, now: i64) -> Result<IdpToken, ServiceError> {
        match self.check(token, now).await {
            Ok(t) => t,
            Err((server, reason)) => {
                tracing::debug!(
                    server = server.as_deref().unwrap_or("-"),
                    reason = reason.label(),
                    "IdP token refused"
                );
                metrics::counter!("keygate_idp_token_refusals_total", "reason" => reason.label())
                    .increment(1);
                Err(ServiceError::Unauthenticated(format!(
                    "IdP token refused: {}",
                    reason.detail()
                )))
            }
        }
    }

    /// `Err((server name, reason))` for a token that does not verify; `Ok(Err(..))` for
    /// one that verifies but may not be used.
    async fn check(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Result<IdpToken, ServiceError>, (Option<String>, Refusal)> {
        let parsed = jws::parse(token).map_err(|e| {
            let r = match e {
                jws::JwsError::AlgNone => Refusal::Algorithm,
                _ => Refusal::Malformed,
            };
            (None, r)
        })?;
        let claims = jws::claims(&parsed.payload).map_err(|_| (None, Refusal::Malformed))?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or((None, Refusal::UnknownIssuer))?;
        let server = self
            .table()
            .by_issuer
            .get(iss)
            .cloned()
            .ok_or((None, Refusal::UnknownIssuer))?;
        let refuse = |r: Refusal| (Some(server.row.name.clone()), r);
        let alg = parsed.header.alg.as_str();
        if keys::token_algorithm(alg).is_none() {
            return Err(refuse(Refusal::Algorithm));
        }
        let candidates = match &server.keys {
            Some(KeySource::Pem(k)) if k.accepts(alg) => vec![k.clone()],
            Some(KeySource::Pem(_)) => return Err(refuse(Refusal::Algorithm)),
            Some(KeySource::Jwks(cache)) => {
                cache
                    .keys_for(
                        parsed.header.kid.as_deref(),
                        alg,
                        &self.fetcher,
                        self.timings,
                    )
                    .await
            }
            None => Vec::new(),
        };
        if candidates.is_empty() {
            return Err(refuse(Refusal::NoKey));
        }
        if !candidates
            .iter()
            .any(|k| k.verify(alg, parsed.signing_input, &parsed.signature))
        {
            return Err(refuse(Refusal::Signature));
        }
        let rules = TimeRules {
            now,
            leeway: self.leeway,
        };
        verify::check_token_type(parsed.header.typ.as_deref(), &claims).map_err(refuse)?;
        let audience = server
            .row
            .audience
            .as_deref()
            .filter(|_| server.row.audience_check);
        let c = verify::check_claims(&claims, audience, rules).map_err(refuse)?;
        let values = verify::role_values(&claims, &server.row.role_claim);
        let Some(role) = verify::mapped_role(&values, &server.row.role_mapping) else {
            tracing::debug!(server = %server.row.name, claim = %server.row.role_claim,
                "IdP token maps to no local role");
            return Ok(Err(ServiceError::Forbidden(format!(
                "the token's {:?} claim maps to no local role of OAuth server {}",
                server.row.role_claim, server.row.name
            ))));
        };
        let oauth_id = server.row.oauth_id.clone();
        let binding = binding_of(&server.row);
        Ok(Ok(IdpToken {
            principal: Principal {
                name: format!("{oauth_id}:{}", c.sub),
                role,
                method: AuthMethod::IdpToken {
                    oauth_id,
                    jti: c.jti.clone(),
                    exp: c.exp,
                    binding,
                },
            },
            iss: iss.to_string(),
            sub: c.sub,
            aud: c.aud,
            iat: c.iat,
            exp: c.exp,
            jti: c.jti,
        }))
    }
}
