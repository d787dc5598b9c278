//! Loading and initialising PKCS#11 modules, once per process.
//!
//! `C_Initialize` may be called once per module per process; a second call answers
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED`. Several backends (or tests) in one process therefore
//! share one context per module path.

use super::error::translate;
use crate::hardware::HardwareError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::slot::Slot;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Returns the process-wide, initialised context for `module`.
pub fn shared_context(module: &Path) -> Result<Pkcs11, HardwareError> {
    let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| HardwareError::Failure("PKCS#11 context registry poisoned".into()))?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    if !module.exists() {
        return Err(HardwareError::Unavailable(format!(
            "PKCS#11 module {} does not exist (install the vendor library or fix `module`)",
            module.display()
        )));
    }
    let ctx = Pkcs11::new(module).map_err(|e| translate("loading module", e))?;
    initialize(&ctx)?;
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// `C_Initialize` with `CKF_OS_LOCKING_OK`; already-initialised counts as success.
pub fn initialize(ctx: &Pkcs11) -> Result<(), HardwareError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        // Whatever the code, a module that will not initialise is an outage, not a bug.
        Err(e) => Err(HardwareError::Unavailable(
            translate("initialising module", e).into_message(),
        )),
    }
}

/// Every slot with an initialised token, with the token's label.
pub fn token_labels(ctx: &Pkcs11) -> Result<Vec<(Slot, String)>, Error> {
    let mut out = Vec::new();
    for slot in ctx.get_slots_with_initialized_token()? {
        let info = ctx.get_token_info(slot)?;
        out.push((slot, info.label().trim_end().to_string()));
    }
    Ok(out)
}

/// Finds the slot holding the initialised token with this label. Labels, never slot
/// numbers: SoftHSM renumbers slots whenever tokens change.
pub fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot, HardwareError> {
    let tokens = token_labels(ctx).map_err(|e| translate("reading token info", e))?;
    pick_token(&tokens, label)
}

/// The one slot among `tokens` whose token has this label.
pub fn pick_token(tokens: &[(Slot, String)], label: &str) -> Result<Slot, HardwareError> {
    let found: Vec<Slot> = tokens
        .iter()
        .filter(|(_, l)| l == label)
        .map(|(s, _)| *s)
        .collect();
    let seen: Vec<&str> = tokens.iter().map(|(_, l)| l.as_str()).collect();
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HardwareError::Unavailable(format!(
            "no token labelled {label:?} (tokens present: {seen:?})"
        ))),
        _ => Err(HardwareError::Failure(format!(
            "{} tokens are labelled {label:?}; labels must be unique",
            found.len()
        ))),
    }
}
