//! Roles and permissions.
//!
//! Built-in roles are fixed sets of permissions. "Higher" is defined by inclusion: role A
//! is at or below role B when every permission of A is also in B. That one rule answers
//! "may this caller create a key with that role" without a hand-kept ranking, and stays
//! right when custom roles arrive.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `Forbidden("role <role> may not <action>")` unless `role` holds `p`.
pub fn require(
    role: Role,
    p: Permission,
    action: &str,
) -> Result<(), crate::services::ServiceError> {
    if role.has(p) {
        Ok(())
    } else {
        Err(crate::services::ServiceError::Forbidden(format!(
            "role {role} may not {action}"
        )))
    }
}

/// The built-in super-admin principal that owns CLI-made keys; it always exists.
pub const ROOT_PRINCIPAL: &str = "root";

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    KeysRead,
    KeysCreate,
    KeysRotate,
    KeysDestroy,
    /// The `sign` grant on every ring (the signing service).
    KeysSign,
    ApiKeysRead,
    ApiKeysWrite,
    UsersRead,
    UsersWrite,
    ManageSuperAdmins,
    TokensCustom,
    TokensIntrospect,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::KeysRead => "keys:read",
            Permission::KeysCreate => "keys:create",
            Permission::KeysRotate => "keys:rotate",
            Permission::KeysDestroy => "keys:destroy",
            Permission::KeysSign => "keys:sign",
            Permission::ApiKeysRead => "api-keys:read",
            Permission::ApiKeysWrite => "api-keys:write",
            Permission::UsersRead => "users:read",
            Permission::UsersWrite => "users:write",
            Permission::ManageSuperAdmins => "super-admins:manage",
            Permission::TokensCustom => "tokens:custom",
            Permission::TokensIntrospect => "tokens:introspect",
        }
    }
}

/// The built-in roles of API.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    SuperAdmin,
    Admin,
    HelpDesk,
    ReadOnly,
    Gateway,
}

use Permission::*;

const SUPER_ADMIN: &[Permission] = &[
    KeysRead,
    KeysCreate,
    KeysRotate,
    KeysDestroy,
    KeysSign,
    ApiKeysRead,
    ApiKeysWrite,
    UsersRead,
    UsersWrite,
    ManageSuperAdmins,
    TokensCustom,
    TokensIntrospect,
];
const ADMIN: &[Permission] = &[
    KeysRead,
    KeysCreate,
    KeysRotate,
    KeysSign,
    ApiKeysRead,
    ApiKeysWrite,
    UsersRead,
    UsersWrite,
    TokensCustom,
    TokensIntrospect,
];
const HELP_DESK: &[Permission] = &[KeysRead, ApiKeysRead, ApiKeysWrite, UsersRead, UsersWrite];
const READ_ONLY: &[Permission] = &[KeysRead, ApiKeysRead, UsersRead];
const GATEWAY: &[Permission] = &[TokensIntrospect];

impl Role {
    pub const ALL: [Role; 5] = [
        Role::SuperAdmin,
        Role::Admin,
        Role::HelpDesk,
        Role::ReadOnly,
        Role::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super-admin",
            Role::Admin => "admin",
            Role::HelpDesk => "help-desk",
            Role::ReadOnly => "read-only",
            Role::Gateway => "gateway",
        }
    }

    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Role::SuperAdmin => SUPER_ADMIN,
            Role::Admin => ADMIN,
            Role::HelpDesk => HELP_DESK,
            Role::ReadOnly => READ_ONLY,
            Role::Gateway => GATEWAY,
        }
    }

    pub fn has(self, p: Permission) -> bool {
        self.permissions().contains(&p)
    }

    /// True when `other` grants nothing this role lacks.
    pub fn covers(self, other: Role) -> bool {
        other.permissions().iter().all(|p| self.has(*p))
    }

    /// May a principal with this role act for, or manage, a principal or credential with
    /// role `target`? It must cover `target`, and a super-admin target also needs
    /// `super-admins:manage`. The one rule behind managing users and API keys, creating
    /// keys in another owner's name, ending others' sessions and minting tokens for them.
    pub fn manages(self, target: Role) -> bool {
        self.covers(target)
            && (target != Role::SuperAdmin || self.has(Permission::ManageSuperAdmins))
    }

    /// `read-only` may use safe methods only (API.md).
    pub fn read_only(self) -> bool {
        self == Role::ReadOnly
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown role {s:?}; built-in roles are super-admin, admin, help-desk, read-only, gateway"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_admin_covers_every_role_and_nothing_covers_super_admin_but_itself() {
        for r in Role::ALL {
            assert!(Role::SuperAdmin.covers(r), "{r}");
            assert_eq!(r.covers(Role::SuperAdmin), r == Role::SuperAdmin, "{r}");
        }
    }

    #[test]
    fn admin_cannot_destroy_keys_or_manage_super_admins() {
        assert!(!Role::Admin.has(Permission::KeysDestroy));
        assert!(!Role::Admin.has(Permission::ManageSuperAdmins));
        assert!(Role::Admin.covers(Role::HelpDesk));
        assert!(Role::Admin.covers(Role::Gateway));
    }

    #[test]
    fn help_desk_stays_below_admin_and_read_only_below_help_desk() {
        assert!(!Role::HelpDesk.covers(Role::Admin));
        assert!(Role::HelpDesk.covers(Role::ReadOnly));
        assert!(!Role::ReadOnly.covers(Role::HelpDesk));
        assert!(!Role::Gateway.covers(Role::ReadOnly));
    }

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.name().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
