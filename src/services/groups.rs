//! Groups and per-resource grants: who may view, sign with, rotate or administer which
//! key ring.
//!
//! Why it exists: role permissions are all-or-nothing across rings (`keys:sign` signs
//! with every ring). Sites need "the payments gateways may sign with `payments-jwt`, and
//! nothing else". A group holds principals (`docs/roles.md`: a user name, an API key's owner, a
//! key file's accessID, or `<oauth_id>:<sub>`) and grants on resources (`ring:<name>`):
//! `view`, `sign`, `rotate` and `admin`, which implies the other three.
//!
//! What a principal may do on a ring is the union of: its role (`keys:read` views,
//! `keys:sign` signs, `keys:rotate` rotates, and all three with `keys:create` make
//! `admin`), ownership (whoever created a ring holds `admin` on it, when acting with a
//! credential whose role holds `keys:create`: a narrower key owned by the same
//! principal does not inherit it), and its groups' grants. An action must hold its permission on *every* resource it touches
//! ([`GroupService::require_all`]).
//!
//! Managing groups needs `groups:write`. Nobody hands out what they do not hold: adding
//! a grant, or a member to a group, needs every permission that grant or group carries.

use crate::approval_rules::ApproverRule;
use crate::services::approvers::ApproverSets;
use crate::services::authz::{self, Permission, ROOT_PRINCIPAL};
use crate::services::{validate_text, Principal, ServiceError};
use crate::store::groups::{GrantRow, GroupRow, MemberRow};
use crate::store::{Store, StoreError};
use std::fmt;

/// A permission on a key ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RingPermission {
    View,
    Sign,
    Rotate,
    Admin,
}

impl RingPermission {
    pub const ALL: [RingPermission; 4] = [
        RingPermission::View,
        RingPermission::Sign,
        RingPermission::Rotate,
        RingPermission::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RingPermission::View => "view",
            RingPermission::Sign => "sign",
            RingPermission::Rotate => "rotate",
            RingPermission::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Result<RingPermission, ServiceError> {
        RingPermission::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "unknown permission {s:?}; grants take view, sign, rotate and admin"
                ))
            })
    }
}

impl fmt::Display for RingPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The ring named by a resource `ring:<name>`, if it is one.
pub fn ring_of(resource: &str) -> Option<&str> {
    resource.strip_prefix("ring:").filter(|r| !r.is_empty())
}

/// A group with its members and grants.
#[derive(Debug, Clone)]
pub struct Group {
    pub group: GroupRow,
    pub members: Vec<MemberRow>,
    pub grants: Vec<GrantRow>,
}

pub struct GroupService {
    store: Store,
    /// The approver sets of `[approvals]`.
    approvers: std::sync::Arc<ApproverSets>,
    /// `rings.<ring>.signers`: `role:<name>` entries and principal names.
    signers: std::collections::BTreeMap<String, Vec<String>>,
}

impl fmt::Debug for GroupService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupService").finish_non_exhaustive()
    }
}

fn validate_group_name(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "group name {name:?}: use 1-64 characters of A-Z, a-z, 0-9, -, _ and ., starting with a letter or digit"
        )))
    }
}

fn group_not_found(name: &str) -> impl Fn(StoreError) -> ServiceError + '_ {
    move |e| match e {
        StoreError::NotFound => ServiceError::NotFound(format!("no group {name:?}")),
        e => e.into(),
    }
}

impl GroupService {
    /// `approvers`: the sets `[approvals]` names (changing who is in an approver group
    /// needs `super-admins:manage`, and approvals once the set is established);
    /// `signers`: `rings.<ring>.signers` from the configuration.
    pub fn new(
        store: Store,
        approvers: std::sync::Arc<ApproverSets>,
        signers: std::collections::BTreeMap<String, Vec<String>>,
    ) -> GroupService {
        GroupService {
            store,
            approvers,
            signers,
        }
    }

    /// The approver sets this service checks against.
    pub fn approvers(&self) -> &ApproverSets {
        &self.approvers
    }

    fn require_approver_admin(&self, caller: &Principal, group: &str) -> Result<(), ServiceError> {
        if self.approvers.names_group(group) && !caller.role.has(Permission::ManageSuperAdmins) {
            return Err(ServiceError::Forbidden(format!(
                "group {group:?} approves operations ([approvals]); changing its members needs super-admins:manage"
            )));
        }
        Ok(())
    }

    /// Whether `who` holds `perm` on `ring`. The one place ring access is decided, for
    /// every kind of caller: by role (`keys:read` views, `keys:sign` signs, `keys:rotate`
    /// rotates, the three with `keys:create` administer), by a `rings.<ring>.signers`
    /// entry naming the role or (with a credential proving the name) the principal, by
    /// ownership, or by a group grant.
    pub async fn allows(
        &self,
        who: &Principal,
        ring: &str,
        perm: RingPermission,
    ) -> Result<bool, ServiceError> {
        let role = who.role;
        if perm == RingPermission::Sign && self.signer_entry(who, ring) {
            return Ok(true);
        }
        let by_role = match perm {
            RingPermission::View => role.has(Permission::KeysRead),
            RingPermission::Sign => role.has(Permission::KeysSign),
            RingPermission::Rotate => role.has(Permission::KeysRotate),
            RingPermission::Admin => {
                role.has(Permission::KeysCreate)
                    && role.has(Permission::KeysRotate)
                    && role.has(Permission::KeysSign)
            }
        };
        if by_role {
            return Ok(true);
        }
        // What belongs to a name needs a credential that proves the name: a custom token
        // (whose subject its minter chose) acts with its role alone.
        if !who.proves_identity() {
            return Ok(false);
        }
        // Ownership speaks only through credentials that could have created the ring:
        // a gateway key owned by the same principal does not inherit admin over it. Rings
        // made by `root` (configuration, CLI, bootstrap) are the installation's, nobody's.
        if role.has(Permission::KeysCreate)
            && who.name != ROOT_PRINCIPAL
            && self.store.ring_owner(ring).await?.as_deref() == Some(who.name.as_str())
        {
            return Ok(true);
        }
        let granted = self
            .store
            .granted(&who.name, &format!("ring:{ring}"))
            .await?;
        Ok(granted
            .iter()
            .any(|g| g == perm.name() || g == RingPermission::Admin.name()))
    }

    /// Whether `rings.<ring>.signers` names the caller: `role:<one of its roles>`, or its
    /// name when the credential proves the name (never a custom token's subject).
    fn signer_entry(&self, who: &Principal, ring: &str) -> bool {
        let by_name = who.proves_identity();
        self.signers.get(ring).is_some_and(|entries| {
            entries.iter().any(|e| match e.strip_prefix("role:") {
                Some(r) => who.role.name().split('+').any(|n| n == r),
                None => by_name && *e == who.name,
            })
        })
    }

    /// Refuses unless `who` holds every `(ring, permission)` pair: an action is allowed
    /// only with the permission on every resource it touches.
    pub async fn require_all(
        &self,
        who: &Principal,
        needs: &[(&str, RingPermission)],
    ) -> Result<(), ServiceError> {
        for (ring, perm) in needs {
            if !self.allows(who, ring, *perm).await? {
                return Err(ServiceError::Forbidden(format!(
                    "no {perm} grant on ring {ring:?} for this caller"
                )));
            }
        }
        Ok(())
    }

    /// Refuses unless `caller` holds every permission the grants carry.
    async fn require_grants(
        &self,
        caller: &Principal,
        grants: &[GrantRow],
    ) -> Result<(), ServiceError> {
        for g in grants {
            let Some(ring) = ring_of(&g.resource) else {
                continue;
            };
            for p in &g.permissions {
                let perm = RingPermission::parse(p)?;
                if !self.allows(caller, ring, perm).await? {
                    return Err(ServiceError::Forbidden(format!(
                        "you may not hand out {perm} on ring {ring:?}: you do not hold it"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn load(&self, name: &str) -> Result<Group, ServiceError> {
        let group = self
            .store
            .get_group(name)
            .await
            .map_err(group_not_found(name))?;
        Ok(Group {
            members: self.store.list_members(name).await?,
            grants: self.store.list_grants(name).await?,
            group,
        })
    }

    pub async fn list(&self, caller: &Principal) -> Result<Vec<Group>, ServiceError> {
        authz::require(caller.role, Permission::GroupsRead, "read groups")?;
        let mut out = Vec::new();
        for g in self.store.list_groups().await? {
            out.push(self.load(&g.name).await?);
        }
        Ok(out)
    }

    pub async fn get(&self, caller: &Principal, name: &str) -> Result<Group, ServiceError> {
        authz::require(caller.role, Permission::GroupsRead, "read groups")?;
        self.load(name).await
    }

    pub async fn create(
        &self,
        caller: &Principal,
        name: &str,
        description: Option<String>,
        now: i64,
    ) -> Result<Group, ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        validate_group_name(name)?;
        let description = description.unwrap_or_default();
        validate_text("description", &description, 1024, false)?;
        self.store
            .insert_group(&GroupRow {
                name: name.to_string(),
                description,
                created_by: caller.name.clone(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        tracing::info!(group = %name, by = %caller.name, "created group");
        self.load(name).await
    }

    pub async fn update(
        &self,
        caller: &Principal,
        name: &str,
        description: String,
        now: i64,
    ) -> Result<Group, ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        validate_text("description", &description, 1024, false)?;
        self.store
            .update_group(name, &description, now)
            .await
            .map_err(group_not_found(name))?;
        self.load(name).await
    }

    pub async fn delete(&self, caller: &Principal, name: &str) -> Result<(), ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        self.require_approver_admin(caller, name)?;
        // Deleting an approver group would drop every approver in it at once, below the
        // people its rules require: remove it from `[approvals]` first.
        if self.approvers.names_group(name) {
            return Err(ServiceError::Conflict(format!(
                "group {name:?} approves operations ([approvals]); remove it from the configuration first"
            )));
        }
        self.store
            .delete_group(name)
            .await
            .map_err(group_not_found(name))?;
        tracing::info!(group = %name, by = %caller.name, "deleted group");
        Ok(())
    }

    pub async fn members(
        &self,
        caller: &Principal,
        name: &str,
    ) -> Result<Vec<MemberRow>, ServiceError> {
        authz::require(caller.role, Permission::GroupsRead, "read groups")?;
        Ok(self.load(name).await?.members)
    }

    /// May `caller` add `principal` to group `name` (`add`) or take them out? The check of
    /// a membership change, before any approvals (operation `change-approvers` for an
    /// approver group): `groups:write`, `super-admins:manage` for an approver group, every
    /// grant the group carries (to add), and a removal must leave an approver group with
    /// at least the people its rules require.
    pub async fn check_member_change(
        &self,
        caller: &Principal,
        name: &str,
        principal: &str,
        add: bool,
    ) -> Result<(), ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        validate_text("principal", principal, 256, true)?;
        self.require_approver_admin(caller, name)?;
        let group = self.load(name).await?;
        if add {
            self.require_grants(caller, &group.grants).await?;
        } else {
            if !group.members.iter().any(|m| m.principal == principal) {
                return Err(ServiceError::NotFound(format!(
                    "{principal:?} is not a member of group {name:?}"
                )));
            }
            self.approvers
                .check_not_below_quorum(
                    &ApproverRule::Group(name.to_string()),
                    &[principal.to_string()],
                )
                .await?;
        }
        Ok(())
    }

    /// Applies a membership change checked by [`Self::check_member_change`] (and approved
    /// when it needed approvals); `by` is the requester.
    pub async fn apply_member_change(
        &self,
        name: &str,
        principal: &str,
        add: bool,
        by: &str,
        now: i64,
    ) -> Result<(), ServiceError> {
        if add {
            self.store
                .add_member(name, principal, by, now)
                .await
                .map_err(group_not_found(name))?;
        } else {
            self.store
                .remove_member(name, principal)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => ServiceError::NotFound(format!(
                        "{principal:?} is not a member of group {name:?}"
                    )),
                    e => e.into(),
                })?;
        }
        tracing::info!(group = %name, member = %principal, add, by = %by, "changed group membership");
        Ok(())
    }

    /// Adds `principal`; returns false when it already was a member.
    pub async fn add_member(
        &self,
        caller: &Principal,
        name: &str,
        principal: &str,
        now: i64,
    ) -> Result<bool, ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        validate_text("principal", principal, 256, true)?;
        self.require_approver_admin(caller, name)?;
        let group = self.load(name).await?;
        self.require_grants(caller, &group.grants).await?;
        let added = self
            .store
            .add_member(name, principal, &caller.name, now)
            .await
            .map_err(group_not_found(name))?;
        if added {
            tracing::info!(group = %name, member = %principal, by = %caller.name, "added group member");
        }
        Ok(added)
    }

    pub async fn remove_member(
        &self,
        caller: &Principal,
        name: &str,
        principal: &str,
    ) -> Result<(), ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        self.require_approver_admin(caller, name)?;
        self.approvers
            .check_not_below_quorum(
                &ApproverRule::Group(name.to_string()),
                &[principal.to_string()],
            )
            .await?;
        self.store
            .remove_member(name, principal)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ServiceError::NotFound(format!(
                    "{principal:?} is not a member of group {name:?}"
                )),
                e => e.into(),
            })?;
        tracing::info!(group = %name, member = %principal, by = %caller.name, "removed group member");
        Ok(())
    }

    pub async fn grants(
        &self,
        caller: &Principal,
        name: &str,
    ) -> Result<Vec<GrantRow>, ServiceError> {
        authz::require(caller.role, Permission::GroupsRead, "read groups")?;
        Ok(self.load(name).await?.grants)
    }

    /// Sets the group's grant on `resource`. `ring_exists` tells whether a ring exists.
    pub async fn put_grant(
        &self,
        caller: &Principal,
        name: &str,
        resource: &str,
        permissions: &[String],
        ring_exists: impl Fn(&str) -> bool,
        now: i64,
    ) -> Result<GrantRow, ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        let ring = ring_of(resource).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "resource {resource:?}: grants name a key ring as ring:<name>"
            ))
        })?;
        if !ring_exists(ring) {
            return Err(ServiceError::Invalid(format!("no key ring {ring:?}")));
        }
        if permissions.is_empty() {
            return Err(ServiceError::Invalid(
                "permissions must name at least one of view, sign, rotate, admin".into(),
            ));
        }
        let mut perms: Vec<RingPermission> = permissions
            .iter()
            .map(|p| RingPermission::parse(p))
            .collect::<Result<_, _>>()?;
        perms.sort();
        perms.dedup();
        let names: Vec<String> = perms.iter().map(|p| p.name().to_string()).collect();
        let grant = GrantRow {
            resource: resource.to_string(),
            permissions: names,
            granted_by: caller.name.clone(),
            granted_at: now,
        };
        self.require_grants(caller, std::slice::from_ref(&grant))
            .await?;
        self.store
            .put_grant(name, resource, &grant.permissions, &caller.name, now)
            .await
            .map_err(group_not_found(name))?;
        tracing::info!(group = %name, resource = %resource, permissions = ?grant.permissions,
            by = %caller.name, "granted");
        Ok(grant)
    }

    pub async fn delete_grant(
        &self,
        caller: &Principal,
        name: &str,
        resource: &str,
    ) -> Result<(), ServiceError> {
        authz::require(caller.role, Permission::GroupsWrite, "manage groups")?;
        self.store
            .delete_grant(name, resource)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    ServiceError::NotFound(format!("group {name:?} has no grant on {resource:?}"))
                }
                e => e.into(),
            })?;
        tracing::info!(group = %name, resource = %resource, by = %caller.name, "revoked grant");
        Ok(())
    }

    /// The groups `principal` belongs to.
    pub async fn groups_of(&self, principal: &str) -> Result<Vec<String>, ServiceError> {
        Ok(self.store.groups_of(principal).await?)
    }

    /// Every membership as (principal, group).
    pub async fn all_memberships(&self) -> Result<Vec<(String, String)>, ServiceError> {
        Ok(self.store.all_memberships().await?)
    }

    /// The one rule for acting as another principal (docs/architecture.md,
    /// "Principals"). Checked before anything that lets the caller speak as `principal`:
    /// a credential owned by it (API key, key file), a new password, a re-keyed key file
    /// or IdP, a new user of a name groups already list.
    ///
    /// The caller's own name needs a credential proving it (a custom token's subject is
    /// not the caller). For any other name the caller must hold everything that belongs
    /// to it: every grant of its groups, admin on the rings it owns, and `sign` on every
    /// ring whose `signers` names it. And nobody acts as an approver (by role, group or
    /// name): approvers' credentials are made by themselves, so that one person can never
    /// cast another's vote (docs/lifecycle.md).
    pub async fn require_can_act_as(
        &self,
        caller: &Principal,
        principal: &str,
    ) -> Result<(), ServiceError> {
        if caller.name == principal && caller.proves_identity() {
            return Ok(());
        }
        if let Some(set) = self.approvers.sets_of(principal).await?.first() {
            return Err(ServiceError::Forbidden(format!(
                "{principal:?} is an approver ({set}); only they can create or reset their own credentials"
            )));
        }
        for (ring, entries) in &self.signers {
            if entries.iter().any(|e| e == principal)
                && !self.allows(caller, ring, RingPermission::Sign).await?
            {
                return Err(ServiceError::Forbidden(format!(
                    "{principal:?} is a configured signer of ring {ring:?}, and you may not sign with it"
                )));
            }
        }
        for g in self.store.groups_of(principal).await? {
            let grants = self.store.list_grants(&g).await?;
            self.require_grants(caller, &grants).await.map_err(|_| {
                ServiceError::Forbidden(format!(
                    "{principal:?} belongs to group {g:?}, whose grants you do not hold"
                ))
            })?;
        }
        for ring in self.store.rings_owned_by(principal).await? {
            if !self.allows(caller, &ring, RingPermission::Admin).await? {
                return Err(ServiceError::Forbidden(format!(
                    "{principal:?} owns ring {ring:?}, and you do not hold admin on it"
                )));
            }
        }
        Ok(())
    }

    /// [`Self::require_can_act_as`] for every principal `<oauth_id>:<sub>` of an OAuth
    /// server: changing its issuer or keys lets whoever controls the new ones speak for
    /// all of them.
    pub async fn require_can_act_as_all_under(
        &self,
        caller: &Principal,
        prefix: &str,
    ) -> Result<(), ServiceError> {
        let mut names = self.store.principals_under(prefix).await?;
        // Names the configuration gives rights to count as much as the store's: an
        // approver named `principal:<oauth_id>:<sub>` and a `signers` entry.
        for rule in self.approvers.sets() {
            if let crate::approval_rules::ApproverRule::Principal(p) = rule {
                if p.starts_with(prefix) {
                    names.push(p);
                }
            }
        }
        for entries in self.signers.values() {
            names.extend(entries.iter().filter(|e| e.starts_with(prefix)).cloned());
        }
        names.sort();
        names.dedup();
        for p in names {
            self.require_can_act_as(caller, &p).await?;
        }
        Ok(())
    }

    /// Checks that `caller` may set a principal's groups to `groups` (they exist, and
    /// the caller holds all their grants), before anything is stored. Changing
    /// memberships at all, even to none, needs `groups:write`.
    pub async fn check_assignable(
        &self,
        caller: &Principal,
        groups: &[String],
    ) -> Result<(), ServiceError> {
        authz::require(
            caller.role,
            Permission::GroupsWrite,
            "manage group membership",
        )?;
        for g in groups {
            self.require_approver_admin(caller, g)?;
            let group = match self.store.get_group(g).await {
                Ok(_) => self.load(g).await?,
                Err(StoreError::NotFound) => {
                    return Err(ServiceError::Invalid(format!("no group {g:?}")))
                }
                Err(e) => return Err(e.into()),
            };
            self.require_grants(caller, &group.grants).await?;
        }
        Ok(())
    }

    /// Makes `principal` a member of exactly `groups` (after [`Self::check_assignable`]).
    pub async fn set_groups_of(
        &self,
        caller: &Principal,
        principal: &str,
        groups: &[String],
        now: i64,
    ) -> Result<(), ServiceError> {
        self.check_assignable(caller, groups).await?;
        for left in self.store.groups_of(principal).await? {
            if !groups.contains(&left) {
                self.require_approver_admin(caller, &left)?;
                self.approvers
                    .check_not_below_quorum(&ApproverRule::Group(left), &[principal.to_string()])
                    .await?;
            }
        }
        self.store
            .set_groups_of(principal, groups, &caller.name, now)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => ServiceError::Invalid(m),
                e => e.into(),
            })?;
        tracing::info!(principal = %principal, groups = ?groups, by = %caller.name, "set groups");
        Ok(())
    }
}
