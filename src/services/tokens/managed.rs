//! The live sessions of the users a caller manages, for the console's Sessions page
//! (docs/console.md). The rule is the one [`TokenService::end_session`] applies to
//! ending someone else's session: `users:write` and a role that manages the owner's.

use super::{SessionInfo, TokenService};
use crate::services::authz::{self, Permission, Role};
use crate::services::{Principal, ServiceError};

impl TokenService {
    /// Live sessions of every other user whose role the caller manages, by user name
    /// then newest first. Users whose stored role no longer exists are left out (their
    /// sessions cannot be used).
    pub async fn list_managed_sessions(
        &self,
        caller: &Principal,
        now: i64,
    ) -> Result<Vec<SessionInfo>, ServiceError> {
        authz::require(
            caller.role,
            Permission::UsersWrite,
            "list other users' sessions",
        )?;
        let mut users = self.store.list_users().await?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        let mut out = Vec::new();
        for u in users {
            if u.username == caller.name {
                continue;
            }
            let Ok(role) = u.role.parse::<Role>() else {
                continue;
            };
            if !caller.role.manages(role) {
                continue;
            }
            let rows = self.store.list_sessions(&u.username, now).await?;
            out.extend(rows.into_iter().map(|s| SessionInfo {
                current: false,
                id: s.id,
                username: s.username,
                created_at: s.created_at,
                expires_at: s.expires_at,
                last_used_at: s.last_used_at,
            }));
        }
        Ok(out)
    }
}
