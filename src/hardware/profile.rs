//! Per-vendor PKCS#11 profiles (`hsm-profiles/*.toml`).
//!
//! Tokens differ in which mechanisms they offer and in how they misbehave. A profile
//! records both, so the backend code has one path per quirk instead of one per vendor.
//! See `docs/hsm-profiles.md` for every field.

use crate::hardware::Algorithm;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A device family: where its module usually lives, how many sessions to pool, which
/// algorithms it can generate and sign with, and its quirks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmProfile {
    /// Profile name; equals the file stem.
    pub name: String,
    /// Vendor and product, for humans.
    pub vendor: String,
    /// `true` only for profiles exercised by keygate's CI.
    pub tested: bool,
    /// Free text: where the mechanism list and limits came from, and what is untested.
    #[serde(default)]
    pub notes: String,
    /// The usual path of the vendor's PKCS#11 module; the config's `module` overrides it.
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// Number of sessions opened and kept; also the size of the blocking pool.
    pub pool_size: usize,
    /// Algorithms keygate may generate and use on this device.
    pub algorithms: Vec<Algorithm>,
    #[serde(default)]
    pub quirks: Quirks,
    /// The device's own key attestation, where it has one (docs/attestation.md). keygate
    /// reports the declared mechanism with a key's attributes but does not fetch the
    /// vendor's evidence: none of these devices is in CI.
    #[serde(default)]
    pub vendor_attestation: Option<VendorAttestation>,
}

/// A vendor key-attestation mechanism a profile declares (not tested here).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VendorAttestation {
    /// `yubihsm2-attestation-certificate`, `luna-key-attestation` or
    /// `nshield-key-attestation`.
    pub mechanism: VendorMechanism,
    /// How the evidence would be obtained and verified.
    #[serde(default)]
    pub notes: String,
}

/// The vendor attestation mechanisms keygate knows how to describe.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VendorMechanism {
    Yubihsm2AttestationCertificate,
    LunaKeyAttestation,
    NshieldKeyAttestation,
}

/// Device behaviour the backend must work around.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quirks {
    /// The device lacks `CKM_ECDSA_SHA256`/`CKM_ECDSA_SHA384`: hash in software and sign the
    /// digest with `CKM_ECDSA`.
    #[serde(default)]
    pub ecdsa_hash_in_software: bool,
    /// `CKA_LABEL` must be unique on the token; keygate then appends the key id to labels.
    #[serde(default)]
    pub unique_labels: bool,
    /// Login state is per session rather than per application: log in on every session.
    #[serde(default)]
    pub login_per_session: bool,
    /// Maximum number of sessions the device allows this application (0 = no stated limit).
    #[serde(default)]
    pub max_sessions: usize,
    /// Serialise object creation and destruction against object searches. SoftHSM 2.6
    /// fails `C_GenerateKey(Pair)` with `CKR_GENERAL_ERROR` when another thread searches
    /// or destroys objects at the same time.
    #[serde(default)]
    pub serialize_object_changes: bool,
    /// The device's RNG returns at most this many bytes per `C_GenerateRandom` (0 = no limit).
    #[serde(default)]
    pub max_random_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("HSM profile {name:?} not found {where_}")]
    NotFound { name: String, where_: String },
    #[error("HSM profile {path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl HsmProfile {
    /// Loads `<dir>/<name>.toml`, falling back to the profiles compiled into the binary.
    pub fn load(dir: Option<&Path>, name: &str) -> Result<HsmProfile, ProfileError> {
        if let Some(dir) = dir {
            let path = dir.join(format!("{name}.toml"));
            if path.exists() {
                let text = std::fs::read_to_string(&path).map_err(|e| ProfileError::Invalid {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                return Self::parse(&path.display().to_string(), &text);
            }
        }
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::parse(&format!("(built-in) {n}.toml"), text),
            None => Err(ProfileError::NotFound {
                name: name.to_string(),
                where_: format!(
                    "{}among the built-in profiles ({})",
                    dir.map(|d| format!("in {} or ", d.display()))
                        .unwrap_or_default(),
                    BUILTIN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Parses and validates one profile.
    pub fn parse(path: &str, text: &str) -> Result<HsmProfile, ProfileError> {
        let invalid = |reason: String| ProfileError::Invalid {
            path: path.to_string(),
            reason,
        };
        let p: HsmProfile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if p.pool_size == 0 || p.pool_size > MAX_POOL_SIZE {
            return Err(invalid(format!(
                "pool_size must be between 1 and {MAX_POOL_SIZE}"
            )));
        }
        if p.quirks.max_sessions != 0 && p.pool_size > p.quirks.max_sessions {
            return Err(invalid(format!(
                "pool_size {} exceeds quirks.max_sessions {}",
                p.pool_size, p.quirks.max_sessions
            )));
        }
        Ok(p)
    }

    pub fn supports(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// More sessions than this is a configuration mistake (each is a thread, too).
pub const MAX_POOL_SIZE: usize = 256;

/// Profiles shipped inside the binary, so `keygate serve --dev` works from any directory.
pub const BUILTIN: &[(&str, &str)] = &[
    ("softhsm2", include_str!("../../hsm-profiles/softhsm2.toml")),
    (
        "thales-luna",
        include_str!("../../hsm-profiles/thales-luna.toml"),
    ),
    (
        "entrust-nshield",
        include_str!("../../hsm-profiles/entrust-nshield.toml"),
    ),
    ("utimaco", include_str!("../../hsm-profiles/utimaco.toml")),
    ("yubihsm2", include_str!("../../hsm-profiles/yubihsm2.toml")),
    (
        "aws-cloudhsm",
        include_str!("../../hsm-profiles/aws-cloudhsm.toml"),
    ),
    (
        "tpm2-pkcs11",
        include_str!("../../hsm-profiles/tpm2-pkcs11.toml"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_and_only_softhsm_claims_to_be_tested() {
        for (name, text) in BUILTIN {
            let p = HsmProfile::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&p.name, name);
            assert_eq!(p.tested, *name == "softhsm2", "{name}");
            if !p.tested {
                assert!(
                    p.notes.to_lowercase().contains("not tested here"),
                    "{name} must say it is not tested here"
                );
            }
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text =
            "name='x'\nvendor='v'\ntested=false\npool_size=1\nalgorithms=['ES256']\nbogus=1\n";
        assert!(HsmProfile::parse("x", text).is_err());
    }
}
