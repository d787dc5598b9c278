//! Roles and permissions.
//!
//! A role is a name and a set of permissions. The built-in roles (`docs/roles.md`) are constants;
//! custom roles (`/api/v1/roles`, see [`crate::services::roles`]) are made at run time
//! from the same permissions. "Higher" is defined by inclusion: role A is at or below
//! role B when every permission of A is also in B. That one rule answers "may this caller
//! create a key with that role" without a hand-kept ranking, and it holds for custom
//! roles and for the union of roles an IdP token maps to.

use crate::cluster::snapshot::Snapshot;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

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
pub use crate::names::ROOT_PRINCIPAL;

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
    KeyFilesRead,
    KeyFilesWrite,
    OAuthServersRead,
    OAuthServersWrite,
    RolesRead,
    RolesWrite,
    GroupsRead,
    GroupsWrite,
    /// Reading the audit log (`GET /api/v1/audit`).
    AuditRead,
    /// CA profiles and TLS reloads: who may admit client certificates (super-admin only).
    TlsAdmin,
}

impl Permission {
    pub const ALL: [Permission; 22] = [
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
        KeyFilesRead,
        KeyFilesWrite,
        OAuthServersRead,
        OAuthServersWrite,
        RolesRead,
        RolesWrite,
        GroupsRead,
        GroupsWrite,
        AuditRead,
        TlsAdmin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeysRead => "keys:read",
            KeysCreate => "keys:create",
            KeysRotate => "keys:rotate",
            KeysDestroy => "keys:destroy",
            KeysSign => "keys:sign",
            ApiKeysRead => "api-keys:read",
            ApiKeysWrite => "api-keys:write",
            UsersRead => "users:read",
            UsersWrite => "users:write",
            ManageSuperAdmins => "super-admins:manage",
            TokensCustom => "tokens:custom",
            TokensIntrospect => "tokens:introspect",
            KeyFilesRead => "key-files:read",
            KeyFilesWrite => "key-files:write",
            OAuthServersRead => "oauth-servers:read",
            OAuthServersWrite => "oauth-servers:write",
            RolesRead => "roles:read",
            RolesWrite => "roles:write",
            GroupsRead => "groups:read",
            GroupsWrite => "groups:write",
            AuditRead => "audit:read",
            TlsAdmin => "tls:admin",
        }
    }

    const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown permission {s:?}"))
    }
}

/// A set of permissions, as a bit set so that [`Role`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermSet(u32);

impl PermSet {
    pub const fn of(perms: &[Permission]) -> PermSet {
        let mut bits = 0;
        let mut i = 0;
        while i < perms.len() {
            bits |= perms[i].bit();
            i += 1;
        }
        PermSet(bits)
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_superset(self, other: PermSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: PermSet) -> PermSet {
        PermSet(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::name).collect()
    }
}

impl fmt::Debug for PermSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// A role: a name and the permissions it grants. Names are interned so the role stays
/// `Copy`; custom role names are few and bounded (`roles` table), so interning keeps at
/// most one small string per distinct name ever seen.
///
/// A custom role's permissions are looked up in the process's role table at each check,
/// so a `PATCH /api/v1/roles/{name}` applies at once to every key, user and token
/// holding the role, and a deleted role grants nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Role {
    name: &'static str,
    perms: Perms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Perms {
    /// Built-in roles and unions: the set is part of the value.
    Fixed(PermSet),
    /// A custom role: the set lives in [`CUSTOM`].
    Custom,
}

/// The custom roles of this process, kept current by [`crate::services::roles`]. One
/// keygate runtime per process: the table mirrors that runtime's `roles` table.
static CUSTOM: std::sync::LazyLock<Snapshot<CustomTable>> =
    std::sync::LazyLock::new(Snapshot::default);

/// Custom role name → its permissions.
pub type CustomTable = HashMap<&'static str, CustomRole>;

/// A custom role's permissions and when it was created.
#[derive(Debug, Clone, Copy)]
pub struct CustomRole {
    pub perms: PermSet,
    pub created_at: i64,
}

fn custom_table() -> Arc<CustomTable> {
    CUSTOM.get()
}

/// The process's custom role table, a [`Snapshot`] the role service reloads.
pub fn custom_roles() -> &'static Snapshot<CustomTable> {
    &CUSTOM
}

/// A custom role table from names and permissions (names are interned for the process).
pub fn custom_table_of(roles: impl IntoIterator<Item = (String, CustomRole)>) -> CustomTable {
    roles.into_iter().map(|(n, p)| (intern(&n), p)).collect()
}

use Permission::*;

const SUPER_ADMIN: PermSet = PermSet::of(&Permission::ALL);
const ADMIN: PermSet = PermSet::of(&[
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
    KeyFilesRead,
    KeyFilesWrite,
    OAuthServersRead,
    OAuthServersWrite,
    RolesRead,
    RolesWrite,
    GroupsRead,
    GroupsWrite,
    AuditRead,
]);
const HELP_DESK: PermSet = PermSet::of(&[
    KeysRead,
    ApiKeysRead,
    ApiKeysWrite,
    UsersRead,
    UsersWrite,
    KeyFilesRead,
    KeyFilesWrite,
    OAuthServersRead,
    RolesRead,
    GroupsRead,
    AuditRead,
]);
const READ_ONLY: PermSet = PermSet::of(&[
    KeysRead,
    ApiKeysRead,
    UsersRead,
    KeyFilesRead,
    OAuthServersRead,
    RolesRead,
    GroupsRead,
    AuditRead,
]);
const GATEWAY: PermSet = PermSet::of(&[TokensIntrospect]);

static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

fn intern(name: &str) -> &'static str {
    if let Some(r) = Role::ALL.iter().find(|r| r.name == name) {
        return r.name;
    }
    let mut guard = match INTERNED.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let set = guard.get_or_insert_with(HashSet::new);
    if let Some(s) = set.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(s);
    s
}

#[allow(non_upper_case_globals)]
impl Role {
    pub const SuperAdmin: Role = Role {
        name: "super-admin",
        perms: Perms::Fixed(SUPER_ADMIN),
    };
    pub const Admin: Role = Role {
        name: "admin",
        perms: Perms::Fixed(ADMIN),
    };
    pub const HelpDesk: Role = Role {
        name: "help-desk",
        perms: Perms::Fixed(HELP_DESK),
    };
    pub const ReadOnly: Role = Role {
        name: "read-only",
        perms: Perms::Fixed(READ_ONLY),
    };
    pub const Gateway: Role = Role {
        name: "gateway",
        perms: Perms::Fixed(GATEWAY),
    };

    /// The built-in roles (`docs/roles.md`).
    pub const ALL: [Role; 5] = [
        Role::SuperAdmin,
        Role::Admin,
        Role::HelpDesk,
        Role::ReadOnly,
        Role::Gateway,
    ];

    /// The built-in role of that name, if there is one.
    pub fn builtin(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name == name)
    }

    /// The built-in or custom role of that name, if it exists now.
    pub fn lookup(name: &str) -> Option<Role> {
        Role::builtin(name).or_else(|| {
            custom_table().get_key_value(name).map(|(n, _)| Role {
                name: n,
                perms: Perms::Custom,
            })
        })
    }

    /// A role with exactly these permissions, for checks on a proposed custom role.
    pub fn proposed(perms: PermSet) -> Role {
        Role {
            name: "(proposed)",
            perms: Perms::Fixed(perms),
        }
    }

    pub fn is_builtin(self) -> bool {
        Role::ALL.contains(&self)
    }

    /// The union of several roles: named `a+b`, holding every permission of each.
    pub fn union(roles: &[Role]) -> Option<Role> {
        match roles {
            [] => None,
            [one] => Some(*one),
            many => {
                let mut names: Vec<&str> = many.iter().map(|r| r.name).collect();
                names.sort_unstable();
                names.dedup();
                let perms = many
                    .iter()
                    .fold(PermSet::default(), |acc, r| acc.union(r.permissions()));
                Some(Role {
                    name: intern(&names.join("+")),
                    perms: Perms::Fixed(perms),
                })
            }
        }
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    pub fn permissions(self) -> PermSet {
        match self.perms {
            Perms::Fixed(p) => p,
            Perms::Custom => custom_table()
                .get(self.name)
                .map(|c| c.perms)
                .unwrap_or_default(),
        }
    }

    /// When a custom role was created (`None` for built-in roles and unions). A token
    /// issued before then named an earlier role of the same name.
    pub fn custom_since(self) -> Option<i64> {
        match self.perms {
            Perms::Fixed(_) => None,
            Perms::Custom => custom_table().get(self.name).map(|c| c.created_at),
        }
    }

    pub fn has(self, p: Permission) -> bool {
        self.permissions().contains(p)
    }

    /// True when `other` grants nothing this role lacks.
    pub fn covers(self, other: Role) -> bool {
        self.permissions().is_superset(other.permissions())
    }

    /// May a principal with this role act for, or manage, a principal or credential with
    /// role `target`? It must cover `target`, and a target holding `super-admins:manage`
    /// also needs it. The one rule behind managing users and API keys, creating keys in
    /// another owner's name, ending others' sessions and minting tokens for them.
    pub fn manages(self, target: Role) -> bool {
        self.covers(target) && (!target.has(ManageSuperAdmins) || self.has(ManageSuperAdmins))
    }

    /// `read-only` may use safe methods only (`docs/roles.md`). That is the built-in role's rule;
    /// a custom role can do only what its permissions allow anyway.
    pub fn read_only(self) -> bool {
        self.name == Role::ReadOnly.name
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl utoipa::PartialSchema for Role {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A role name: super-admin, admin, help-desk, read-only, gateway, or a custom role",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Role {}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Parses a built-in role or a custom role that exists now.
impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::lookup(s).ok_or_else(|| format!("unknown role {s:?}; the built-in roles are super-admin, admin, help-desk, read-only and gateway, and GET /api/v1/roles lists the custom ones"))
    }
}

impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
        assert!("root"
            .parse::<Role>()
            .is_err_and(|e| e.starts_with("unknown role \"root\"")));
    }

    #[test]
    fn a_union_holds_every_permission_of_its_roles_and_nothing_more() {
        let u = Role::union(&[Role::Gateway, Role::ReadOnly]).unwrap();
        assert_eq!(u.name(), "gateway+read-only");
        assert!(u.has(Permission::TokensIntrospect) && u.has(Permission::KeysRead));
        assert!(!u.has(Permission::KeysCreate));
        assert!(u.covers(Role::Gateway) && u.covers(Role::ReadOnly));
        assert!(
            !u.read_only(),
            "only the built-in read-only role is GET-only"
        );
        assert_eq!(Role::union(&[Role::Admin]), Some(Role::Admin));
        assert_eq!(Role::union(&[]), None);
    }

    #[test]
    fn permission_names_round_trip_and_the_set_lists_them_in_order() {
        for p in Permission::ALL {
            assert_eq!(p.name().parse::<Permission>(), Ok(p));
        }
        let set = PermSet::of(&[Permission::UsersRead, Permission::KeysRead]);
        assert_eq!(set.names(), ["keys:read", "users:read"]);
        assert!(PermSet::of(&Permission::ALL).is_superset(set));
    }

    #[test]
    fn help_desk_covers_read_only_so_it_can_hand_out_read_only_credentials() {
        assert!(Role::HelpDesk.covers(Role::ReadOnly));
        assert!(Role::Admin.covers(Role::HelpDesk));
    }
}
