//! Local user accounts: create, list, get, update, delete, and password authentication.
//!
//! Why it exists: users are the principals of the password grant and the owners of API
//! keys. This module holds the rules; the store makes each change atomic, and the hasher
//! ([`PasswordHasher`]) keeps argon2id off the async workers.
//!
//! - **Permissions**: reading needs `users:read`. Creating, changing and deleting need
//!   `users:write` and a role that covers the user's role (current and new); a
//!   `super-admin` user also needs `super-admins:manage`. Any principal may change its
//!   own password (a patch carrying only `password`) by giving `current_password`, which
//!   is checked like a login. Nobody may delete themselves.
//! - **Usernames**: 1–128 characters of `A-Z a-z 0-9 . _ @ -`, not starting with `-`.
//!   `root` is the built-in super-admin principal and is refused; `:` is refused because
//!   IdP principals are `<oauth_id>:<sub>`.
//! - **Passwords**: `users.password_min_length` to 1024 characters, no composition rules
//!   (NIST SP 800-63B). A user without a password cannot use the password grant.
//! - **Login throttling**: failures are counted per account name tried, existing or not.
//!   `max_failed_logins` within `failed_login_window` lock the name for `lockout`; a
//!   locked name refuses even the right password, with the same answer as a wrong one.
//!   Every attempt costs exactly one argon2 verify, so timing does not tell whether a user
//!   exists.
//! - Changing a password or role, or deleting a user, revokes the user's active sessions;
//!   their ids are returned so access tokens issued to them can be denylisted.

use crate::config::UsersConfig;
use crate::services::authz::{Permission, Role, ROOT_PRINCIPAL};
use crate::services::passwords::PasswordHasher;
use crate::services::{Principal, ServiceError};
use crate::store::users::{Throttle, UserRow};
use crate::store::{Store, StoreError};
use secrecy::{ExposeSecret, SecretString};

/// Longest accepted username, in characters.
pub const MAX_USERNAME_LEN: usize = 128;
/// Longest accepted password, in characters.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The one answer to every failed password login.
const LOGIN_FAILED: &str = "invalid username or password";

/// A new user (already parsed from JSON).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    /// `None`: the account cannot use the password grant.
    pub password: Option<SecretString>,
    pub role: Role,
    /// Groups to put the user in; the caller applies them through the group service.
    pub groups: Vec<String>,
}

/// A partial update; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub password: Option<SecretString>,
    /// The current password, required when principals change their own password without
    /// the right to manage that user: proof that the caller is the user, not merely
    /// something acting in their name (an API key they own, a token minted for them).
    pub current_password: Option<SecretString>,
    pub role: Option<Role>,
    pub groups: Option<Vec<String>>,
}

/// A user as shown to callers; never the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub role: Role,
    pub has_password: bool,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl TryFrom<UserRow> for User {
    type Error = ServiceError;
    fn try_from(r: UserRow) -> Result<Self, ServiceError> {
        let role = r
            .role
            .parse()
            .map_err(|e: String| ServiceError::Internal(format!("user {:?}: {e}", r.username)))?;
        Ok(User {
            username: r.username,
            role,
            has_password: r.has_password,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// User management and password authentication.
#[derive(Debug)]
pub struct UserService {
    store: Store,
    hasher: PasswordHasher,
    password_min_length: usize,
    /// Per (name, source) (`services/login_throttle.rs`).
    throttle: Throttle,
    /// Per source address, whatever the names.
    source_throttle: Throttle,
    /// Per name, from all sources.
    name_throttle: Throttle,
    /// The current role of every local user, so token issuance (`custom_token` for a user
    /// subject) does not read the store per request. Loaded at start; every change made
    /// through this service updates it while holding `changing`, so the map follows the
    /// store's commit order. Users are managed only through this service.
    /// Every local user's role, kept current by the change feed (`crate::cluster`).
    roles: crate::cluster::snapshot::Snapshot<std::collections::HashMap<String, Role>>,
    changing: tokio::sync::Mutex<()>,
}

/// Checks the username rules of the module documentation.
pub fn validate_username(name: &str) -> Result<(), ServiceError> {
    let invalid = |m: String| Err(ServiceError::Invalid(m));
    if name.is_empty() {
        return invalid("username must not be empty".into());
    }
    if name.chars().count() > MAX_USERNAME_LEN {
        return invalid(format!(
            "username is longer than {MAX_USERNAME_LEN} characters"
        ));
    }
    if name.contains(':') {
        return invalid(
            "username must not contain ':' (reserved for IdP principals <oauth_id>:<sub>)".into(),
        );
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
    {
        return invalid(
            "username may contain only letters A-Z and a-z, digits, '.', '_', '@' and '-'".into(),
        );
    }
    if name.starts_with('-') {
        return invalid("username must not start with '-'".into());
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return invalid("username must not be a UUID (reserved for key-file accessIDs)".into());
    }
    if name == ROOT_PRINCIPAL {
        return invalid(format!(
            "username {ROOT_PRINCIPAL:?} is reserved for the built-in super-admin principal"
        ));
    }
    Ok(())
}

/// Group names are checked for existence (and the caller's right to assign them) by
/// [`crate::services::groups::GroupService::check_assignable`]; here only their shape.
fn validate_groups(groups: &[String]) -> Result<(), ServiceError> {
    if groups.len() > 64 {
        return Err(ServiceError::Invalid("at most 64 groups per user".into()));
    }
    for g in groups {
        crate::services::validate_text("group", g, 64, true)?;
    }
    Ok(())
}

impl UserService {
    /// Builds the service; hashes the dummy password once (see [`PasswordHasher::new`]).
    pub async fn new(store: Store, cfg: &UsersConfig) -> Result<UserService, ServiceError> {
        let secs = |d: crate::config::Dur| d.secs();
        let svc = UserService {
            roles: crate::cluster::snapshot::Snapshot::default(),
            changing: tokio::sync::Mutex::new(()),
            store,
            hasher: PasswordHasher::new(cfg).await?,
            password_min_length: cfg.password_min_length,
            throttle: Throttle {
                max_failures: i64::from(cfg.max_failed_logins),
                window_secs: secs(cfg.failed_login_window),
                lockout_secs: secs(cfg.lockout),
                max_lockout_secs: secs(cfg.max_lockout),
            },
            source_throttle: Throttle {
                max_failures: i64::from(cfg.max_failed_logins_per_source),
                window_secs: secs(cfg.failed_login_window),
                lockout_secs: secs(cfg.lockout),
                max_lockout_secs: secs(cfg.max_lockout),
            },
            name_throttle: Throttle {
                max_failures: i64::from(cfg.max_failed_logins_per_name),
                window_secs: secs(cfg.failed_login_window),
                lockout_secs: secs(cfg.lockout),
                max_lockout_secs: secs(cfg.max_lockout),
            },
        };
        svc.reload().await?;
        Ok(svc)
    }

    fn validate_password(&self, password: &SecretString) -> Result<(), ServiceError> {
        let n = password.expose_secret().chars().count();
        if n < self.password_min_length {
            return Err(ServiceError::Invalid(format!(
                "password must be at least {} characters",
                self.password_min_length
            )));
        }
        if n > MAX_PASSWORD_LEN {
            return Err(ServiceError::Invalid(format!(
                "password must be at most {MAX_PASSWORD_LEN} characters"
            )));
        }
        Ok(())
    }

    fn check_read(caller: &Principal) -> Result<(), ServiceError> {
        crate::services::authz::require(caller.role, Permission::UsersRead, "read users")
    }

    /// Checked before any lookup, so callers without it cannot probe which users exist.
    fn check_write(caller: &Principal) -> Result<(), ServiceError> {
        crate::services::authz::require(caller.role, Permission::UsersWrite, "manage users")
    }

    /// `users:write`, a role covering `role`, and `super-admins:manage` for super-admins.
    fn check_manage(caller: &Principal, role: Role) -> Result<(), ServiceError> {
        Self::check_write(caller)?;
        if !caller.role.manages(role) {
            return Err(ServiceError::Forbidden(format!(
                "role {} may not manage users with role {role}",
                caller.role
            )));
        }
        Ok(())
    }

    async fn load(&self, username: &str) -> Result<User, ServiceError> {
        match self.store.get_user(username).await {
            Ok(row) => row.try_into(),
            Err(StoreError::NotFound) => {
                Err(ServiceError::NotFound(format!("no user {username:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Maps "not found" from a store write to a 404 naming the user.
    fn named(username: &str) -> impl Fn(StoreError) -> ServiceError + '_ {
        move |e| match e {
            StoreError::NotFound => ServiceError::NotFound(format!("no user {username:?}")),
            other => other.into(),
        }
    }

    pub async fn create(
        &self,
        caller: &Principal,
        req: NewUser,
        now: i64,
    ) -> Result<User, ServiceError> {
        Self::check_write(caller)?;
        validate_username(&req.username)?;
        validate_groups(&req.groups)?;
        if let Some(pw) = &req.password {
            self.validate_password(pw)?;
        }
        Self::check_manage(caller, req.role)?;
        let hash = match &req.password {
            Some(pw) => Some(self.hasher.hash(pw).await?),
            None => None,
        };
        let _serial = self.changing.lock().await;
        let row = self
            .store
            .insert_user(&req.username, req.role.name(), hash.as_deref(), now)
            .await?;
        self.remember(&row.username, Some(req.role)).await;
        tracing::info!(user = %row.username, role = %row.role, has_password = row.has_password,
            by = %caller.name, "created user");
        row.try_into()
    }

    pub async fn list(&self, caller: &Principal) -> Result<Vec<User>, ServiceError> {
        Self::check_read(caller)?;
        self.store
            .list_users()
            .await?
            .into_iter()
            .map(User::try_from)
            .collect()
    }

    pub async fn get(&self, caller: &Principal, username: &str) -> Result<User, ServiceError> {
        Self::check_read(caller)?;
        self.load(username).await
    }

    /// Re-reads every user's role (at start, and when the change feed reports a user
    /// created, changed or deleted elsewhere).
    pub async fn reload(&self) -> Result<(), ServiceError> {
        self.roles
            .reload(|_| async {
                let mut roles = std::collections::HashMap::new();
                for row in self.store.list_users().await? {
                    let name = row.username.clone();
                    match User::try_from(row) {
                        Ok(u) => {
                            roles.insert(name, u.role);
                        }
                        Err(e) => {
                            tracing::error!(user = %name, error = %e, "skipping an unreadable user record")
                        }
                    }
                }
                Ok::<_, ServiceError>(roles)
            })
            .await
    }

    async fn remember(&self, username: &str, role: Option<Role>) {
        self.roles
            .patch(|roles| {
                let mut roles = roles.clone();
                match role {
                    Some(r) => roles.insert(username.to_string(), r),
                    None => roles.remove(username),
                };
                roles
            })
            .await;
    }

    /// The current role of principal `username`, from memory (no store read): a local
    /// user's role, or super-admin for the built-in `root`. `None` for any other name.
    pub fn role_of(&self, username: &str) -> Option<Role> {
        if username == ROOT_PRINCIPAL {
            return Some(Role::SuperAdmin);
        }
        self.roles.get().get(username).copied()
    }

    /// Changes password and/or role. Returns the updated user and the ids of the sessions
    /// the change revoked (a new password or a different role revokes them all).
    pub async fn update(
        &self,
        caller: &Principal,
        username: &str,
        patch: UserPatch,
        now: i64,
    ) -> Result<(User, Vec<String>), ServiceError> {
        if let Some(groups) = &patch.groups {
            validate_groups(groups)?;
        }
        if let Some(pw) = &patch.password {
            self.validate_password(pw)?;
        }
        let own_password_only = caller.name == username
            && patch.password.is_some()
            && patch.role.is_none()
            && patch.groups.as_ref().is_none_or(Vec::is_empty);
        if !own_password_only {
            Self::check_write(caller)?;
        }
        let current = self.load(username).await?;
        let manages = Self::check_manage(caller, current.role).is_ok()
            && patch
                .role
                .is_none_or(|r| Self::check_manage(caller, r).is_ok());
        if !manages {
            if !own_password_only {
                Self::check_manage(caller, current.role)?;
                if let Some(role) = patch.role {
                    Self::check_manage(caller, role)?;
                }
            }
            // Self-service: the caller's name alone proves nothing (an API key owned by
            // this user, or a custom token minted for them, carries it too), so the
            // current password must authenticate, under the same lockout as a login.
            let Some(current_password) = &patch.current_password else {
                return Err(ServiceError::Forbidden(
                    "changing your own password needs current_password".into(),
                ));
            };
            if self
                .authenticate_password(username, current_password, now)
                .await
                .is_err()
            {
                return Err(ServiceError::Forbidden(
                    "current_password is wrong, or the account is temporarily locked".into(),
                ));
            }
        }
        if patch.password.is_none() && patch.role.is_none() {
            return Ok((current, Vec::new()));
        }
        let hash = match &patch.password {
            Some(pw) => Some(self.hasher.hash(pw).await?),
            None => None,
        };
        let _serial = self.changing.lock().await;
        let (row, revoked) = self
            .store
            .update_user(
                username,
                current.role.name(),
                patch.role.map(Role::name),
                hash.as_deref(),
                now,
            )
            .await
            .map_err(Self::named(username))?;
        tracing::info!(user = %username, role = %row.role, password_changed = hash.is_some(),
            revoked_sessions = revoked.len(), by = %caller.name, "updated user");
        let user: User = row.try_into()?;
        self.remember(username, Some(user.role)).await;
        Ok((user, revoked))
    }

    /// May `caller` give user `username` role `role`? The check of a role grant before
    /// any approvals (operation `change-approvers`, when `role` approves operations):
    /// `users:write` and a role that manages both the current and the new role.
    pub async fn check_role_change(
        &self,
        caller: &Principal,
        username: &str,
        role: Role,
    ) -> Result<(), ServiceError> {
        Self::check_write(caller)?;
        let current = self.load(username).await?;
        Self::check_manage(caller, current.role)?;
        Self::check_manage(caller, role)
    }

    /// Sets the role of `username`, checked by [`Self::check_role_change`] (and approved
    /// when it needed approvals); `by` is the requester. Returns the revoked sessions.
    pub async fn apply_role(
        &self,
        username: &str,
        role: Role,
        by: &str,
        now: i64,
    ) -> Result<Vec<String>, ServiceError> {
        let current = self.load(username).await?;
        let _serial = self.changing.lock().await;
        let (row, revoked) = self
            .store
            .update_user(username, current.role.name(), Some(role.name()), None, now)
            .await
            .map_err(Self::named(username))?;
        tracing::info!(user = %username, role = %row.role, revoked_sessions = revoked.len(), by = %by,
            "changed user role");
        self.remember(username, Some(role)).await;
        Ok(revoked)
    }

    /// Deletes a user, revokes their sessions and deletes the API keys they own. Returns
    /// the revoked session ids. Users cannot delete themselves.
    pub async fn delete(
        &self,
        caller: &Principal,
        username: &str,
        now: i64,
    ) -> Result<Vec<String>, ServiceError> {
        Self::check_write(caller)?;
        let current = self.load(username).await?;
        if caller.name == username {
            return Err(ServiceError::Conflict(
                "users cannot delete themselves; ask another administrator".into(),
            ));
        }
        Self::check_manage(caller, current.role)?;
        let _serial = self.changing.lock().await;
        let revoked = self
            .store
            .delete_user(username, current.role.name(), now)
            .await
            .map_err(Self::named(username))?;
        self.remember(username, None).await;
        tracing::info!(user = %username, revoked_sessions = revoked.len(), by = %caller.name,
            "deleted user and the API keys they owned");
        Ok(revoked)
    }

    /// Checks a username and password for the password grant.
    ///
    /// Always runs exactly one argon2 verify (the user's hash, or the dummy hash when the
    /// user is unknown, has no password or a lockout applies). Every refusal is the same
    /// `Unauthenticated("invalid username or password")`. Failures count per (name,
    /// source), per source and per name (`services/login_throttle.rs`); the source is
    /// the request's client address. Success forgets the name's failures.
    pub async fn authenticate_password(
        &self,
        username: &str,
        password: &SecretString,
        now: i64,
    ) -> Result<User, ServiceError> {
        use crate::services::login_throttle as lt;
        let refused = || ServiceError::Unauthenticated(LOGIN_FAILED.into());
        let source = lt::source_key(crate::store::audit_scope::AuditScope::current_source());
        let source_row = lt::by_source(&source);
        // The source's own lock is checked first and counted only on failure, so a busy
        // address with many good logins is never locked by its successes.
        let source_locked = self
            .store
            .login_failures(&source_row)
            .await?
            .is_some_and(|f| f.locked_until.is_some_and(|u| u > now));
        if !lt::countable(username) || username.chars().count() > MAX_USERNAME_LEN {
            self.hasher.verify(password, None).await?;
            self.store
                .record_login_failure(&source_row, now, self.source_throttle)
                .await?;
            return Err(refused());
        }
        // The per-name and per-(name, source) attempts are counted before the password is
        // checked, so concurrent guesses cannot all pass a "not locked yet" check: only
        // the first max_failed_logins of a window reach the real hash.
        let pair = self
            .store
            .record_login_failure(
                &lt::by_name_and_source(username, &source),
                now,
                self.throttle,
            )
            .await?;
        let name = self
            .store
            .record_login_failure(username, now, self.name_throttle)
            .await?;
        let locked = source_locked
            || pair.failures > self.throttle.max_failures
            || name.failures > self.name_throttle.max_failures;
        if locked {
            self.hasher.verify(password, None).await?;
            self.store
                .record_login_failure(&source_row, now, self.source_throttle)
                .await?;
            tracing::info!(username = ?username, source = %source,
                "password login refused: a lockout applies to this name or source");
            return Err(refused());
        }
        let account = self.store.get_user_for_login(username).await?;
        let stored = account.as_ref().and_then(|(_, h)| h.as_deref());
        let verified = match self.hasher.verify(password, stored).await {
            Ok(ok) => ok,
            Err(ServiceError::Internal(e)) => {
                tracing::error!(username = ?username, error = %e, "cannot check this user's stored password");
                false
            }
            Err(e) => return Err(e),
        };
        match account {
            Some((row, _)) if verified => {
                self.store.clear_login_failures(username).await?;
                self.store
                    .clear_login_failures(&lt::by_name_and_source(username, &source))
                    .await?;
                row.try_into()
            }
            _ => {
                let by_source = self
                    .store
                    .record_login_failure(&source_row, now, self.source_throttle)
                    .await?;
                if pair.failures == self.throttle.max_failures {
                    tracing::info!(username = ?username, source = %source, failures = pair.failures,
                        locked_until = pair.locked_until, "account name locked for this source after repeated failed logins");
                }
                if name.failures == self.name_throttle.max_failures {
                    tracing::warn!(username = ?username, failures = name.failures,
                        locked_until = name.locked_until, "account name locked for every source after failed logins from many sources");
                }
                if by_source.failures == self.source_throttle.max_failures {
                    tracing::warn!(source = %source, failures = by_source.failures,
                        locked_until = by_source.locked_until, "source address locked out of password logins");
                }
                Err(refused())
            }
        }
    }

    /// Clears the lockouts of `username` (the name-wide one and those per source), so its
    /// owner can log in at once (`DELETE /api/v1/users/{username}/lockout`). Needs
    /// `users:write` and a role that manages the user's. Lockouts of source addresses
    /// are not tied to a user and end on their own (bounded by `users.max_lockout`).
    pub async fn clear_lockout(
        &self,
        caller: &Principal,
        username: &str,
    ) -> Result<bool, ServiceError> {
        Self::check_write(caller)?;
        let current = self.load(username).await?;
        Self::check_manage(caller, current.role)?;
        let cleared = self.store.clear_lockouts_of(username).await?;
        tracing::info!(user = %username, cleared, by = %caller.name, "cleared login lockouts");
        Ok(cleared)
    }

    /// Deletes up to `batch` finished login-failure records; returns how many. The purge
    /// loop calls it until it returns less than `batch`.
    pub async fn purge_login_failures(&self, now: i64, batch: u32) -> Result<u64, ServiceError> {
        Ok(self
            .store
            .purge_login_failures(now, self.throttle.window_secs, batch)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::services::AuthMethod;
    use std::time::Duration;

    fn principal(name: &str, role: Role) -> Principal {
        Principal {
            name: name.into(),
            role,
            method: AuthMethod::Cli,
        }
    }

    fn root() -> Principal {
        principal(ROOT_PRINCIPAL, Role::SuperAdmin)
    }

    async fn service() -> (UserService, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let cfg = UsersConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_max_concurrent: 2,
            max_failed_logins: 3,
            failed_login_window: crate::config::Dur(Duration::from_secs(900)),
            lockout: crate::config::Dur(Duration::from_secs(600)),
            ..UsersConfig::default()
        };
        (UserService::new(store, &cfg).await.unwrap(), dir)
    }

    fn pw(s: &str) -> SecretString {
        SecretString::from(s)
    }

    async fn add(svc: &UserService, name: &str, role: Role, password: Option<&str>) -> User {
        svc.create(
            &root(),
            NewUser {
                username: name.into(),
                password: password.map(pw),
                role,
                groups: vec![],
            },
            100,
        )
        .await
        .unwrap()
    }

    fn refused(r: Result<User, ServiceError>) -> String {
        match r {
            Err(ServiceError::Unauthenticated(m)) => m,
            other => panic!("expected Unauthenticated, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn wrong_passwords_lock_the_name_until_the_lockout_passes() {
        let (svc, _d) = service().await;
        let right = pw("the right password");
        let wrong = pw("not the password!!");
        add(&svc, "alice", Role::HelpDesk, Some("the right password")).await;
        let ok = svc
            .authenticate_password("alice", &right, 1000)
            .await
            .unwrap();
        assert_eq!((ok.username.as_str(), ok.role), ("alice", Role::HelpDesk));

        let mut answers = Vec::new();
        for i in 0..3 {
            answers.push(refused(
                svc.authenticate_password("alice", &wrong, 1001 + i).await,
            ));
        }
        // Locked now: the right password is refused with the very same answer.
        answers.push(refused(
            svc.authenticate_password("alice", &right, 1010).await,
        ));

        // A name that does not exist locks the same way and answers identically.
        for i in 0..3 {
            answers.push(refused(
                svc.authenticate_password("ghost", &wrong, 1001 + i).await,
            ));
        }
        answers.push(refused(
            svc.authenticate_password("ghost", &right, 1010).await,
        ));
        assert!(answers.iter().all(|a| a == LOGIN_FAILED), "{answers:?}");
        // Without a request, the source is "-": the lock is on (ghost, -).
        let key = crate::services::login_throttle::by_name_and_source("ghost", "-");
        let ghost = svc.store.login_failures(&key).await.unwrap().unwrap();
        assert_eq!(ghost.locked_until, Some(1003 + 600));

        // Still locked one second before the end; open at the end, and success clears.
        refused(svc.authenticate_password("alice", &right, 1602).await);
        let ok = svc
            .authenticate_password("alice", &right, 1603)
            .await
            .unwrap();
        assert_eq!(ok.username, "alice");
        assert_eq!(svc.store.login_failures("alice").await.unwrap(), None);
        let key = crate::services::login_throttle::by_name_and_source("alice", "-");
        assert_eq!(svc.store.login_failures(&key).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_success_before_the_limit_resets_the_count() {
        let (svc, _d) = service().await;
        add(&svc, "bob", Role::ReadOnly, Some("bob's password")).await;
        for i in 0..2 {
            refused(
                svc.authenticate_password("bob", &pw("wrong password"), 10 + i)
                    .await,
            );
        }
        svc.authenticate_password("bob", &pw("bob's password"), 20)
            .await
            .unwrap();
        for i in 0..2 {
            refused(
                svc.authenticate_password("bob", &pw("wrong password"), 30 + i)
                    .await,
            );
        }
        svc.authenticate_password("bob", &pw("bob's password"), 40)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn no_password_or_an_overlong_name_never_authenticates() {
        let (svc, _d) = service().await;
        add(&svc, "svc-account", Role::Gateway, None).await;
        refused(svc.authenticate_password("svc-account", &pw(""), 10).await);
        refused(
            svc.authenticate_password("svc-account", &pw("anything"), 10)
                .await,
        );
        let long = "a".repeat(MAX_USERNAME_LEN + 1);
        refused(svc.authenticate_password(&long, &pw("anything"), 10).await);
        assert_eq!(
            svc.store.login_failures(&long).await.unwrap(),
            None,
            "store untouched"
        );
        refused(svc.authenticate_password("", &pw("anything"), 10).await);
    }

    #[tokio::test]
    async fn anyone_may_change_their_own_password_but_nothing_else() {
        let (svc, _d) = service().await;
        add(&svc, "carol", Role::Admin, Some("carol password 1")).await;
        add(&svc, "dave", Role::ReadOnly, Some("dave password 1")).await;
        let carol_gw = principal("carol", Role::Gateway);
        let only_pw = || UserPatch {
            password: Some(pw("carol password 2")),
            current_password: Some(pw("carol password 1")),
            ..UserPatch::default()
        };
        // Acting in carol's name is not enough: the current password is the proof.
        for current_password in [None, Some(pw("not carols password"))] {
            let guess = UserPatch {
                current_password,
                ..only_pw()
            };
            assert!(matches!(
                svc.update(&carol_gw, "carol", guess, 199).await,
                Err(ServiceError::Forbidden(_))
            ));
        }
        let (u, _) = svc
            .update(&carol_gw, "carol", only_pw(), 200)
            .await
            .unwrap();
        assert_eq!(u.updated_at, Some(200));
        svc.authenticate_password("carol", &pw("carol password 2"), 201)
            .await
            .unwrap();
        let with_role = UserPatch {
            role: Some(Role::Gateway),
            ..only_pw()
        };
        assert!(matches!(
            svc.update(&carol_gw, "carol", with_role, 202).await,
            Err(ServiceError::Forbidden(_))
        ));
        assert!(matches!(
            svc.update(&carol_gw, "dave", only_pw(), 202).await,
            Err(ServiceError::Forbidden(_))
        ));
        let short = UserPatch {
            password: Some(pw("short")),
            current_password: Some(pw("carol password 2")),
            ..UserPatch::default()
        };
        assert!(matches!(
            svc.update(&carol_gw, "carol", short, 203).await,
            Err(ServiceError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn nobody_deletes_themselves_and_roles_are_checked_against_old_and_new() {
        let (svc, _d) = service().await;
        add(&svc, "erin", Role::Admin, None).await;
        add(&svc, "hd", Role::HelpDesk, None).await;
        let erin = principal("erin", Role::Admin);
        assert!(matches!(
            svc.delete(&erin, "erin", 300).await,
            Err(ServiceError::Conflict(_))
        ));
        let help = principal("hd", Role::HelpDesk);
        let promote = UserPatch {
            role: Some(Role::Admin),
            ..UserPatch::default()
        };
        assert!(matches!(
            svc.update(&help, "hd", promote.clone(), 300).await,
            Err(ServiceError::Forbidden(_))
        ));
        assert!(matches!(
            svc.update(&erin, "hd", promote.clone(), 300).await,
            Ok((
                User {
                    role: Role::Admin,
                    ..
                },
                _
            ))
        ));
        let to_super = UserPatch {
            role: Some(Role::SuperAdmin),
            ..UserPatch::default()
        };
        assert!(matches!(
            svc.update(&erin, "hd", to_super, 301).await,
            Err(ServiceError::Forbidden(_))
        ));
        assert!(svc.delete(&erin, "hd", 302).await.unwrap().is_empty());
        assert!(matches!(
            svc.delete(&erin, "hd", 303).await,
            Err(ServiceError::NotFound(_))
        ));
    }

    #[test]
    fn usernames_follow_the_rules() {
        for ok in [
            "alice",
            "a",
            "bob.smith@example.com",
            "x_y-z",
            "A9",
            &"n".repeat(128),
        ] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "root",
            "-alice",
            "a:b",
            "oidc:123",
            "with space",
            "tab\t",
            "ünïcode",
            "slash/",
            &"n".repeat(129),
        ] {
            assert!(
                matches!(validate_username(bad), Err(ServiceError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
