//! API keys: create, authenticate, list, update, regenerate, delete.
//!
//! A secret is `kg_<id>_<secret><check>` (see [`crate::services::credential`]): a public
//! id, 32 bytes from the hardware RNG in base64url and a checksum. The store keeps only
//! HMAC-SHA256(secret) computed by the `api-key-mac` ring in hardware, so a stolen
//! database yields nothing usable offline.
//!
//! A malformed secret, a bad checksum or an unknown id is refused in software; only a
//! known id costs a hardware MAC, in the executor's bounded unauthenticated lane, and
//! each id has its own failure limiter. Keys made before ids existed (`kg_` + 43
//! characters) keep working until they expire or are regenerated; while none is left,
//! a string of that form is refused without a MAC too (docs/api-keys.md "Format").
//!
//! Authentication is the secret's MAC (computed in hardware, or remembered for
//! `api_keys.verify_cache_ttl` after it last came from the hardware) plus a lookup in an
//! in-memory index of the stored MACs, confirmed with a constant-time comparison. The index is rebuilt after every
//! change made through this process, before the change is acknowledged, so delete and
//! regenerate take effect at once. Changes made by another process (the CLI, a replica)
//! arrive through the change feed, whose applier calls [`ApiKeyService::reload`]
//! (`crate::cluster`).
//!
//! Crash safety: the secret is returned only after the record has been committed, so a
//! client never holds a secret the store does not know.

use crate::cluster::snapshot::Snapshot;
use crate::keys::verify::mac_matches;
use crate::keys::{KeyRegistry, API_KEY_MAC_RING};
use crate::limits::{FailureLimiter, Rate};
use crate::services::authz::{Permission, Role};
use crate::services::credential::{self, Parsed};
use crate::services::validate_text;
use crate::services::verify_cache::VerifyCache;
use crate::services::{AuthMethod, Principal, ServiceError};
use crate::store::api_keys::{ApiKeyRow, SecretDigest};
use crate::store::{Store, StoreError};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Prefix of every API-key secret; lets secret scanners find leaked keys.
pub const SECRET_PREFIX: &str = "kg_";
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

/// The approval a key creation redeems ([`ApiKeyService::create_redeeming`]).
#[derive(Debug, Clone)]
pub struct Redemption {
    /// The executed `create-super-admin-key` request.
    pub approval_id: String,
    /// Its requester, who alone redeems it.
    pub requested_by: String,
    /// The redemption's audit entry; its outcome is set to the key's id.
    pub audit: crate::store::audit::NewAuditEntry,
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
    /// The public id its secret carries; `None` for a key in the old format.
    pub public_id: Option<String>,
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
            public_id: r.public_id,
            created_by: r.created_by,
        })
    }
}

/// Stored MACs and their keys.
#[derive(Default)]
struct Index {
    by_mac: HashMap<Vec<u8>, Arc<ApiKey>>,
    /// key id → its binding (see [`binding_of`]), what tokens minted with the key carry,
    /// and its expiry.
    bindings: HashMap<String, (String, i64)>,
    /// public id → stored MAC and key, for secrets in the current format.
    by_id: HashMap<String, (Vec<u8>, Arc<ApiKey>)>,
    /// Keys still in the old format (no public id).
    legacy: usize,
}

impl Index {
    fn new(by_mac: HashMap<Vec<u8>, Arc<ApiKey>>) -> Index {
        let bindings = by_mac
            .iter()
            .map(|(mac, k)| (k.id.clone(), (binding_of(&k.id, mac, k.role), k.expires_at)))
            .collect();
        let by_id = by_mac
            .iter()
            .filter_map(|(mac, k)| {
                k.public_id
                    .as_ref()
                    .map(|p| (p.clone(), (mac.clone(), k.clone())))
            })
            .collect();
        let legacy = by_mac.values().filter(|k| k.public_id.is_none()).count();
        Index {
            by_mac,
            bindings,
            by_id,
            legacy,
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
    /// Rebuilds and local edits are serialized by the snapshot, so a reload that read the
    /// store before a change can never overwrite the index after that change was applied.
    index: Snapshot<Index>,
    verified: VerifyCache,
    /// Last `last_used_at` written per key id, to coalesce writes.
    touched: Mutex<HashMap<String, i64>>,
    /// Wrong secrets per public id.
    failures: FailureLimiter<String>,
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
            index: Snapshot::default(),
            verified,
            touched: Mutex::new(HashMap::new()),
            failures: FailureLimiter::new(
                crate::limits::LimitsConfig::default().credential_failures,
            ),
        };
        svc.reload().await?;
        Ok(svc)
    }

    /// Sets the failure limiter of each public id (`limits.credential_failures`).
    pub fn with_failure_quota(mut self, rate: Rate) -> Self {
        self.failures = FailureLimiter::new(rate);
        self
    }

    /// Rebuilds the index from the store (at start, after a local change, and when the
    /// change feed reports a change made elsewhere).
    pub async fn reload(&self) -> Result<(), ServiceError> {
        self.index
            .reload(|_| async {
                let rows = self.store.list_api_keys_with_macs().await?;
                let mut by_mac = HashMap::with_capacity(rows.len());
                for (row, mac) in rows {
                    let id = row.id.clone();
                    match ApiKey::try_from(row) {
                        Ok(key) => {
                            by_mac.insert(mac, Arc::new(key));
                        }
                        // One unreadable record must not lock everybody out; it cannot
                        // authenticate.
                        Err(e) => {
                            tracing::error!(api_key = %id, error = %e, "skipping an unreadable API key record")
                        }
                    }
                }
                Ok::<_, ServiceError>(Index::new(by_mac))
            })
            .await
    }

    /// Applies a change made through this process to the index at once, then reloads.
    /// The local edit means a committed delete or regenerate takes effect even if the
    /// reload fails; the change feed reloads again when it delivers the change.
    async fn after_change(&self, edit: impl FnOnce(&mut HashMap<Vec<u8>, Arc<ApiKey>>)) {
        self.index
            .patch(|idx| {
                let mut by_mac = idx.by_mac.clone();
                edit(&mut by_mac);
                Index::new(by_mac)
            })
            .await;
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "API key index reload failed; the change feed retries");
        }
    }

    fn index(&self) -> Arc<Index> {
        self.index.get()
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

    /// Draws a fresh id and secret from the hardware RNG and computes the MAC in hardware.
    async fn new_secret(&self) -> Result<(SecretString, SecretDigest), ServiceError> {
        let random = self
            .keys
            .random(
                API_KEY_MAC_RING,
                credential::ID_BYTES + credential::SECRET_BYTES,
            )
            .await?;
        let (id_bytes, secret_bytes) = random.split_at(credential::ID_BYTES);
        let public_id = credential::encode_id(id_bytes);
        // Encoded straight into the string the SecretString takes over, so no other copy
        // of the secret is left behind (capacity is exact, so it never reallocates).
        let mut encoded = String::with_capacity(credential::current_len(SECRET_PREFIX));
        credential::encode_into(&mut encoded, SECRET_PREFIX, &public_id, secret_bytes);
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
                public_id: Some(public_id),
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
        self.create_inner(caller, creator, req, now, None).await
    }

    /// [`Self::create_as`] for the redemption of an executed `create-super-admin-key`
    /// approval: the approval's compare-and-set and the key's insert commit in one
    /// transaction, so a request yields exactly one key (Conflict for every other
    /// redemption).
    pub async fn create_redeeming(
        &self,
        caller: &Principal,
        creator: &str,
        req: NewApiKey,
        now: i64,
        redemption: Redemption,
    ) -> Result<(ApiKey, SecretString), ServiceError> {
        self.create_inner(caller, creator, req, now, Some(redemption))
            .await
    }

    async fn create_inner(
        &self,
        caller: &Principal,
        creator: &str,
        req: NewApiKey,
        now: i64,
        redemption: Option<Redemption>,
    ) -> Result<(ApiKey, SecretString), ServiceError> {
        validate_text("name", &req.name, 128, true)?;
        let description = req.description.unwrap_or_default();
        validate_text("description", &description, 1024, false)?;
        Self::check_manage(caller, req.role)?;
        let owner = req.owner.unwrap_or_else(|| caller.name.clone());
        validate_text("owner", &owner, 256, true)?;
        // A key acts as its owner (`docs/api-keys.md`), so minting one for somebody else is acting on
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
            public_id: digest.public_id.clone(),
            created_by: Some(creator.to_string()),
        };
        match redemption {
            None => {
                self.store
                    .insert_api_key(&row, &digest, self.max_per_owner)
                    .await?
            }
            Some(mut r) => {
                r.audit.outcome = format!("api key {}", row.id);
                if !self
                    .store
                    .redeem_approval_into_key(
                        &r.approval_id,
                        &r.requested_by,
                        now,
                        &r.audit,
                        &row,
                        &digest,
                        self.max_per_owner,
                    )
                    .await?
                {
                    return Err(ServiceError::Conflict(format!(
                        "approval request {} was redeemed already",
                        r.approval_id
                    )));
                }
            }
        }
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
    ///
    /// Known and unknown ids take the same software steps (parse, checksum, cache
    /// digest, index lookup); only a known id, not locked by its failure limiter, goes
    /// on to the hardware MAC.
    pub async fn identify(&self, presented: &str, now: i64) -> Result<Arc<ApiKey>, ServiceError> {
        let refuse = |reason: &'static str| {
            metrics::counter!("keygate_api_key_refusals_total", "reason" => reason).increment(1);
            ServiceError::Unauthenticated("invalid or expired API key".into())
        };
        let parsed = match credential::parse(SECRET_PREFIX, presented) {
            Ok(p) => p,
            // Still "no valid credentials" (401), like an unknown key: a gateway treats
            // it as failed authentication, not as its own malformed request.
            Err(e) => {
                metrics::counter!("keygate_api_key_refusals_total", "reason" => e.label())
                    .increment(1);
                return Err(ServiceError::Unauthenticated(format!(
                    "malformed API key ({e}): keys are kg_<id>_<secret><checksum>"
                )));
            }
        };
        let digest = self.verified.digest(presented);
        let cached = self.verified.get(&digest, now);
        let from_cache = cached.is_some();
        let index = self.index();
        let (mac, key) = match parsed {
            Parsed::Current { id } => {
                let found = index.by_id.get(id);
                let Some((stored, key)) = found else {
                    return Err(refuse("unknown_id"));
                };
                let id = id.to_string();
                let mac = match cached {
                    Some(mac) => mac,
                    None => {
                        if self.failures.locked(&id).is_some() {
                            return Err(refuse("id_locked"));
                        }
                        let (mac, _) = self
                            .keys
                            .mac_unauthenticated(
                                API_KEY_MAC_RING,
                                Zeroizing::new(presented.as_bytes().to_vec()),
                            )
                            .await?;
                        mac.0
                    }
                };
                if !mac_matches(&mac, stored) {
                    if self.failures.failed(&id).is_some() {
                        tracing::info!(api_key = %key.id, "API key id locked after repeated wrong secrets");
                    }
                    return Err(refuse("wrong_secret"));
                }
                (mac, key.clone())
            }
            Parsed::Legacy => {
                if index.legacy == 0 {
                    return Err(refuse("legacy_format"));
                }
                let mac = match cached {
                    Some(mac) => mac,
                    None => {
                        self.keys
                            .mac_unauthenticated(
                                API_KEY_MAC_RING,
                                Zeroizing::new(presented.as_bytes().to_vec()),
                            )
                            .await?
                            .0
                             .0
                    }
                };
                let Some((stored, key)) = index.by_mac.get_key_value(mac.as_slice()) else {
                    return Err(refuse("unknown_key"));
                };
                if !mac_matches(&mac, stored) || key.public_id.is_some() {
                    return Err(refuse("unknown_key"));
                }
                (mac, key.clone())
            }
        };
        if key.expires_at <= now {
            return Err(refuse("expired"));
        }
        if !from_cache {
            self.verified.put(digest, mac, now);
        }
        Ok(key)
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
        match self
            .store
            .delete_api_key(&key.id, key.role.name(), "api-key.revoke")
            .await
        {
            Ok(()) => {}
            // Gone, or changed since it was identified: not revoked by this request.
            Err(StoreError::NotFound | StoreError::Conflict(_)) => return Ok(false),
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
                current.role.name(),
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
        let row = self
            .store
            .replace_api_key_secret(id, current.role.name(), &digest)
            .await?;
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
        self.store
            .delete_api_key(id, current.role.name(), "api-key.delete")
            .await?;
        self.after_change(|m| m.retain(|_, v| v.id != id)).await;
        if let Ok(mut t) = self.touched.lock() {
            t.remove(id);
        }
        tracing::info!(api_key = %id, by = %caller.name, "deleted API key");
        Ok(())
    }
}
