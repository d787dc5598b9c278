//! One connection to the TPM: the ESAPI context, the storage primary and the loaded keys.
//!
//! A [`Device`] is opened on first use and dropped when the transport breaks; the next
//! call opens a fresh one, which re-creates the primary (identical, from its template)
//! and loads keys again on demand. Loaded child keys are kept in a small LRU: a TPM has
//! room for very few transient objects (swtpm without a resource manager: 3, primary
//! included), so an evicted key is flushed before the next one is loaded, and dropping a
//! `Device` flushes everything it still holds.

use super::blobs::WrappedKey;
use super::error::{describe, meaning, Meaning};
use super::templates;
use crate::hardware::HardwareError;
use std::str::FromStr;
use tss_esapi::constants::{CapabilityType, StartupType};
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Auth, CapabilityData};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;
use zeroize::Zeroizing;

/// How to reach the TPM.
pub(crate) struct Connection<'a> {
    pub tcti: &'a str,
    pub owner_auth: Option<&'a Zeroizing<Vec<u8>>>,
    pub max_loaded: usize,
}

/// A key loaded in the TPM, with what it was loaded from.
struct Loaded {
    /// The locator's `public` field: the key's identity.
    public_b64: String,
    handle: KeyHandle,
    key: WrappedKey,
}

pub(crate) struct Device {
    pub ctx: Context,
    pub primary: KeyHandle,
    /// Hex TPM name of the primary; locators record it as their parent.
    pub parent_name: String,
    /// Most recently used last.
    loaded: Vec<Loaded>,
    max_loaded: usize,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Device {
    /// Connects, starts the TPM if nobody has, and re-creates the storage primary.
    /// Every failure is `Unavailable`: the device cannot serve any key right now.
    pub fn open(c: &Connection<'_>) -> Result<Device, HardwareError> {
        let down = |m: String| HardwareError::Unavailable(m);
        let tcti = TctiNameConf::from_str(c.tcti).map_err(|_| {
            down(format!(
                "TCTI {:?} is not valid; expected e.g. \"device:/dev/tpmrm0\" or \"swtpm:host=127.0.0.1,port=2321\"",
                c.tcti
            ))
        })?;
        let mut ctx = Context::new(tcti).map_err(|e| {
            down(describe(
                &format!("cannot reach the TPM at {:?}", c.tcti),
                &e,
            ))
        })?;
        // A simulator started without `startup-clear` needs TPM2_Startup; a started TPM
        // (or the kernel's resource manager) answers TPM_RC_INITIALIZE, which is fine.
        if let Err(e) = ctx.startup(StartupType::Clear) {
            let already = matches!(
                e,
                tss_esapi::Error::Tss2Error(rc)
                    if rc.kind() == Some(tss_esapi::constants::response_code::Tss2ResponseCodeKind::Initialize)
            );
            if !already {
                return Err(down(describe(&format!("TPM2_Startup on {:?}", c.tcti), &e)));
            }
        }
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        if let Some(auth) = c.owner_auth {
            let auth = Auth::try_from(auth.to_vec())
                .map_err(|_| down("owner auth is longer than the TPM accepts".into()))?;
            ctx.tr_set_auth(Hierarchy::Owner.into(), auth)
                .map_err(|e| down(describe("setting the owner auth", &e)))?;
        }
        let primary = create_primary(&mut ctx, c.tcti)?;
        let (_, name, _) = ctx
            .execute_without_session(|c| c.read_public(primary))
            .map_err(|e| down(describe("reading the storage primary", &e)))?;
        tracing::info!(tcti = %c.tcti, "connected to the TPM and re-created the storage primary");
        Ok(Device {
            ctx,
            primary,
            parent_name: hex(name.value()),
            loaded: Vec::new(),
            max_loaded: c.max_loaded.max(1),
        })
    }

    /// The handle of `key`, loading it (and flushing the least recently used key first
    /// when the LRU is full). Errors are raw TSS errors; the caller translates them.
    pub fn load(
        &mut self,
        public_b64: &str,
        parse: impl FnOnce() -> Result<WrappedKey, HardwareError>,
    ) -> Result<Result<(KeyHandle, &WrappedKey), tss_esapi::Error>, HardwareError> {
        if let Some(pos) = self.loaded.iter().position(|l| l.public_b64 == public_b64) {
            let entry = self.loaded.remove(pos);
            self.loaded.push(entry);
        } else {
            let key = parse()?;
            if self.loaded.len() >= self.max_loaded {
                let oldest = self.loaded.remove(0);
                if let Err(e) = self.ctx.flush_context(oldest.handle.into()) {
                    return Ok(Err(e));
                }
            }
            let handle = match self
                .ctx
                .load(self.primary, key.private.clone(), key.public.clone())
            {
                Ok(h) => h,
                Err(e) => return Ok(Err(e)),
            };
            self.loaded.push(Loaded {
                public_b64: public_b64.to_string(),
                handle,
                key,
            });
        }
        match self.loaded.last() {
            Some(l) => Ok(Ok((l.handle, &l.key))),
            None => Err(HardwareError::Failure("TPM key cache is empty".into())),
        }
    }

    /// Flushes the least recently used key if the LRU is full, so `TPM2_Create` (which
    /// needs one free object slot while it works) does not run out of object memory.
    pub fn make_room(&mut self) -> Result<(), tss_esapi::Error> {
        if self.loaded.len() >= self.max_loaded {
            let oldest = self.loaded.remove(0);
            self.ctx.flush_context(oldest.handle.into())?;
        }
        Ok(())
    }

    /// Flushes `public_b64` if it is loaded.
    pub fn unload(&mut self, public_b64: &str) -> Result<(), tss_esapi::Error> {
        if let Some(pos) = self.loaded.iter().position(|l| l.public_b64 == public_b64) {
            let entry = self.loaded.remove(pos);
            self.ctx.flush_context(entry.handle.into())?;
        }
        Ok(())
    }

    /// Flushes every loaded child key (to make room after `TPM_RC_OBJECT_MEMORY`).
    pub fn unload_all(&mut self) {
        for entry in std::mem::take(&mut self.loaded) {
            if let Err(e) = self.ctx.flush_context(entry.handle.into()) {
                tracing::warn!(error = %e, "flushing a TPM key failed");
            }
        }
    }

    /// Number of child keys loaded now (for tests of the LRU).
    pub fn loaded_count(&self) -> usize {
        self.loaded.len()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // The context flushes the objects it created on drop; do it here explicitly, in
        // order, so a shutdown leaves no transient object behind on a TPM without a
        // resource manager. A dead transport makes these fail, which is harmless.
        self.unload_all();
        let _ = self.ctx.flush_context(self.primary.into());
    }
}

/// Creates the storage primary, flushing leftovers of a previous process once if the TPM
/// is out of object memory (a crashed keygate on a TPM without a resource manager).
fn create_primary(ctx: &mut Context, tcti: &str) -> Result<KeyHandle, HardwareError> {
    let template = templates::storage_primary()?;
    let attempt = |ctx: &mut Context| {
        ctx.create_primary(Hierarchy::Owner, template.clone(), None, None, None, None)
            .map(|r| r.key_handle)
    };
    match attempt(ctx) {
        Ok(h) => Ok(h),
        Err(e) if meaning(&e) == Meaning::ObjectMemory => {
            let flushed = flush_stale_transients(ctx);
            tracing::warn!(tcti = %tcti, flushed,
                "the TPM was out of object memory; flushed transient objects left by an earlier process");
            attempt(ctx).map_err(|e| primary_error(tcti, &e))
        }
        Err(e) => Err(primary_error(tcti, &e)),
    }
}

fn primary_error(tcti: &str, e: &tss_esapi::Error) -> HardwareError {
    let what = format!("creating the storage primary key on {tcti:?}");
    if meaning(e) == Meaning::BadAuth {
        HardwareError::Unavailable(format!(
            "{}: the TPM rejected the owner authorization; check owner_auth_file / owner_auth_env",
            describe(&what, e)
        ))
    } else {
        HardwareError::Unavailable(describe(&what, e))
    }
}

/// Flushes every transient object the TPM holds. Only called when the TPM is out of
/// object memory before keygate has loaded anything, i.e. what is there is leaked.
fn flush_stale_transients(ctx: &mut Context) -> usize {
    const TRANSIENT_FIRST: u32 = 0x8000_0000;
    let handles = match ctx
        .execute_without_session(|c| c.get_capability(CapabilityType::Handles, TRANSIENT_FIRST, 64))
    {
        Ok((CapabilityData::Handles(list), _)) => list.into_inner(),
        _ => return 0,
    };
    let mut flushed = 0;
    for tpm_handle in handles {
        let obj: Result<ObjectHandle, _> =
            ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_handle));
        if let Ok(obj) = obj {
            if ctx.flush_context(obj).is_ok() {
                flushed += 1;
            }
        }
    }
    flushed
}
