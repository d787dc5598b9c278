//! Approver sets: who may approve which operation, how many people each set holds, and
//! whether it is *established* (docs/lifecycle.md, "Enrollment").
//!
//! An approver set is what one rule of `[approvals.<op>].approvers` names: everyone with a
//! role, the members of a group, or one named principal. Its people are the users (and
//! IdP subjects, for groups and names) it holds, plus `root` for `role:super-admin`. A
//! set is established once it holds at least `required + 1` people, where `required` is
//! the strictest count of the rules naming it: then it can decide on its own, even on a
//! request one of its members made. From that moment, changing who is in it is itself an
//! operation that needs `required` approvals from the set; before it, enrolling is open
//! (the bootstrap exception) to whoever holds `super-admins:manage`.

use crate::approval_rules::{ApprovalOperation, ApproverRule};
use crate::config::ApprovalsConfig;
use crate::services::authz::{Role, ROOT_PRINCIPAL};
use crate::services::{Principal, ServiceError};
use crate::store::{Store, StoreError};

/// The approver rules in force, from `[approvals]`.
pub struct ApproverSets {
    store: Store,
    /// Every gated operation (required > 0) with its rule.
    rules: Vec<(ApprovalOperation, u32, Vec<ApproverRule>)>,
}

impl std::fmt::Debug for ApproverSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproverSets")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl ApproverSets {
    pub fn new(store: Store, config: &ApprovalsConfig) -> ApproverSets {
        let rules = ApprovalOperation::ALL
            .into_iter()
            .filter(|op| *op != ApprovalOperation::ChangeApprovers)
            .map(|op| {
                let r = config.rule(op);
                (op, r.required, r.approvers)
            })
            .filter(|(_, required, _)| *required > 0)
            .collect();
        ApproverSets { store, rules }
    }

    /// Every distinct approver rule of a gated operation.
    pub fn sets(&self) -> Vec<ApproverRule> {
        let mut out: Vec<ApproverRule> = self
            .rules
            .iter()
            .flat_map(|(_, _, a)| a.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The strictest `required` of the gated operations naming `set` (0: none does).
    pub fn required(&self, set: &ApproverRule) -> u32 {
        self.rules
            .iter()
            .filter(|(_, _, a)| a.contains(set))
            .map(|(_, r, _)| *r)
            .max()
            .unwrap_or(0)
    }

    /// Whether group `g` approves any gated operation.
    pub fn names_group(&self, g: &str) -> bool {
        self.sets()
            .iter()
            .any(|s| matches!(s, ApproverRule::Group(x) if x == g))
    }

    /// Whether role `r` (or one of the roles of a union) approves any gated operation.
    pub fn names_role(&self, r: Role) -> bool {
        self.sets().iter().any(|s| match s {
            ApproverRule::Role(x) => r.name().split('+').any(|n| n == x),
            _ => false,
        })
    }

    /// The people set `set` holds now.
    pub async fn people(&self, set: &ApproverRule) -> Result<Vec<String>, ServiceError> {
        Ok(match set {
            ApproverRule::Role(r) => {
                let mut out: Vec<String> = self
                    .store
                    .list_users()
                    .await?
                    .into_iter()
                    .filter(|u| u.role == *r)
                    .map(|u| u.username)
                    .collect();
                if r == Role::SuperAdmin.name() {
                    out.push(ROOT_PRINCIPAL.to_string());
                }
                out
            }
            ApproverRule::Group(g) => {
                let members = match self.store.list_members(g).await {
                    Ok(m) => m,
                    Err(StoreError::NotFound) => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
                let mut out = Vec::new();
                for m in members {
                    if self.is_person(&m.principal).await? {
                        out.push(m.principal);
                    }
                }
                out
            }
            ApproverRule::Principal(p) => vec![p.clone()],
        })
    }

    /// A user, `root`, or an IdP subject `<oauth_id>:<sub>` of a *registered* IdP: names
    /// a person can log in as. API-key owners that are not users, key-file accessIDs and
    /// names that merely look like an IdP subject (an unknown or deleted IdP's id before
    /// the `:`) are not people: nobody can log in as them, so they must not pad a set.
    async fn is_person(&self, name: &str) -> Result<bool, ServiceError> {
        if name == ROOT_PRINCIPAL {
            return Ok(true);
        }
        if let Some((oauth_id, sub)) = name.split_once(':') {
            if oauth_id.is_empty() || sub.is_empty() {
                return Ok(false);
            }
            return match self.store.get_oauth_server(oauth_id).await {
                Ok(_) => Ok(true),
                Err(StoreError::NotFound) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        match self.store.get_user(name).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `set` can decide on its own: at least `required + 1` people.
    pub async fn established(&self, set: &ApproverRule) -> Result<bool, ServiceError> {
        let required = self.required(set);
        if required == 0 {
            return Ok(false);
        }
        Ok(self.people(set).await?.len() > required as usize)
    }

    /// The sets `name` belongs to as a person: by its account's role (users and `root`),
    /// by group membership, or by name.
    pub async fn sets_of(&self, name: &str) -> Result<Vec<ApproverRule>, ServiceError> {
        let role = if name == ROOT_PRINCIPAL {
            Some(Role::SuperAdmin.name().to_string())
        } else {
            match self.store.get_user(name).await {
                Ok(u) => Some(u.role),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let groups = self.store.groups_of(name).await?;
        Ok(self
            .sets()
            .into_iter()
            .filter(|s| match s {
                ApproverRule::Role(r) => role.as_deref() == Some(r.as_str()),
                ApproverRule::Group(g) => groups.contains(g),
                ApproverRule::Principal(p) => p == name,
            })
            .collect())
    }

    /// Whether the caller satisfies one of `rules` with the credential it presented: by
    /// role, its groups or its name. A role rule names enrolled *accounts*: the caller's
    /// credential must carry the role (a union counts each of its roles) and its account
    /// (a local user, or `root`) must hold it. An IdP subject mapped to the role is not
    /// enrolled by that alone (whoever registers an IdP could mint any number of such
    /// subjects): IdP subjects approve through a group or by name, which are gated.
    pub async fn eligible(
        &self,
        who: &Principal,
        rules: &[ApproverRule],
    ) -> Result<bool, ServiceError> {
        let mut groups: Option<Vec<String>> = None;
        for rule in rules {
            match rule {
                ApproverRule::Role(r) if who.role.name().split('+').any(|n| n == r) => {
                    let account_role = if who.name == ROOT_PRINCIPAL {
                        Some(Role::SuperAdmin.name().to_string())
                    } else {
                        match self.store.get_user(&who.name).await {
                            Ok(u) => Some(u.role),
                            Err(StoreError::NotFound) => None,
                            Err(e) => return Err(e.into()),
                        }
                    };
                    if account_role.as_deref() == Some(r.as_str()) {
                        return Ok(true);
                    }
                }
                ApproverRule::Role(_) => {}
                ApproverRule::Group(g) => {
                    if groups.is_none() {
                        groups = Some(self.store.groups_of(&who.name).await?);
                    }
                    if groups.as_ref().is_some_and(|gs| gs.contains(g)) {
                        return Ok(true);
                    }
                }
                ApproverRule::Principal(p) if *p == who.name => return Ok(true),
                ApproverRule::Principal(_) => {}
            }
        }
        Ok(false)
    }

    /// Refuses a removal that would leave `set` with fewer people than the rules naming
    /// it require (`leaving`: the people the change takes out).
    pub async fn check_not_below_quorum(
        &self,
        set: &ApproverRule,
        leaving: &[String],
    ) -> Result<(), ServiceError> {
        let required = self.required(set) as usize;
        if required == 0 {
            return Ok(());
        }
        let people = self.people(set).await?;
        let before = people.len();
        let after = people.iter().filter(|p| !leaving.contains(p)).count();
        if after < before && after < required {
            return Err(ServiceError::Conflict(format!(
                "{set} approves operations that need {required} approvals; it would be left with {after} people"
            )));
        }
        Ok(())
    }
}
