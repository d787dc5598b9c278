//! Tokens: issuing keygate access tokens in hardware, verifying them in software,
//! sessions with rotating refresh tokens, revocation and introspection.
//!
//! - Access tokens are JWTs (`typ: at+jwt`) signed by the active version of
//!   `tokens.ring`. The hardware signs; the public keys are cached, so verification is a
//!   software signature check plus an in-memory denylist lookup, never a hardware call.
//! - Refresh tokens are `kgr_<id>_<secret><check>` ([`crate::services::credential`]),
//!   the secret 32 bytes from the hardware RNG. The store keeps only their HMAC from the
//!   `api-key-mac` ring, beside the public id. A malformed token, a bad checksum or an
//!   unknown id is refused after one indexed store read and no hardware call. Each use
//!   rotates the token; presenting a used one revokes its session (RFC 9700 §4.14).
//! - Every function takes `now`, so tests drive the clock.

pub mod claims;
pub mod denylist;
pub mod grants;
pub mod jws;
mod managed;
pub mod signing;

use crate::config::Config;
use crate::keys::{KeyRegistry, KeyVersion, API_KEY_MAC_RING};
use crate::services::api_keys::ApiKeyService;
use crate::services::authz::{Permission, Role};
use crate::services::credential;
use crate::services::{AuthMethod, Principal, ServiceError};
use crate::store::sessions::RefreshDigest;
use crate::store::Store;
use claims::{AccessClaims, Audience, ClaimsError, TimeRules};
use denylist::Denylist;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Prefix of refresh tokens, so scanners and the revoke/introspect endpoints know them.
pub const REFRESH_PREFIX: &str = "kgr_";

/// Why a presented JWT is not a valid keygate access token. Callers see one generic
/// 401; the reason goes to the debug log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(#[from] jws::JwsError),
    #[error("the token names no key this server publishes")]
    UnknownKey,
    #[error("the token's alg does not match its key")]
    AlgorithmMismatch,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token is not an access token (typ)")]
    NotAccessToken,
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    #[error("the token names an unknown role")]
    UnknownRole,
    #[error("the token has been revoked")]
    Revoked,
}

impl TokenError {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::UnknownKey => "unknown_key",
            TokenError::AlgorithmMismatch => "alg_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::NotAccessToken => "not_access_token",
            TokenError::Claims(ClaimsError::Expired) => "expired",
            TokenError::Claims(ClaimsError::NotYetValid | ClaimsError::IssuedInFuture) => {
                "not_yet_valid"
            }
            TokenError::Claims(_) => "claims",
            TokenError::UnknownRole => "unknown_role",
            TokenError::Revoked => "revoked",
        }
    }
}

/// Counts an issued token by how it was issued (`password`, `refresh_token`,
/// `custom_token`, `signed`).
pub(crate) fn count_issued(kind: &'static str) {
    metrics::counter!("keygate_tokens_issued_total", "kind" => kind).increment(1);
}

/// What a successful grant returns (`docs/tokens.md`).
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<SecretString>,
    pub refresh_expires_in: Option<i64>,
}

/// Token settings resolved from configuration.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub ring: String,
    pub access_ttl: i64,
    pub refresh_ttl: i64,
    pub max_custom_ttl: i64,
    pub leeway: i64,
    pub max_sessions: u32,
    pub signing_default_ttl: i64,
    pub signing_max_ttl: i64,
    pub signing_allow_caller_times: bool,
}

impl TokenSettings {
    /// Resolves settings; `tokens.issuer` must be set by now (`serve` fills in the
    /// listener's URL when the file leaves it out).
    pub fn from_config(c: &Config) -> TokenSettings {
        let issuer = c
            .tokens
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", c.server.listen));
        let issuer = issuer.trim_end_matches('/').to_string();
        TokenSettings {
            audience: c.tokens.audience.clone().unwrap_or_else(|| issuer.clone()),
            issuer,
            ring: c.tokens.ring.clone(),
            access_ttl: c.tokens.access_ttl.secs(),
            refresh_ttl: c.tokens.refresh_ttl.secs(),
            max_custom_ttl: c.tokens.max_custom_ttl.secs(),
            leeway: c.tokens.leeway.secs(),
            max_sessions: c.sessions.max_per_user,
            signing_default_ttl: c.signing.default_ttl.secs(),
            signing_max_ttl: c.signing.max_ttl.secs(),
            signing_allow_caller_times: c.signing.allow_caller_times,
        }
    }

    /// The longest any token signed by a JWT ring can live, plus leeway: how long a
    /// replaced key must stay published.
    pub fn longest_token(&self) -> i64 {
        self.access_ttl
            .max(self.max_custom_ttl)
            .max(self.signing_max_ttl)
            .saturating_add(self.leeway)
    }

    /// How long after its revocation a session's access tokens may still be unexpired.
    fn session_window(&self) -> i64 {
        self.access_ttl.saturating_add(self.leeway)
    }
}

/// The token service.
pub struct TokenService {
    store: Store,
    keys: Arc<KeyRegistry>,
    api_keys: Arc<ApiKeyService>,
    key_files: Arc<crate::services::key_files::KeyFileService>,
    settings: TokenSettings,
    denylist: Denylist,
    /// Until when an old-format refresh token (no public id) may still be live; 0 when
    /// none can be, so such strings cost no MAC.
    legacy_refresh_until: std::sync::atomic::AtomicI64,
    /// Wrong secrets per refresh-token public id.
    refresh_failures: crate::limits::FailureLimiter<String>,
    /// Checks `idp:` bindings (see [`Self::connect_idps`]).
    idp_bindings: std::sync::OnceLock<Arc<crate::services::oauth_servers::OAuthServerService>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

/// What an access token says, before the server adds `iss`, times and `jti`.
pub(crate) struct AccessSpec<'a> {
    pub sub: &'a str,
    pub role: Role,
    /// Seconds of validity.
    pub ttl: i64,
    /// Audiences added to keygate's own.
    pub extra_aud: Vec<String>,
    pub sid: Option<&'a str>,
    /// The API-key binding the token must carry (custom tokens minted with a key).
    pub key_binding: Option<String>,
    /// A custom token: its subject proves no identity (claim `kgm`).
    pub minted: bool,
    /// Caller-chosen claims (custom tokens); `scope` among them becomes the scope.
    pub extra: Map<String, Value>,
}

/// A refresh token and its stored form.
struct FreshRefresh {
    secret: SecretString,
    digest: RefreshDigest,
}

/// A presented token, classified by its shape.
pub enum Presented<'a> {
    ApiKey(&'a str),
    Refresh(&'a str),
    Jwt(&'a str),
}

pub fn classify(token: &str) -> Presented<'_> {
    if token.starts_with(REFRESH_PREFIX) {
        Presented::Refresh(token)
    } else if token.starts_with(crate::services::api_keys::SECRET_PREFIX) {
        Presented::ApiKey(token)
    } else {
        Presented::Jwt(token)
    }
}

/// RFC 7662 answer. `active: false` serialises as that and nothing more.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `access_token`, `refresh_token`, `api_key`, or `idp_token` (an external IdP's token;
    /// `sub` is then the principal `<oauth_id>:<sub>` and `role` the mapped local role).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

/// One session as its owner sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: i64,
    pub current: bool,
}

/// What a minted token is bound to (claim `kgk`): the credential that minted it, which
/// must still stand for the token to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// `<key id>.<digest of MAC and role>`: an API key.
    ApiKey(&'a str),
    /// `kf:<accessID>:<generation>`: a key file.
    KeyFile(&'a str),
    /// `idp:<oauth_id>.<digest>`: a registered IdP.
    Idp(&'a str),
}

impl<'a> Binding<'a> {
    /// The binding a `kgk` value names (the whole value is kept: each service checks it).
    pub fn parse(kgk: &'a str) -> Binding<'a> {
        if kgk.starts_with("kf:") {
            Binding::KeyFile(kgk)
        } else if kgk.starts_with("idp:") {
            Binding::Idp(kgk)
        } else {
            Binding::ApiKey(kgk)
        }
    }
}

impl TokenService {
    pub async fn new(
        store: Store,
        keys: Arc<KeyRegistry>,
        api_keys: Arc<ApiKeyService>,
        key_files: Arc<crate::services::key_files::KeyFileService>,
        settings: TokenSettings,
        now: i64,
    ) -> Result<Self, ServiceError> {
        let denylist = Denylist::load(&store, now, settings.session_window()).await?;
        let legacy = store.legacy_refresh_horizon(now).await?.unwrap_or(0);
        Ok(TokenService {
            store,
            keys,
            api_keys,
            key_files,
            settings,
            denylist,
            legacy_refresh_until: std::sync::atomic::AtomicI64::new(legacy),
            refresh_failures: crate::limits::FailureLimiter::new(
                crate::limits::LimitsConfig::default().credential_failures,
            ),
            idp_bindings: std::sync::OnceLock::new(),
        })
    }

    /// Sets the failure limiter of each refresh-token id (`limits.credential_failures`).
    pub fn with_failure_quota(mut self, rate: crate::limits::Rate) -> Self {
        self.refresh_failures = crate::limits::FailureLimiter::new(rate);
        self
    }

    /// Whether the credential a token was minted with still stands: an API key with the
    /// same secret and role, a key file at the same generation, or an IdP registered as
    /// it was.
    fn binding_live(&self, binding: &str) -> bool {
        match Binding::parse(binding) {
            Binding::KeyFile(b) => self.key_files.binding_live(b),
            Binding::Idp(b) => self
                .idp_bindings
                .get()
                .is_some_and(|oauth| oauth.binding_live(b)),
            Binding::ApiKey(b) => self.api_keys.binding_live(b),
        }
    }

    /// Connects the IdP registry that checks `idp:` bindings. Until it is connected (and
    /// in tools that never connect it) tokens minted from IdP tokens do not verify.
    pub fn connect_idps(&self, oauth: Arc<crate::services::oauth_servers::OAuthServerService>) {
        let _ = self.idp_bindings.set(oauth);
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs `claims` with the active version of `ring` under a header carrying `typ`.
    /// Returns the compact JWS and the kid.
    pub(crate) async fn sign_jwt(
        &self,
        ring: &str,
        typ: &str,
        claims: &Value,
    ) -> Result<(String, String), ServiceError> {
        let v: Arc<KeyVersion> = self.keys.active(ring)?;
        let header = json!({"alg": v.algorithm.jws_alg(), "typ": typ, "kid": v.kid});
        let input = jws::signing_input(&header, claims)
            .map_err(|e| ServiceError::Internal(format!("encoding claims: {e}")))?;
        let sig = self.keys.sign(&v, input.as_bytes().to_vec()).await?;
        Ok((jws::finish(input, &sig.0), v.kid.clone()))
    }

    /// Issues an access token as `spec` describes.
    pub(crate) async fn issue_access(
        &self,
        spec: AccessSpec<'_>,
        now: i64,
    ) -> Result<String, ServiceError> {
        let AccessSpec {
            sub,
            role,
            ttl,
            extra_aud,
            sid,
            key_binding,
            minted,
            mut extra,
        } = spec;
        let mut aud = vec![self.settings.audience.clone()];
        for a in extra_aud {
            if !aud.contains(&a) {
                aud.push(a);
            }
        }
        let scope = match extra.remove("scope") {
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(ServiceError::Invalid("scope must be a string".into())),
            None => None,
        };
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: sub.to_string(),
            aud: Audience::from_vec(aud),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().to_string(),
            role: role.name().to_string(),
            scope,
            sid: sid.map(str::to_string),
            kgk: key_binding,
            kgm: minted,
            extra,
        };
        let value = serde_json::to_value(&claims)
            .map_err(|e| ServiceError::Internal(format!("encoding claims: {e}")))?;
        let (token, _) = self.sign_jwt(&self.settings.ring, "at+jwt", &value).await?;
        Ok(token)
    }

    /// Verifies a keygate access token entirely in software.
    pub fn verify_access(&self, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        let parsed = jws::parse(token)?;
        let kid = parsed.header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let key = self.keys.verifying_key(kid).ok_or(TokenError::UnknownKey)?;
        // Only the access-token ring issues access tokens: a kid of any other ring (a
        // signing-service ring) is not an access-token key, whatever the token says.
        if key.ring != self.settings.ring {
            return Err(TokenError::UnknownKey);
        }
        // The algorithm comes from the key, never from the token: `alg` must name it.
        if parsed.header.alg != key.algorithm.jws_alg() {
            return Err(TokenError::AlgorithmMismatch);
        }
        let public = key.public_key.as_ref().ok_or(TokenError::UnknownKey)?;
        if !crate::keys::verify::verify_signature(
            public,
            key.algorithm,
            parsed.signing_input,
            &parsed.signature,
        ) {
            return Err(TokenError::BadSignature);
        }
        if !parsed
            .header
            .typ
            .as_deref()
            .is_some_and(claims::is_access_typ)
        {
            return Err(TokenError::NotAccessToken);
        }
        let map = jws::claims(&parsed.payload)?;
        let rules = TimeRules {
            now,
            leeway: self.settings.leeway,
        };
        let c =
            claims::validate_access(map, &self.settings.issuer, &self.settings.audience, rules)?;
        if self.denylist.denied(&c.jti, c.sid.as_deref()) {
            return Err(TokenError::Revoked);
        }
        if c.kgk.as_deref().is_some_and(|b| !self.binding_live(b)) {
            return Err(TokenError::Revoked);
        }
        Ok(c)
    }

    /// Authenticates an API call carrying a keygate access token.
    pub fn authenticate(&self, token: &str, now: i64) -> Result<Principal, ServiceError> {
        let refuse = |e: TokenError| {
            tracing::debug!(reason = %e, "access token refused");
            metrics::counter!("keygate_access_token_refusals_total", "reason" => e.label())
                .increment(1);
            ServiceError::Unauthenticated("invalid, expired or revoked access token".into())
        };
        let c = self.verify_access(token, now).map_err(refuse)?;
        let role: Role = c
            .role
            .parse()
            .map_err(|_| refuse(TokenError::UnknownRole))?;
        // A custom role deleted and made again under the same name is a new role: tokens
        // issued before it existed do not get its permissions.
        if role.custom_since().is_some_and(|since| c.iat < since) {
            return Err(refuse(TokenError::UnknownRole));
        }
        Ok(Principal {
            name: c.sub,
            role,
            method: AuthMethod::AccessToken {
                jti: c.jti,
                sid: c.sid,
                exp: c.exp,
                key_binding: c.kgk,
                minted: c.kgm,
            },
        })
    }

    /// Draws a refresh token from the hardware RNG and computes its MAC in hardware.
    async fn fresh_refresh(&self) -> Result<FreshRefresh, ServiceError> {
        let random = self
            .keys
            .random(
                API_KEY_MAC_RING,
                credential::ID_BYTES + credential::SECRET_BYTES,
            )
            .await?;
        let (id_bytes, secret_bytes) = random.split_at(credential::ID_BYTES);
        let public_id = credential::encode_id(id_bytes);
        let mut encoded = String::with_capacity(credential::current_len(REFRESH_PREFIX));
        credential::encode_into(&mut encoded, REFRESH_PREFIX, &public_id, secret_bytes);
        let secret = SecretString::from(encoded);
        let (mac, v) = self
            .keys
            .mac(
                API_KEY_MAC_RING,
                Zeroizing::new(secret.expose_secret().as_bytes().to_vec()),
            )
            .await?;
        Ok(FreshRefresh {
            secret,
            digest: RefreshDigest {
                mac: mac.0,
                mac_ring: v.ring.clone(),
                mac_version: v.version,
                public_id: Some(public_id),
            },
        })
    }

    /// The stored MAC a presented refresh token matches, or `None` when it matches none.
    ///
    /// Malformed, bad checksum and unknown id cost one indexed store read (the same for
    /// known and unknown ids) and no hardware call; a known id that is not locked by
    /// its failure limiter costs one MAC in the unauthenticated lane. An old-format
    /// token costs a MAC only while old-format tokens can still be live.
    async fn presented_refresh_mac(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<Vec<u8>>, ServiceError> {
        let refuse = |reason: &'static str| {
            metrics::counter!("keygate_refresh_token_refusals_total", "reason" => reason)
                .increment(1);
            Ok(None)
        };
        let parsed = match credential::parse(REFRESH_PREFIX, token) {
            Ok(p) => p,
            Err(e) => return refuse(e.label()),
        };
        let mac_of = |t: &str| {
            self.keys
                .mac_unauthenticated(API_KEY_MAC_RING, Zeroizing::new(t.as_bytes().to_vec()))
        };
        match parsed {
            credential::Parsed::Legacy => {
                if now
                    >= self
                        .legacy_refresh_until
                        .load(std::sync::atomic::Ordering::Relaxed)
                {
                    return refuse("legacy_format");
                }
                Ok(Some(mac_of(token).await?.0 .0))
            }
            credential::Parsed::Current { id } => {
                let Some(stored) = self.store.refresh_mac_by_public_id(id).await? else {
                    return refuse("unknown_id");
                };
                let id = id.to_string();
                if self.refresh_failures.locked(&id).is_some() {
                    return refuse("id_locked");
                }
                let mac = mac_of(token).await?.0 .0;
                if !crate::keys::verify::mac_matches(&mac, &stored) {
                    self.refresh_failures.failed(&id);
                    return refuse("wrong_secret");
                }
                Ok(Some(mac))
            }
        }
    }

    /// An access token was revoked by another replica (the change feed's `token` topic).
    /// Its expiry is not in the feed; no access token outlives `now` plus the access-token
    /// lifetime and leeway, so the entry lasts that long and the sweep drops it after.
    pub fn token_revoked_elsewhere(&self, jti: &str, now: i64) {
        self.denylist.deny_jti(
            jti.to_string(),
            now.saturating_add(self.settings.session_window()),
        );
    }

    /// Adds every revocation in force in the store to the in-memory denylist (a replica
    /// that fell behind the change feed's retention, or found the store replaced).
    pub async fn reload_denylist(&self, now: i64) -> Result<(), ServiceError> {
        let fresh = Denylist::load(&self.store, now, self.settings.session_window()).await?;
        self.denylist.merge(fresh);
        Ok(())
    }

    /// Records that sessions ended, so their access tokens stop working at once.
    pub fn sessions_ended(&self, ids: &[String], now: i64) {
        for id in ids {
            self.denylist.deny_session(
                id.clone(),
                now.saturating_add(self.settings.session_window()),
            );
        }
    }

    /// RFC 7009 revocation. Unknown, invalid and expired tokens are not errors: `Ok` means
    /// revoked, or nothing to revoke.
    pub async fn revoke(&self, token: &str, now: i64) -> Result<(), ServiceError> {
        match classify(token) {
            Presented::ApiKey(t) => {
                self.api_keys.revoke_presented(t, now).await?;
                Ok(())
            }
            Presented::Refresh(t) => {
                let Some(mac) = self.presented_refresh_mac(t, now).await? else {
                    return Ok(());
                };
                if let Some(sid) = self.store.revoke_session_by_refresh(&mac, now).await? {
                    self.sessions_ended(std::slice::from_ref(&sid), now);
                    tracing::info!(session = %sid, "session revoked by its refresh token");
                }
                Ok(())
            }
            Presented::Jwt(t) => {
                let Ok(c) = self.verify_access(t, now) else {
                    return Ok(());
                };
                // Verification accepts a token until exp + leeway, so the entry must last
                // that long, in the store (which a restart reloads) and in memory.
                let until = c.exp.saturating_add(self.settings.leeway);
                self.store.revoke_jti(&c.jti, until).await?;
                self.denylist.deny_jti(c.jti.clone(), until);
                tracing::info!(jti = %c.jti, sub = %c.sub, "access token revoked");
                Ok(())
            }
        }
    }

    /// RFC 7662 introspection of an access token, refresh token or API key.
    pub async fn introspect(
        &self,
        caller: &Principal,
        token: &str,
        now: i64,
    ) -> Result<Introspection, ServiceError> {
        crate::services::authz::require(
            caller.role,
            Permission::TokensIntrospect,
            "introspect tokens",
        )?;
        let inactive = Introspection::default();
        match classify(token) {
            Presented::Jwt(t) => Ok(match self.verify_access(t, now) {
                Ok(c) => Introspection {
                    active: true,
                    sub: Some(c.sub),
                    role: Some(c.role),
                    scope: c.scope,
                    exp: Some(c.exp),
                    iat: Some(c.iat),
                    iss: Some(c.iss),
                    aud: Some(c.aud),
                    jti: Some(c.jti),
                    token_type: Some("access_token".into()),
                },
                Err(_) => inactive,
            }),
            Presented::Refresh(t) => {
                let Some(mac) = self.presented_refresh_mac(t, now).await? else {
                    return Ok(inactive);
                };
                Ok(match self.store.refresh_info(&mac, now).await? {
                    Some(info) if info.active => Introspection {
                        active: true,
                        sub: Some(info.username),
                        exp: Some(info.expires_at),
                        iat: Some(info.issued_at),
                        iss: Some(self.settings.issuer.clone()),
                        token_type: Some("refresh_token".into()),
                        ..Introspection::default()
                    },
                    _ => inactive,
                })
            }
            Presented::ApiKey(t) => Ok(match self.api_keys.identify(t, now).await {
                Ok(key) => Introspection {
                    active: true,
                    sub: Some(key.owner.clone()),
                    role: Some(key.role.name().to_string()),
                    exp: Some(key.expires_at),
                    iat: Some(key.created_at),
                    iss: Some(self.settings.issuer.clone()),
                    token_type: Some("api_key".into()),
                    ..Introspection::default()
                },
                Err(ServiceError::Unauthenticated(_)) => inactive,
                Err(e) => return Err(e),
            }),
        }
    }

    /// The caller's own live sessions.
    pub async fn list_sessions(
        &self,
        caller: &Principal,
        now: i64,
    ) -> Result<Vec<SessionInfo>, ServiceError> {
        let current = current_session(caller);
        Ok(self
            .store
            .list_sessions(&caller.name, now)
            .await?
            .into_iter()
            .map(|s| SessionInfo {
                current: current == Some(s.id.as_str()),
                id: s.id,
                username: s.username,
                created_at: s.created_at,
                expires_at: s.expires_at,
                last_used_at: s.last_used_at,
            })
            .collect())
    }

    /// Ends session `id`: the caller's own, or any session of a user the caller may
    /// manage. Others' sessions answer 404, so their ids cannot be probed.
    pub async fn end_session(
        &self,
        caller: &Principal,
        id: &str,
        now: i64,
    ) -> Result<(), ServiceError> {
        let not_found = || ServiceError::NotFound(format!("no session {id:?}"));
        let s = match self.store.get_session(id).await {
            Ok(s) => s,
            Err(crate::store::StoreError::NotFound) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        if s.username != caller.name {
            let owner_role = match self.store.get_user(&s.username).await {
                Ok(u) => u.role.parse::<Role>().ok(),
                Err(crate::store::StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            // A session of a deleted user is already revoked; any manager may tidy it.
            let may = caller.role.has(Permission::UsersWrite)
                && owner_role.is_none_or(|r| caller.role.manages(r));
            if !may {
                return Err(not_found());
            }
        }
        if s.revoked_at.is_some() || s.expires_at <= now {
            return Err(not_found());
        }
        if self.store.revoke_session(id, "ended", now).await? {
            self.sessions_ended(&[id.to_string()], now);
            tracing::info!(session = %id, user = %s.username, by = %caller.name, "session ended");
        }
        Ok(())
    }

    /// Deletes expired sessions and denylist entries in bounded batches, and drops
    /// expired in-memory entries. Returns how many rows it deleted.
    pub async fn purge(&self, now: i64, batch: u32) -> Result<u64, ServiceError> {
        let mut total = 0;
        // Sessions stay until their access tokens are surely expired, so the denylist can
        // be rebuilt from them after a restart.
        let session_cutoff = now.saturating_sub(self.settings.session_window());
        loop {
            let n = self.store.purge_sessions(session_cutoff, batch).await?;
            total += n;
            if n < u64::from(batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
        loop {
            let n = self.store.purge_revoked_jtis(now, batch).await?;
            total += n;
            if n < u64::from(batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
        self.denylist.sweep(now);
        Ok(total)
    }
}

fn current_session(caller: &Principal) -> Option<&str> {
    match &caller.method {
        AuthMethod::AccessToken { sid, .. } => sid.as_deref(),
        _ => None,
    }
}
