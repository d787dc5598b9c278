//! The state of a key version and the moves between states, in one place
//! (`docs/keys.md`, "Lifecycle"). It lives at the bottom of the crate so that the store
//! parses it at its boundary (a stored state this keygate does not know is
//! `StoreError::Corrupt`) and the key registry above works with the type only.
//!
//! ```text
//! pending ──activate──▶ active ──rotate──▶ retiring ──retire──▶ retired ──destroy──▶ destroyed
//!                          └──compromise──▶ compromised ──────────────────destroy──▶ destroyed
//! ```
//!
//! `rotate --now` creates the next version `active` directly and moves the current one to
//! `retiring`.

use serde::{Serialize, Serializer};

/// Where a key version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    /// Created and published, not yet signing.
    Pending,
    /// The one version of its ring that signs.
    Active,
    /// No longer signs; still published so tokens it signed verify.
    Retiring,
    /// No longer published; its hardware object remains until destroyed.
    Retired,
    /// Taken out of service at once; no longer published.
    Compromised,
    /// Removed from the hardware; only the record remains.
    Destroyed,
}

/// A move of a key version from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMove {
    /// pending → active, after the publish delay (or at once with `rotate --now`).
    Activate,
    /// active → retiring: the next version took over signing.
    StepDown,
    /// retiring → retired, once no token it signed can still be valid.
    Retire,
    /// active → compromised.
    Compromise,
    /// retired or compromised → destroyed.
    Destroy,
}

impl KeyState {
    pub const ALL: [KeyState; 6] = [
        KeyState::Pending,
        KeyState::Active,
        KeyState::Retiring,
        KeyState::Retired,
        KeyState::Compromised,
        KeyState::Destroyed,
    ];

    /// The name stored and shown (`docs/keys.md`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// Pending, active and retiring versions are published (their public keys are in the
    /// JWKS) and verify.
    pub fn published(self) -> bool {
        matches!(
            self,
            KeyState::Pending | KeyState::Active | KeyState::Retiring
        )
    }

    /// Whether the hardware object still exists (everything but `destroyed`).
    pub fn live(self) -> bool {
        self != KeyState::Destroyed
    }

    /// The state `m` leads to from this one, or None when `m` is not a move from here.
    /// Every state change of a key version is one of these (the store's compare-and-set
    /// statements check the same `from` state).
    pub fn after(self, m: KeyMove) -> Option<KeyState> {
        match (self, m) {
            (KeyState::Pending, KeyMove::Activate) => Some(KeyState::Active),
            (KeyState::Active, KeyMove::StepDown) => Some(KeyState::Retiring),
            (KeyState::Retiring, KeyMove::Retire) => Some(KeyState::Retired),
            (KeyState::Active, KeyMove::Compromise) => Some(KeyState::Compromised),
            (KeyState::Retired | KeyState::Compromised, KeyMove::Destroy) => {
                Some(KeyState::Destroyed)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for KeyState {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyState, String> {
        KeyState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown key-version state {s:?}"))
    }
}

impl Serialize for KeyState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_and_an_unknown_one_is_refused() {
        for k in KeyState::ALL {
            assert_eq!(k.as_str().parse::<KeyState>(), Ok(k));
        }
        assert_eq!(
            "revoked".parse::<KeyState>(),
            Err("unknown key-version state \"revoked\"".to_string())
        );
    }

    #[test]
    fn only_retired_or_compromised_versions_are_destroyed_and_nothing_leaves_destroyed() {
        let destroyable: Vec<KeyState> = KeyState::ALL
            .into_iter()
            .filter(|k| k.after(KeyMove::Destroy).is_some())
            .collect();
        assert_eq!(destroyable, [KeyState::Retired, KeyState::Compromised]);
        for m in [
            KeyMove::Activate,
            KeyMove::StepDown,
            KeyMove::Retire,
            KeyMove::Compromise,
            KeyMove::Destroy,
        ] {
            assert_eq!(KeyState::Destroyed.after(m), None);
        }
        assert_eq!(
            KeyState::Pending.after(KeyMove::Activate),
            Some(KeyState::Active)
        );
        assert_eq!(KeyState::Pending.after(KeyMove::Compromise), None);
    }
}
