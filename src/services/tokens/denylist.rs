//! The in-memory denylist that access-token verification consults.
//!
//! Verification must not touch the store or the hardware, so revocations live here as
//! well as in the store: revoked `jti`s until their token's `exp`, and revoked session
//! ids until the last access token such a session can have been given has expired. The
//! store is the durable copy; [`Denylist::load`] rebuilds this from it at start.

use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Default)]
struct Inner {
    /// jti → until (epoch seconds)
    jtis: HashMap<String, i64>,
    /// session id → until
    sessions: HashMap<String, i64>,
}

#[derive(Default)]
pub struct Denylist {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Denylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denylist").finish_non_exhaustive()
    }
}

impl Denylist {
    /// Loads every entry still in force. `session_window` is how long after its
    /// revocation a session's access tokens can still be unexpired.
    pub async fn load(store: &Store, now: i64, session_window: i64) -> Result<Self, StoreError> {
        let list = Denylist::default();
        for (jti, until) in store.revoked_jtis(now).await? {
            list.deny_jti(jti, until);
        }
        let since = now.saturating_sub(session_window);
        for (sid, revoked_at) in store.recently_revoked_sessions(since).await? {
            list.deny_session(sid, revoked_at.saturating_add(session_window));
        }
        Ok(list)
    }

    pub fn deny_jti(&self, jti: String, until: i64) {
        if let Ok(mut i) = self.inner.write() {
            i.jtis.insert(jti, until);
        }
    }

    pub fn deny_session(&self, sid: String, until: i64) {
        if let Ok(mut i) = self.inner.write() {
            i.sessions.insert(sid, until);
        }
    }

    /// Adds every entry of `other` (kept until the later of the two times).
    pub fn merge(&self, other: Denylist) {
        let other = other
            .inner
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(mut i) = self.inner.write() {
            for (k, until) in other.jtis {
                let e = i.jtis.entry(k).or_insert(until);
                *e = (*e).max(until);
            }
            for (k, until) in other.sessions {
                let e = i.sessions.entry(k).or_insert(until);
                *e = (*e).max(until);
            }
        }
    }

    /// Whether a token with this `jti` (and session) is revoked. A poisoned lock denies:
    /// failing closed is the only safe answer for a revocation check.
    pub fn denied(&self, jti: &str, sid: Option<&str>) -> bool {
        match self.inner.read() {
            Ok(i) => i.jtis.contains_key(jti) || sid.is_some_and(|s| i.sessions.contains_key(s)),
            Err(_) => true,
        }
    }

    /// Drops entries whose tokens have all expired by `now`.
    pub fn sweep(&self, now: i64) -> usize {
        match self.inner.write() {
            Ok(mut i) => {
                let before = i.jtis.len() + i.sessions.len();
                i.jtis.retain(|_, until| *until >= now);
                i.sessions.retain(|_, until| *until >= now);
                before - i.jtis.len() - i.sessions.len()
            }
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_deny_until_swept_after_their_time() {
        let d = Denylist::default();
        d.deny_jti("j1".into(), 100);
        d.deny_session("s1".into(), 200);
        assert!(d.denied("j1", None));
        assert!(d.denied("other", Some("s1")));
        assert!(!d.denied("other", Some("s2")));
        assert_eq!(d.sweep(150), 1);
        assert!(!d.denied("j1", None));
        assert!(d.denied("x", Some("s1")));
        assert_eq!(d.sweep(201), 1);
        assert!(!d.denied("x", Some("s1")));
    }

    #[test]
    fn merging_keeps_the_later_time_of_each_entry() {
        let d = Denylist::default();
        d.deny_jti("j1".into(), 300);
        let other = Denylist::default();
        other.deny_jti("j1".into(), 100);
        other.deny_session("s1".into(), 200);
        d.merge(other);
        assert_eq!(d.sweep(250), 1, "s1 ends at 200, j1 keeps its 300");
        assert!(d.denied("j1", None));
    }
}
