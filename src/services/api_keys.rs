//! API keys: create, authenticate, list, update, regenerate, delete.
//!
//! A secret is `kg_` followed by 32 bytes from the hardware RNG in base64url (43
//! characters). The store keeps only HMAC-SHA256(secret) computed by the `api-key-mac`
//! ring in hardware, so a stolen database yields nothing usable offline.
//!
//! Authentication is the secret's MAC (computed in hardware, or remembered for
//! `api_keys.verify_cache_ttl` after it last came from the hardware) plus a lookup in an
//! in-memory index of the stored MACs, confirmed with a constant-time comparison. The index is rebuilt after every
//! change made through this process, before the change is acknowledged, so delete and
//! regenerate take effect at once. Changes made by another process (the CLI, a replica)
//! bump `meta.api_keys_version`, which [`ApiKeyService::refresh_if_changed`] polls.
//!
//! Crash safety: the secret is returned only after the record has been committed, so a
//! client never holds a secret the store does not know.

use crate::keys::verify::mac_matches;
use crate::keys::{KeyRegistry, API_KEY_MAC_RING};
use crate::services::authz::{Permission, Role};
use crate::services::validate_text;
use crate::services::verify_cache::VerifyCache;
use crate::services::{AuthMethod, Principal, ServiceError};
use crate::store::api_keys::{ApiKeyRow, SecretDigest};
use crate::store::{Store, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

/// Prefix of every API-key secret; lets secret scanners find leaked keys.
pub const SECRET_PREFIX: &str = "kg_";
const SECRET_BYTES: usize = 32;
/// `kg_` + base64url of 32 bytes.
const SECRET_LEN: usize = 3 + 43;
/// Default lifetime: one year.
pub const DEFAULT_TTL_SECS: i64 = 365 * 24 * 3600;
/// `last_used_at` is written at most this often per key, so authentication stays a read.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// A new API key request (already parsed from JSON).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub description: Option<String>,
    pub role: Role,
    pub owner: Option<String>,
    pub expires_at: Option<i64>,
}

/// A partial update.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub role: Option<Role>,
}

/// Stored metadata of a key, never the secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub role: Role,
    pub hint: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    /// Who created the key (`None`: unknown, older than the record of it). A key created
    /// by its owner proves the owner; see [`crate::services::principal::Proof`].
    pub created_by: Option<String>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = ServiceError;
    fn try_from(r: ApiKeyRow) -> Result<Self, ServiceError> {
        let role = r
            .role
            .parse()
            .map_err(|e: String| ServiceError::Internal(format!("api key {}: {e}", r.id)))?;
        Ok(ApiKey {
            id: r.id,
            name: r.name,
            description: r.description,
            owner: r.owner,
            role,
            hint: r.hint,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            created_by: r.created_by,
        })
    }
}

/// Stored MACs and their keys, as of one `api_keys_version`.
#[derive(Default)]
struct Index {
    version: String,
    by_mac: HashMap<Vec<u8>, Arc<ApiKey>>,
    /// key id → its binding (see [`binding_of`]), what tokens minted with the key carry,
    /// and its expiry.
    bindings: HashMap<String, (String, i64)>,
}

impl Index {
    fn new(version: String, by_mac: HashMap<Vec<u8>, Arc<ApiKey>>) -> Index {
        let bindings = by_mac
            .iter()
            .map(|(mac, k)| (k.id.clone(), (binding_of(&k.id, mac, k.role), k.expires_at)))
            .collect();
        Index {
            version,
            by_mac,
            bindings,
        }
    }
}

/// A key's binding: its id and a digest of its current stored MAC. Tokens minted with the
/// key carry it, and verify only while it is live: deleting the key or regenerating its
/// secret changes or removes the binding, and with it every such token. The MAC is not
/// secret, and only 8 bytes of a SHA-256 of it are shown. The key's role is part of the
/// digest, so a role change (a demotion above all) ends every token minted with the key
/// at once, as a key-file re-key does.
fn binding_of(id: &str, mac: &[u8], role: Role) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(mac);
    ctx.update(b"\0role\0");
    ctx.update(role.name().as_bytes());
    let d = ctx.finish();
    let mut out = String::with_capacity(id.len() + 17);
    out.push_str(id);
    out.push('.');
    for b in &d.as_ref()[..8] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// API-key operations.
pub struct ApiKeyService {
    store: Store,
    keys: Arc<KeyRegistry>,
    max_per_owner: i64,
    index: RwLock<Arc<Index>>,
    /// Held across every rebuild and local edit, so a poll that read the store before a
    /// change can never overwrite the index after that change was applied.
    reloading: tokio::sync::Mutex<()>,
    verified: VerifyCache,
    /// Last `last_used_at` written per key id, to coalesce writes.
    touched: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("max_per_owner", &self.max_per_owner)
            .finish()
    }
}

impl ApiKeyService {
    /// Creates the service and loads the index from the store.
    pub async fn new(
        store: Store,
        keys: Arc<KeyRegistry>,
        max_per_owner: u32,
        cache_ttl_secs: i64,
        cache_max: usize,
    ) -> Result<Self, ServiceError> {
        let verified = VerifyCache::new(cache_ttl_secs, cache_max)
            .map_err(|_| ServiceError::Internal("cannot key the verification cache".into()))?;
        let svc = ApiKeyService {
            store,
            keys,
            max_per_owner: i64::from(max_per_owner),
            index: RwLock::new(Arc::new(Index::default())),
            reloading: tokio::sync::Mutex::new(()),
            verified,
            touched: Mutex::new(HashMap::new()),
        };
        svc.reload().await?;
        Ok(svc)
    }

    /// Rebuilds the index from the store. The version is read before the rows, so a change
    /// racing the reload leaves an older version behind and triggers another reload.
    async fn reload(&self) -> Result<(), ServiceError> {
        let _serial = self.reloading.lock().await;
        self.reload_locked().await
    }

    async fn reload_locked(&self) -> Result<(), ServiceError> {
        let version = self.store.api_keys_version().await?;
        let rows = self.store.list_api_keys_with_macs().await?;
        let mut by_mac = HashMap::with_capacity(rows.len());
        for (row, mac) in rows {
            let id = row.id.clone();
            match ApiKey::try_from(row) {
                Ok(key) => {
                    by_mac.insert(mac, Arc::new(key));
                }
                // One unreadable record must not lock everybody out; it cannot authenticate.
                Err(e) => {
                    tracing::error!(api_key = %id, error = %e, "skipping an unreadable API key record")
                }
            }
        }
        if let Ok(mut idx) = self.index.write() {
            *idx = Arc::new(Index::new(version, by_mac));
        }
        Ok(())
    }

    /// Applies a change made through this process to the index at once, then reloads.
    /// The local edit means a committed delete or regenerate takes effect even if the
    /// reload fails; the emptied version makes the refresher reload later in that case.
    async fn after_change(&self, edit: impl FnOnce(&mut HashMap<Vec<u8>, Arc<ApiKey>>)) {
        let _serial = self.reloading.lock().await;
        if let Ok(mut idx) = self.index.write() {
            let mut by_mac = idx.by_mac.clone();
            edit(&mut by_mac);
            *idx = Arc::new(Index::new(String::new(), by_mac));
        }
        if let Err(e) = self.reload_locked().await {
            tracing::warn!(error = %e, "API key index reload failed; retrying on the next poll");
        }
    }

    fn index(&self) -> Arc<Index> {
        self.index.read().map(|i| i.clone()).unwrap_or_default()
    }

    /// Reloads the index when another process changed API keys; returns whether it did.
    pub async fn refresh_if_changed(&self) -> Result<bool, ServiceError> {
        let version = self.store.api_keys_version().await?;
        if version == self.index().version {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Polls for changes by other processes every `every`, until the process ends.
    pub fn spawn_refresher(self: &Arc<Self>, every: std::time::Duration) {
        let svc = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(svc) = svc.upgrade() else { break };
                match svc.refresh_if_changed().await {
                    Ok(true) => tracing::info!("API keys changed elsewhere; index reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot check for API key changes"),
                }
            }
        });
    }

    /// May `caller` change API keys at all? Checked before looking a key up, so callers
    /// without the permission cannot probe which ids exist.
    fn check_write(caller: &Principal) -> Result<(), ServiceError> {
        crate::services::authz::require(caller.role, Permission::ApiKeysWrite, "manage API keys")
    }

    /// May `caller` manage a key carrying `role`? Needs `api-keys:write` and a role that
    /// covers it; super-admin keys additionally need `super-admins:manage`.
    fn check_manage(caller: &Principal, role: Role) -> Result<(), ServiceError> {
        Self::check_write(caller)?;
        if !caller.role.manages(role) {
            return Err(ServiceError::Forbidden(format!(
                "role {} may not manage keys with role {role}",
                caller.role
            )));
        }
        Ok(())
    }

    fn check_read(caller: &Principal) -> Result<(), ServiceError> {
        crate::services::authz::require(caller.role, Permission::ApiKeysRead, "read API keys")
    }

    /// Draws a fresh secret from the hardware RNG and computes its MAC in hardware.
    async fn new_secret(&self) -> Result<(SecretString, SecretDigest), ServiceError> {
        let random = self.keys.random(API_KEY_MAC_RING, SECRET_BYTES).await?;
        // Encoded straight into the string the SecretString takes over, so no other copy
        // of the secret is left behind (capacity is exact, so it never reallocates).
        let mut encoded = String::with_capacity(SECRET_LEN);
        encoded.push_str(SECRET_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&*random, &mut encoded);
        let secret = SecretString::from(encoded);
        let (mac, version) = self
            .keys
            .mac(
                API_KEY_MAC_RING,
                Zeroizing::new(secret.expose_secret().as_bytes().to_vec()),
            )
            .await?;
        let exposed = secret.expose_secret();
        let hint = exposed[exposed.len() - 4..].to_string();
        Ok((
            secret,
            SecretDigest {
                mac: mac.0,
                mac_ring: version.ring.clone(),
                mac_version: version.version,
                hint,
            },
        ))
    }

    /// Creates a key; returns its record and the secret, which is shown this once.
    pub async fn create(
        &self,
        caller: &Principal,
        req: NewApiKey,
        now: i64,
    ) -> Result<(ApiKey, SecretString), ServiceError> {
        self.create_as(caller, &caller.credential_creator(), req, now)
            .await
    }

    /// [`Self::create`], recording `creator` as who made the key: the person behind the
    /// caller's credential ([`Principal::credential_creator`]). A key counts as its
    /// owner's own only when `creator` is the owner.
    pub async fn create_as(
        &self,
        caller: &Principal,
        creator: &str,
        req: NewApiKey,
        now: i64,
    ) -> Result<(ApiKey, SecretString), ServiceError> {
        validate_text("name", &req.name, 128, true)?;
        let description = req.description.unwrap_or_default();
        validate_text("description", &description, 1024, false)?;
        Self::check_manage(caller, req.role)?;
        let owner = req.owner.unwrap_or_else(|| caller.name.clone());
        validate_text("owner", &owner, 256, true)?;
        // A key acts as its owner (API.md), so minting one for somebody else is acting on
        // their behalf. Without user management that is refused before the owner is
        // looked up, so such callers cannot probe which names exist.
        let for_other = owner != caller.name;
        if for_other && !caller.role.has(Permission::UsersWrite) {
            return Err(ServiceError::Forbidden(format!(
                "role {} may not create keys owned by {owner:?}",
                caller.role
            )));
        }
        // One lookup answers both remaining questions: does the owner exist, and what is
        // its role.
        let owner_role = if owner == crate::services::authz::ROOT_PRINCIPAL {
            Role::SuperAdmin
        } else {
            match self.store.get_user(&owner).await {
                Ok(u) => u.role.parse::<Role>().map_err(|e| {
                    ServiceError::Internal(format!("user {owner}: stored role: {e}"))
                })?,
                Err(StoreError::NotFound) => {
                    return Err(ServiceError::Invalid(format!(
                        "owner {owner:?} is not a known principal"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Acting for another principal needs a role that manages theirs (super-admin
        // powers for `root`).
        if for_other && !caller.role.manages(owner_role) {
            return Err(ServiceError::Forbidden(format!(
                "role {} may not create keys owned by {owner:?}",
                caller.role
            )));
        }
        let expires_at = req.expires_at.unwrap_or(now + DEFAULT_TTL_SECS);
        if expires_at <= now {
            return Err(ServiceError::Invalid(
                "expires_at must be in the future".into(),
            ));
        }
        let (secret, digest) = self.new_secret().await?;
        let row = ApiKeyRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: req.name,
            description,
            owner,
            role: req.role.name().to_string(),
            hint: digest.hint.clone(),
            mac_ring: digest.mac_ring.clone(),
            mac_version: digest.mac_version,
            created_at: now,
            expires_at,
            last_used_at: None,
            created_by: Some(creator.to_string()),
        };
        self.store
            .insert_api_key(&row, &digest, self.max_per_owner)
            .await?;
        tracing::info!(api_key = %row.id, owner = %row.owner, role = %row.role, by = %caller.name, "created API key");
        let key: ApiKey = row.try_into()?;
        let entry = Arc::new(key.clone());
        self.after_change(|m| {
            m.insert(digest.mac, entry);
        })
        .await;
        Ok((key, secret))
    }

    /// Authenticates a presented secret and records its use. Every failure is the same
    /// `Unauthenticated`, so a caller learns nothing about which keys exist.
    pub async fn authenticate(&self, presented: &str, now: i64) -> Result<Principal, ServiceError> {
        let key = self.identify(presented, now).await?;
        self.touch(&key.id, now).await;
        Ok(Principal {
            name: key.owner.clone(),
            role: key.role,
            method: AuthMethod::ApiKey {
                id: key.id.clone(),
                created_by: key.created_by.clone(),
            },
        })
    }

    /// The live key a presented secret belongs to, without recording a use (for
    /// introspection and revocation by the holder).
    pub async fn identify(&self, presented: &str, now: i64) -> Result<Arc<ApiKey>, ServiceError> {
        let unauthenticated = || ServiceError::Unauthenticated("invalid or expired API key".into());
        if presented.len() != SECRET_LEN
            || !presented.starts_with(SECRET_PREFIX)
            || !presented[SECRET_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            // Still "no valid credentials" (401), like an unknown key: a gateway treats it
            // as failed authentication, not as its own malformed request.
            return Err(ServiceError::Unauthenticated(
                "malformed API key: keys are kg_ followed by 43 base64url characters".into(),
            ));
        }
        let digest = self.verified.digest(presented);
        let (mac, from_cache) = match self.verified.get(&digest, now) {
            Some(mac) => (mac, true),
            None => {
                let (mac, _) = self
                    .keys
                    .mac(
                        API_KEY_MAC_RING,
                        Zeroizing::new(presented.as_bytes().to_vec()),
                    )
                    .await?;
                (mac.0, false)
            }
        };
        let index = self.index();
        let (stored, key) = index
            .by_mac
            .get_key_value(mac.as_slice())
            .ok_or_else(unauthenticated)?;
        if !mac_matches(&mac, stored) || key.expires_at <= now {
            return Err(unauthenticated());
        }
        if !from_cache {
            self.verified.put(digest, mac, now);
        }
        Ok(key.clone())
    }

    /// Forgets every remembered MAC: after `api-key-mac` is regenerated no secret may
    /// authenticate with a MAC the old key made.
    pub fn forget_verified(&self) {
        self.verified.clear();
    }

    /// The binding and expiry of live key `id`, for tokens minted with it.
    pub fn record_live(&self, id: &str) -> Option<(String, i64)> {
        self.index().bindings.get(id).cloned()
    }

    /// The live key with id `id`, from memory (no store read).
    pub fn live_key(&self, id: &str) -> Option<Arc<ApiKey>> {
        self.index().by_mac.values().find(|k| k.id == id).cloned()
    }

    /// Whether a binding carried by a token still names a live key with the same secret.
    pub fn binding_live(&self, binding: &str) -> bool {
        let index = self.index();
        binding
            .split_once('.')
            .and_then(|(id, _)| index.bindings.get(id))
            .is_some_and(|(b, _)| b == binding)
    }

    /// RFC 7009 revocation by the holder: presenting a live key deletes it, as a leaked
    /// key's finder (or a secret scanner) would want. Returns whether a key was deleted.
    pub async fn revoke_presented(&self, presented: &str, now: i64) -> Result<bool, ServiceError> {
        let key = match self.identify(presented, now).await {
            Ok(k) => k,
            Err(ServiceError::Unauthenticated(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.store.delete_api_key(&key.id).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let id = key.id.clone();
        self.after_change(|m| m.retain(|_, v| v.id != id)).await;
        if let Ok(mut t) = self.touched.lock() {
            t.remove(&key.id);
        }
        tracing::warn!(api_key = %key.id, owner = %key.owner,
            "API key revoked by a holder of its secret (RFC 7009)");
        Ok(true)
    }

    /// Records use, at most once a minute per key; failures are logged, not fatal.
    async fn touch(&self, id: &str, now: i64) {
        let due = match self.touched.lock() {
            Ok(mut t) => {
                let stale = t
                    .get(id)
                    .is_none_or(|last| now.saturating_sub(*last) >= LAST_USED_RESOLUTION_SECS);
                if stale {
                    t.insert(id.to_string(), now);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if due {
            if let Err(e) = self.store.touch_api_key(id, now).await {
                tracing::warn!(api_key = %id, error = %e, "could not record API key use");
            }
        }
    }

    pub async fn list(&self, caller: &Principal) -> Result<Vec<ApiKey>, ServiceError> {
        Self::check_read(caller)?;
        self.store
            .list_api_keys()
            .await?
            .into_iter()
            .map(ApiKey::try_from)
            .collect()
    }

    pub async fn get(&self, caller: &Principal, id: &str) -> Result<ApiKey, ServiceError> {
        Self::check_read(caller)?;
        self.load(id).await
    }

    async fn load(&self, id: &str) -> Result<ApiKey, ServiceError> {
        match self.store.get_api_key(id).await {
            Ok(row) => row.try_into(),
            Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!("no API key {id:?}"))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn update(
        &self,
        caller: &Principal,
        id: &str,
        patch: ApiKeyPatch,
    ) -> Result<ApiKey, ServiceError> {
        Self::check_write(caller)?;
        let current = self.load(id).await?;
        Self::check_manage(caller, current.role)?;
        if let Some(role) = patch.role {
            Self::check_manage(caller, role)?;
        }
        if let Some(n) = &patch.name {
            validate_text("name", n, 128, true)?;
        }
        if let Some(d) = &patch.description {
            validate_text("description", d, 1024, false)?;
        }
        let row = self
            .store
            .update_api_key(
                id,
                patch.name.as_deref(),
                patch.description.as_deref(),
                patch.role.map(|r| r.name()),
            )
            .await?;
        tracing::info!(api_key = %id, by = %caller.name, "updated API key");
        let key: ApiKey = row.try_into()?;
        let entry = Arc::new(key.clone());
        self.after_change(|m| {
            for v in m.values_mut() {
                if v.id == entry.id {
                    *v = entry.clone();
                }
            }
        })
        .await;
        Ok(key)
    }

    /// Issues a new secret; the old one stops matching when this commits.
    pub async fn regenerate(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<(ApiKey, SecretString), ServiceError> {
        Self::check_write(caller)?;
        let current = self.load(id).await?;
        Self::check_manage(caller, current.role)?;
        let (secret, digest) = self.new_secret().await?;
        let row = self.store.replace_api_key_secret(id, &digest).await?;
        if let Ok(mut t) = self.touched.lock() {
            t.remove(id);
        }
        tracing::info!(api_key = %id, by = %caller.name, "regenerated API key");
        let key: ApiKey = row.try_into()?;
        let entry = Arc::new(key.clone());
        self.after_change(|m| {
            m.retain(|_, v| v.id != entry.id);
            m.insert(digest.mac, entry);
        })
        .await;
        Ok((key, secret))
    }

    pub async fn delete(&self, caller: &Principal, id: &str) -> Result<(), ServiceError> {
        Self::check_write(caller)?;
        let current = self.load(id).await?;
        Self::check_manage(caller, current.role)?;
        self.store.delete_api_key(id).await?;
        self.after_change(|m| m.retain(|_, v| v.id != id)).await;
        if let Ok(mut t) = self.touched.lock() {
            t.remove(id);
        }
        tracing::info!(api_key = %id, by = %caller.name, "deleted API key");
        Ok(())
    }
}
