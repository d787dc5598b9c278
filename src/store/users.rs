//! Local user accounts and login throttling.
//!
//! Why here: a user's row, their sessions and the API keys they own must change together.
//! Deleting a user, changing their password or changing their role each runs in one
//! transaction that also revokes the user's active sessions (and, for deletion, removes
//! their API keys and bumps `meta.api_keys_version`), so no half-applied state is ever
//! visible. The revoked session ids are returned so the caller can denylist access tokens
//! issued to them.
//!
//! Changes take the role the caller's permission check saw (`expected_role`) and refuse
//! with a conflict if the row no longer carries it, so a concurrent role change cannot
//! slip past the check.
//!
//! `login_failures` holds one row per account *name* tried, whether or not the account
//! exists, so neither answers nor writes reveal which names exist. Password hashes are
//! only ever read by [`Store::get_user_for_login`]; every other read returns
//! `has_password` instead.

use super::{Store, StoreError};
reuse_shared!(users);
use super::DbRow;
use sqlx::Row;

shared! {
/// A user as stored, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub username: String,
    pub role: String,
    pub has_password: bool,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

/// The throttling state of one account name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    pub failures: i64,
    pub window_start: i64,
    pub locked_until: Option<i64>,
}

/// How failed logins are counted (from `[users]`).
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    /// Failures within `window_secs` that lock the name.
    pub max_failures: i64,
    pub window_secs: i64,
    /// How long a first lockout lasts; each further one in a row lasts twice the last.
    pub lockout_secs: i64,
    /// The longest lockout: escalation stops here.
    pub max_lockout_secs: i64,
}

/// Why a user's sessions were revoked (`sessions.revoked_reason`).
pub const REVOKED_USER_DELETED: &str = "user-deleted";
pub const REVOKED_PASSWORD_CHANGED: &str = "password-changed";
pub const REVOKED_ROLE_CHANGED: &str = "role-changed";
}

const COLUMNS: &str =
    "username, role, password_hash IS NOT NULL AS has_password, created_at, updated_at";

fn from_row(row: &DbRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        username: row.try_get(0)?,
        role: row.try_get(1)?,
        has_password: row.try_get(2)?,
        created_at: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

/// Revokes every active session of `username` inside `tx`; returns their ids.
async fn revoke_sessions(
    tx: &mut super::DbConn,
    username: &str,
    now: i64,
    reason: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = $3
         WHERE username = $1 AND revoked_at IS NULL
         RETURNING id",
    )
    .bind(username)
    .bind(now)
    .bind(reason)
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        super::changes::record(&mut *tx, super::changes::Topic::Session, id).await?;
    }
    Ok(ids)
}

/// After a conditional write matched no row inside `tx`: not found, or changed meanwhile.
async fn missing_or_changed(
    tx: &mut super::DbConn,
    username: &str,
) -> Result<StoreError, StoreError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(tx)
        .await?;
    Ok(match exists {
        None => StoreError::NotFound,
        Some(_) => StoreError::Conflict(format!(
            "user {username:?} was changed by another request; retry"
        )),
    })
}

impl Store {
    /// Inserts a user; a taken username is a conflict.
    pub async fn insert_user(
        &self,
        username: &str,
        role: &str,
        password_hash: Option<&str>,
        now: i64,
    ) -> Result<UserRow, StoreError> {
        let mut tx = self.begin_audited("user.create", username, now).await?;
        let r = sqlx::query(
            "INSERT INTO users (username, role, password_hash, created_at, updated_at)
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(username)
        .bind(role)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await;
        let r = match r {
            Ok(r) => match super::changes::record(&mut tx, super::changes::Topic::Users, username)
                .await
            {
                Ok(()) => tx.commit().await.map(|()| r),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => Ok(UserRow {
                username: username.to_string(),
                role: role.to_string(),
                has_password: password_hash.is_some(),
                created_at: now,
                updated_at: None,
            }),
            Err(e) => match StoreError::from(e) {
                StoreError::Conflict(_) => Err(StoreError::Conflict(format!(
                    "user {username:?} already exists"
                ))),
                other => Err(other),
            },
        }
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM users ORDER BY username"))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    pub async fn get_user(&self, username: &str) -> Result<UserRow, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(from_row(&row)?)
    }

    /// The user and their password hash, for password login only. `None` when there is
    /// no such user.
    pub async fn get_user_for_login(
        &self,
        username: &str,
    ) -> Result<Option<(UserRow, Option<String>)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, password_hash FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some((from_row(&row)?, row.try_get(5)?))),
        }
    }

    /// Sets a new password hash and/or role on a user whose role is still
    /// `expected_role`. A new password revokes the user's active sessions
    /// (`password-changed`); a role that differs from `expected_role` revokes them too
    /// (`role-changed`). Returns the updated row and the revoked session ids.
    pub async fn update_user(
        &self,
        username: &str,
        expected_role: &str,
        role: Option<&str>,
        password_hash: Option<&str>,
        now: i64,
    ) -> Result<(UserRow, Vec<String>), StoreError> {
        let mut tx = self.begin_audited("user.update", username, now).await?;
        // The write comes first, so the transaction holds the write lock before it reads.
        let row = sqlx::query(&format!(
            "UPDATE users SET role = COALESCE($3, role),
                              password_hash = COALESCE($4, password_hash),
                              updated_at = $5
             WHERE username = $1 AND role = $2
             RETURNING {COLUMNS}"
        ))
        .bind(username)
        .bind(expected_role)
        .bind(role)
        .bind(password_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(missing_or_changed(&mut tx, username).await?);
        };
        let row = from_row(&row)?;
        let mut revoked = Vec::new();
        if password_hash.is_some() {
            revoked = revoke_sessions(&mut tx, username, now, REVOKED_PASSWORD_CHANGED).await?;
        }
        if role.is_some_and(|r| r != expected_role) {
            revoked.extend(revoke_sessions(&mut tx, username, now, REVOKED_ROLE_CHANGED).await?);
        }
        super::changes::record(&mut tx, super::changes::Topic::Users, username).await?;
        tx.commit().await?;
        Ok((row, revoked))
    }

    /// Deletes a user whose role is still `expected_role`, revokes their active sessions
    /// (`user-deleted`) and deletes the API keys they own, in one transaction. Returns
    /// the revoked session ids.
    pub async fn delete_user(
        &self,
        username: &str,
        expected_role: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_audited("user.delete", username, now).await?;
        let r = sqlx::query("DELETE FROM users WHERE username = $1 AND role = $2")
            .bind(username)
            .bind(expected_role)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(missing_or_changed(&mut tx, username).await?);
        }
        let revoked = revoke_sessions(&mut tx, username, now, REVOKED_USER_DELETED).await?;
        // A later user of the same name must not inherit this one's groups or rings.
        super::groups::forget_principal(&mut tx, username).await?;
        let keys = sqlx::query("DELETE FROM api_keys WHERE owner = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        if keys.rows_affected() > 0 {
            super::changes::record(&mut tx, super::changes::Topic::ApiKeys, username).await?;
        }
        super::changes::record(&mut tx, super::changes::Topic::Users, username).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// The throttling state of an account name, if it has failed logins on record.
    pub async fn login_failures(
        &self,
        username: &str,
    ) -> Result<Option<LoginFailures>, StoreError> {
        let row = sqlx::query(
            "SELECT failures, window_start, locked_until FROM login_failures WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(LoginFailures {
                failures: r.try_get(0)?,
                window_start: r.try_get(1)?,
                locked_until: r.try_get(2)?,
            })),
        }
    }

    /// Counts one login attempt against `username` in a single upsert, before its
    /// password is checked, and returns the new state. Counting first is what makes the
    /// limit hold under concurrent guesses: the attempts serialise here, and only the
    /// first `max_failures` of a window get a password check.
    ///
    /// The count starts afresh when an earlier lockout has ended, or when the window has
    /// passed without a lockout; otherwise it grows by one. Reaching `max_failures` sets
    /// `locked_until = now + min(lockout_secs * 2^lockouts, max_lockout_secs)` and counts
    /// the lockout, so repeated lockouts escalate but never past `max_lockout_secs`.
    /// Attempts during a lockout do not extend it.
    pub async fn record_login_failure(
        &self,
        username: &str,
        now: i64,
        t: Throttle,
    ) -> Result<LoginFailures, StoreError> {
        // SET expressions all see the old row.
        const LOCKED: &str =
            "(login_failures.locked_until IS NOT NULL AND login_failures.locked_until > $2)";
        const FRESH: &str = "((login_failures.locked_until IS NOT NULL
                                AND login_failures.locked_until <= $2)
                              OR (login_failures.locked_until IS NULL
                                  AND login_failures.window_start + $3 <= $2))";
        // Whether this attempt reaches the limit (and is not inside a running lockout).
        const REACHES: &str = "(NOT (login_failures.locked_until IS NOT NULL
                                     AND login_failures.locked_until > $2)
                                AND (CASE WHEN ((login_failures.locked_until IS NOT NULL
                                                 AND login_failures.locked_until <= $2)
                                                OR (login_failures.locked_until IS NULL
                                                    AND login_failures.window_start + $3 <= $2))
                                          THEN 1 ELSE login_failures.failures + 1 END) >= $4)";
        let sql = format!(
            "INSERT INTO login_failures (username, failures, window_start, locked_until, lockouts)
             VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $2 + {least}($5, $6) END,
                     CASE WHEN 1 >= $4 THEN 1 ELSE 0 END)
             ON CONFLICT (username) DO UPDATE SET
               failures = CASE WHEN {FRESH} THEN 1 ELSE login_failures.failures + 1 END,
               window_start = CASE WHEN {FRESH} THEN $2 ELSE login_failures.window_start END,
               locked_until = CASE
                 WHEN {LOCKED} THEN login_failures.locked_until
                 WHEN {REACHES}
                   THEN $2 + {least}($5 << CAST({least}(login_failures.lockouts, 30) AS INTEGER), $6)
                 ELSE NULL END,
               lockouts = CASE WHEN {REACHES} THEN login_failures.lockouts + 1
                               ELSE login_failures.lockouts END
             RETURNING failures, window_start, locked_until",
            least = super::LEAST
        );
        let r = sqlx::query(&sql)
            .bind(username)
            .bind(now)
            .bind(t.window_secs)
            .bind(t.max_failures)
            .bind(t.lockout_secs)
            .bind(t.max_lockout_secs.max(t.lockout_secs))
            .fetch_one(self.pool())
            .await?;
        Ok(LoginFailures {
            failures: r.try_get(0)?,
            window_start: r.try_get(1)?,
            locked_until: r.try_get(2)?,
        })
    }

    /// Forgets the failed logins and lockouts of `username`: the name-wide counter and
    /// every (name, source) counter (keys `<name>\x1f<source>`). For an administrator
    /// unlocking an account (`DELETE /api/v1/users/{username}/lockout`). Returns whether
    /// any was there.
    pub async fn clear_lockouts_of(&self, username: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .begin_audited("user.unlock", username, super::audit_scope::unix_now())
            .await?;
        let r = sqlx::query(&format!(
            "DELETE FROM login_failures WHERE username = $1
               OR (length(username) > length($1)
                   AND substr(username, 1, length($1) + 1) = $1 || {})",
            super::UNIT_SEPARATOR
        ))
        .bind(username)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Forgets the failed logins of `username` (after a successful login).
    pub async fn clear_login_failures(&self, username: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE username = $1")
            .bind(username)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes up to `batch` rows whose window has passed and whose lock (if any) has
    /// ended; returns how many it deleted. Call again while it returns `batch`.
    pub async fn purge_login_failures(
        &self,
        now: i64,
        window_secs: i64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM login_failures WHERE username IN (
                 SELECT username FROM login_failures
                 WHERE window_start + $2 <= $1 AND (locked_until IS NULL OR locked_until <= $1)
                 LIMIT $3)",
        )
        .bind(now)
        .bind(window_secs)
        .bind(i64::from(batch))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }
}

shared! {
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const T: Throttle = Throttle {
        max_failures: 3,
        window_secs: 100,
        lockout_secs: 50,
        max_lockout_secs: 150,
    };

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (Store::open(&url, crate::store::DEFAULT_MAX_CONNECTIONS).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn failures_within_the_window_lock_the_name_at_the_limit() {
        let (s, _d) = store().await;
        let a = s.record_login_failure("ghost", 1000, T).await.unwrap();
        assert_eq!(
            (a.failures, a.window_start, a.locked_until),
            (1, 1000, None)
        );
        let b = s.record_login_failure("ghost", 1010, T).await.unwrap();
        assert_eq!(
            (b.failures, b.window_start, b.locked_until),
            (2, 1000, None)
        );
        let c = s.record_login_failure("ghost", 1020, T).await.unwrap();
        assert_eq!((c.failures, c.locked_until), (3, Some(1070)));
        assert_eq!(s.login_failures("ghost").await.unwrap(), Some(c));
        assert_eq!(s.login_failures("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_passed_window_or_an_ended_lockout_starts_the_count_afresh() {
        let (s, _d) = store().await;
        s.record_login_failure("n", 1000, T).await.unwrap();
        s.record_login_failure("n", 1010, T).await.unwrap();
        // Window [1000, 1100) has passed: count restarts.
        let a = s.record_login_failure("n", 1100, T).await.unwrap();
        assert_eq!(
            (a.failures, a.window_start, a.locked_until),
            (1, 1100, None)
        );
        s.record_login_failure("n", 1101, T).await.unwrap();
        let locked = s.record_login_failure("n", 1102, T).await.unwrap();
        assert_eq!(locked.locked_until, Some(1152));
        // Lockout ended at 1152, still inside the window: a fresh count, lock cleared.
        let after = s.record_login_failure("n", 1152, T).await.unwrap();
        assert_eq!(
            (after.failures, after.window_start, after.locked_until),
            (1, 1152, None)
        );
    }

    #[tokio::test]
    async fn lockouts_in_a_row_double_but_never_pass_the_maximum() {
        let (s, _d) = store().await;
        let mut t = 1000;
        let mut locks = Vec::new();
        for _ in 0..4 {
            let mut last = None;
            for _ in 0..3 {
                last = Some(s.record_login_failure("n", t, T).await.unwrap());
                t += 1;
            }
            let until = last.and_then(|l| l.locked_until).unwrap();
            locks.push(until - (t - 1));
            // Attempts during the lock do not extend it.
            let during = s.record_login_failure("n", until - 1, T).await.unwrap();
            assert_eq!(during.locked_until, Some(until));
            t = until;
        }
        assert_eq!(locks, [50, 100, 150, 150], "bounded by max_lockout");
        // An administrator's unlock forgets the name and its (name, source) counters.
        s.record_login_failure("n\u{1f}10.0.0.1", t, T)
            .await
            .unwrap();
        s.record_login_failure("nn", t, T).await.unwrap();
        assert!(s.clear_lockouts_of("n").await.unwrap());
        assert_eq!(s.login_failures("n").await.unwrap(), None);
        assert_eq!(s.login_failures("n\u{1f}10.0.0.1").await.unwrap(), None);
        assert!(
            s.login_failures("nn").await.unwrap().is_some(),
            "another name"
        );
        // Unlocked, the escalation starts over.
        for _ in 0..3 {
            s.record_login_failure("n", t, T).await.unwrap();
        }
        let l = s.login_failures("n").await.unwrap().unwrap();
        assert_eq!(l.locked_until, Some(t + 50));
    }

    #[tokio::test]
    async fn a_limit_of_one_locks_on_the_first_failure() {
        let (s, _d) = store().await;
        let t = Throttle {
            max_failures: 1,
            ..T
        };
        let a = s.record_login_failure("n", 1000, t).await.unwrap();
        assert_eq!(a.locked_until, Some(1050));
    }

    #[tokio::test]
    async fn clear_forgets_and_purge_removes_only_finished_rows_in_batches() {
        let (s, _d) = store().await;
        for i in 0..5 {
            s.record_login_failure(&format!("old{i}"), 1000, T)
                .await
                .unwrap();
        }
        s.record_login_failure("recent", 1150, T).await.unwrap();
        for now in [1000, 1001, 1002] {
            s.record_login_failure("locked", now, T).await.unwrap();
        }
        // At 1101 the old rows' window has passed; "locked" (window 1000) is locked
        // until 1052, so it goes too; "recent" stays.
        assert_eq!(s.purge_login_failures(1101, 100, 2).await.unwrap(), 2);
        assert_eq!(s.purge_login_failures(1101, 100, 2).await.unwrap(), 2);
        assert_eq!(s.purge_login_failures(1101, 100, 2).await.unwrap(), 2);
        assert_eq!(s.purge_login_failures(1101, 100, 2).await.unwrap(), 0);
        assert!(s.login_failures("recent").await.unwrap().is_some());
        s.clear_login_failures("recent").await.unwrap();
        assert_eq!(s.login_failures("recent").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_lock_outliving_its_window_is_not_purged() {
        let (s, _d) = store().await;
        let t = Throttle {
            max_failures: 1,
            window_secs: 10,
            lockout_secs: 1000,
            max_lockout_secs: 1000,
        };
        s.record_login_failure("n", 1000, t).await.unwrap();
        assert_eq!(s.purge_login_failures(1500, 10, 10).await.unwrap(), 0);
        assert_eq!(s.purge_login_failures(2000, 10, 10).await.unwrap(), 1);
    }

    async fn add_session(s: &Store, id: &str, user: &str, revoked: bool) {
        sqlx::query(
            "INSERT INTO sessions (id, username, created_at, expires_at, last_used_at, revoked_at)
             VALUES ($1, $2, 1, 99999, 1, $3)",
        )
        .bind(id)
        .bind(user)
        .bind(revoked.then_some(5_i64))
        .execute(&s.pool)
        .await
        .unwrap();
    }

    async fn session_reason(s: &Store, id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT revoked_reason FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_one(&s.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn password_and_role_changes_revoke_active_sessions_with_their_reason() {
        let (s, _d) = store().await;
        s.insert_user("ann", "admin", Some("$h1"), 10)
            .await
            .unwrap();
        s.insert_user("bob", "admin", None, 10).await.unwrap();
        add_session(&s, "a1", "ann", false).await;
        add_session(&s, "a2", "ann", true).await;
        add_session(&s, "b1", "bob", false).await;

        // Same role again: nothing to revoke.
        let (row, revoked) = s
            .update_user("ann", "admin", Some("admin"), None, 20)
            .await
            .unwrap();
        assert!(revoked.is_empty());
        assert_eq!(row.updated_at, Some(20));

        let (row, revoked) = s
            .update_user("ann", "admin", None, Some("$h2"), 30)
            .await
            .unwrap();
        assert_eq!(revoked, vec!["a1".to_string()]);
        assert!(row.has_password);
        assert_eq!(
            session_reason(&s, "a1").await.as_deref(),
            Some("password-changed")
        );
        assert_eq!(
            session_reason(&s, "a2").await,
            None,
            "already revoked: untouched"
        );

        let (row, revoked) = s
            .update_user("bob", "admin", Some("help-desk"), None, 40)
            .await
            .unwrap();
        assert_eq!(row.role, "help-desk");
        assert_eq!(revoked, vec!["b1".to_string()]);
        assert_eq!(
            session_reason(&s, "b1").await.as_deref(),
            Some("role-changed")
        );

        // The role the permission check saw is gone: conflict, nothing written.
        assert!(matches!(
            s.update_user("bob", "admin", None, Some("$x"), 50).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(!s.get_user("bob").await.unwrap().has_password);
        assert!(matches!(
            s.update_user("nobody", "admin", None, Some("$x"), 50).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn deleting_a_user_revokes_sessions_and_removes_their_api_keys_at_once() {
        let (s, _d) = store().await;
        s.insert_user("ann", "admin", None, 10).await.unwrap();
        add_session(&s, "a1", "ann", false).await;
        for (id, owner, mac) in [("k1", "ann", 1u8), ("k2", "root", 2u8)] {
            sqlx::query(
                "INSERT INTO api_keys (id, name, owner, role, mac, mac_ring, mac_version, hint,
                                       created_at, expires_at)
                 VALUES ($1, 'n', $2, 'admin', $3, 'r', 1, 'hint', 1, 99999)",
            )
            .bind(id)
            .bind(owner)
            .bind(vec![mac])
            .execute(&s.pool)
            .await
            .unwrap();
        }
        let before = s.change_head().await.unwrap();
        assert!(matches!(
            s.delete_user("ann", "help-desk", 20).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.delete_user("ann", "admin", 20).await.unwrap(), vec!["a1"]);
        assert_eq!(
            session_reason(&s, "a1").await.as_deref(),
            Some("user-deleted")
        );
        let left: Vec<String> = s
            .list_api_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(left, vec!["k2".to_string()]);
        use crate::store::changes::Topic;
        let fed: Vec<(Option<Topic>, String)> = s
            .changes_after(before, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.topic, c.key))
            .collect();
        assert_eq!(
            fed,
            vec![
                (Some(Topic::Session), "a1".to_string()),
                (Some(Topic::ApiKeys), "ann".to_string()),
                (Some(Topic::Users), "ann".to_string())
            ],
            "the revoked session and the removed keys reach every replica"
        );
        assert!(matches!(s.get_user("ann").await, Err(StoreError::NotFound)));
        assert!(matches!(
            s.delete_user("ann", "admin", 30).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_taken_username_is_a_conflict_and_the_hash_stays_inside_the_store() {
        let (s, _d) = store().await;
        let row = s.insert_user("ann", "admin", Some("$h"), 10).await.unwrap();
        assert!(matches!(
            s.insert_user("ann", "read-only", None, 11).await,
            Err(StoreError::Conflict(m)) if m.contains("already exists")
        ));
        assert_eq!(s.get_user("ann").await.unwrap(), row);
        assert_eq!(s.list_users().await.unwrap(), vec![row.clone()]);
        let (r, hash) = s.get_user_for_login("ann").await.unwrap().unwrap();
        assert_eq!((r, hash.as_deref()), (row, Some("$h")));
        assert!(s.get_user_for_login("bob").await.unwrap().is_none());
    }
}
}
