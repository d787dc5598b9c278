//! What a device holds for keygate, so start-up reconciliation can report hardware
//! objects the store does not know (a crash between generating a key and recording it
//! leaves one), and `keygate keys reconcile --apply` can remove them (docs/operations.md,
//! "Reconciliation").
//!
//! An optional ability, reached through [`Backend::inventory`](super::Backend::inventory).

use super::HardwareError;

/// One keygate object on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldObject {
    /// How the store's locators name it: a PKCS#11 `CKA_ID` (hex), or a TPM key's
    /// persistent storage parent (`0x81014b..` handle, hex).
    pub id: String,
    /// The PKCS#11 label, or the TPM name of the persistent parent (hex).
    pub label: String,
    /// For logs and reports.
    pub uri: String,
}

/// A device that can list and remove keygate's objects.
pub trait Inventory: Send + Sync {
    /// Every object keygate made on this device (PKCS#11: private and secret keys
    /// labelled `keygate:`; TPM: persistent objects in keygate's handle range).
    fn held(&self) -> Result<Vec<HeldObject>, HardwareError>;
    /// Removes one object [`held`](Self::held) listed.
    fn remove(&self, obj: &HeldObject) -> Result<(), HardwareError>;
}

/// Label prefix of every key keygate generates (`keygate:<ring>:v<n>`).
pub const LABEL_PREFIX: &str = "keygate:";
