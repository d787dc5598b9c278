//! The typed vocabulary of M-of-N approvals, shared by the configuration
//! (`[approvals.<operation>]`) and the approval workflow: which operations can be gated
//! ([`ApprovalOperation`]) and who may approve them ([`ApproverRule`]). Parsed once when
//! the configuration loads, so nothing downstream matches on strings. See
//! docs/lifecycle.md.

use std::fmt;
use std::str::FromStr;

/// An operation that `[approvals.<operation>]` can gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApprovalOperation {
    Rotate,
    RotateNow,
    Regenerate,
    Destroy,
    ChangeBackend,
    CreateSuperAdminKey,
    DeleteOauthServer,
    /// Changing who can approve: a member added to or removed from an approver group,
    /// or an approver role granted to a user, once the approver set can meet its quorum.
    ChangeApprovers,
}

impl ApprovalOperation {
    pub const ALL: [ApprovalOperation; 8] = [
        ApprovalOperation::Rotate,
        ApprovalOperation::RotateNow,
        ApprovalOperation::Regenerate,
        ApprovalOperation::Destroy,
        ApprovalOperation::ChangeBackend,
        ApprovalOperation::CreateSuperAdminKey,
        ApprovalOperation::DeleteOauthServer,
        ApprovalOperation::ChangeApprovers,
    ];

    /// The name in `docs/lifecycle.md` and in `[approvals.<name>]`.
    pub fn name(self) -> &'static str {
        match self {
            ApprovalOperation::Rotate => "rotate",
            ApprovalOperation::RotateNow => "rotate-now",
            ApprovalOperation::Regenerate => "regenerate",
            ApprovalOperation::Destroy => "destroy",
            ApprovalOperation::ChangeBackend => "change-backend",
            ApprovalOperation::CreateSuperAdminKey => "create-super-admin-key",
            ApprovalOperation::DeleteOauthServer => "delete-oauth-server",
            ApprovalOperation::ChangeApprovers => "change-approvers",
        }
    }

    /// The documented defaults (`docs/lifecycle.md`): rotate 0, rotate-now 1, regenerate 2, destroy 2. The
    /// operations with no documented default: change-backend 1 (it replaces the key's
    /// hardware), create-super-admin-key and delete-oauth-server 0. change-approvers
    /// takes the strictest `required` of the rules naming the approver set it changes
    /// (docs/lifecycle.md), so its own count is only a floor.
    pub fn default_required(self) -> u32 {
        match self {
            ApprovalOperation::RotateNow | ApprovalOperation::ChangeBackend => 1,
            ApprovalOperation::Regenerate | ApprovalOperation::Destroy => 2,
            _ => 0,
        }
    }
}

impl fmt::Display for ApprovalOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ApprovalOperation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ApprovalOperation::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ApprovalOperation::ALL.iter().map(|o| o.name()).collect();
                format!(
                    "unknown operation {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Who may approve: everyone holding a role, every member of a group, or one named
/// principal (a user name or `<oauth_id>:<sub>`). Written `role:<name>`,
/// `group:<name>`, `principal:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApproverRule {
    Role(String),
    Group(String),
    Principal(String),
}

impl fmt::Display for ApproverRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApproverRule::Role(r) => write!(f, "role:{r}"),
            ApproverRule::Group(g) => write!(f, "group:{g}"),
            ApproverRule::Principal(p) => write!(f, "principal:{p}"),
        }
    }
}

impl FromStr for ApproverRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("role", r)) if !r.trim().is_empty() => Ok(ApproverRule::Role(r.to_string())),
            Some(("group", g)) if !g.trim().is_empty() => Ok(ApproverRule::Group(g.to_string())),
            Some(("principal", p)) if !p.trim().is_empty() => {
                Ok(ApproverRule::Principal(p.to_string()))
            }
            _ => Err(format!(
                "{s:?} is not role:<name>, group:<name> or principal:<name>"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ApproverRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Rules as stored on an approval request: comma-separated. Unknown entries (from a
/// newer version) are skipped, so they never widen who may approve.
pub fn parse_list(s: &str) -> Vec<ApproverRule> {
    s.split(',').filter_map(|r| r.parse().ok()).collect()
}

/// The stored form of [`parse_list`].
pub fn join(rules: &[ApproverRule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_rules_round_trip_through_their_names() {
        for op in ApprovalOperation::ALL {
            assert_eq!(op.name().parse::<ApprovalOperation>(), Ok(op));
        }
        for r in ["role:super-admin", "group:key-officers", "principal:alice"] {
            assert_eq!(
                r.parse::<ApproverRule>().map(|x| x.to_string()),
                Ok(r.into())
            );
        }
        assert_eq!(
            "user:alice".parse::<ApproverRule>(),
            Err("\"user:alice\" is not role:<name>, group:<name> or principal:<name>".into())
        );
        assert_eq!(
            parse_list("role:a,bogus,group:g"),
            vec![
                ApproverRule::Role("a".into()),
                ApproverRule::Group("g".into())
            ]
        );
    }
}
