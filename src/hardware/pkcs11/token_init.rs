//! Creating a token for development and tests.
//!
//! `keygate serve --dev` and the test harness need a fresh SoftHSM token without asking the
//! user to run `softhsm2-util`. This does the same through PKCS#11 itself: `C_InitToken` on
//! a free slot, then `C_InitPIN` as the security officer. Production tokens are initialised
//! by their owners with the vendor's tools; keygate never does this outside `--dev`.

use super::error::translate;
use super::module::{find_token, shared_context};
use crate::hardware::HardwareError;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::path::Path;

/// Ensures a token with `label` exists; returns `true` when it was created now.
pub fn ensure_token(
    module: &Path,
    label: &str,
    so_pin: &AuthPin,
    user_pin: &AuthPin,
) -> Result<bool, HardwareError> {
    let ctx = shared_context(module)?;
    if find_token(&ctx, label).is_ok() {
        return Ok(false);
    }
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| translate("listing slots", e))?;
    let mut free = None;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| translate("reading token info", e))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| {
        HardwareError::Unavailable("no free slot to initialise a token in".into())
    })?;
    ctx.init_token(slot, so_pin, label)
        .map_err(|e| translate("initialising token", e))?;
    let slot = find_token(&ctx, label)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| translate("opening SO session", e))?;
    session
        .login(UserType::So, Some(so_pin))
        .map_err(|e| translate("SO login", e))?;
    session
        .init_pin(user_pin)
        .map_err(|e| translate("setting the user PIN", e))?;
    session.logout().map_err(|e| translate("SO logout", e))?;
    Ok(true)
}
