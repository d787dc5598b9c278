//! One connection to the TPM: the ESAPI context, the storage primary and the loaded keys.
//!
//! A [`Device`] is opened on first use and dropped when the transport breaks; the next
//! call opens a fresh one, which re-creates the primary (identical, from its template)
//! and loads keys again on demand. Loaded child keys are kept in a small LRU: a TPM has
//! room for very few transient objects (swtpm without a resource manager: 3, primary
//! included), so an evicted key is flushed before the next one is loaded, and dropping a
//! `Device` flushes everything it still holds.
//!
//! Keys made since destroy-that-destroys (docs/tpm.md, "Destroying keys") are wrapped
//! under their own storage parent, a persistent object in keygate's handle range
//! ([`PERSISTENT_FIRST`]) whose private part never left the TPM. Loading such a key needs
//! two free object slots (the TPM pages the persistent parent in for the command), so the
//! storage primary, needed only to create keys, is flushed first and re-created on demand.

use super::blobs::WrappedKey;
use super::error::{describe, meaning, Meaning};
use super::templates;
use crate::hardware::HardwareError;
use std::str::FromStr;
use tss_esapi::constants::{CapabilityType, StartupType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Auth, CapabilityData, Public};
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

/// First persistent handle keygate uses for the storage parents of its keys (an owner
/// range handle, TCG "Registry of Reserved TPM 2.0 Handles": 0x81000000-0x817FFFFF).
pub const PERSISTENT_FIRST: u32 = 0x8101_4b00;
/// How many persistent handles keygate may use from [`PERSISTENT_FIRST`] on.
pub const PERSISTENT_COUNT: u32 = 0x100;

/// Why a key's own storage parent could not be used.
pub(crate) enum ParentError {
    /// Gone from the TPM (the key was destroyed) or a different object now: not found.
    Gone(HardwareError),
    /// The TPM failed while looking (transport, object memory): retry logic decides.
    Tss(tss_esapi::Error),
}

pub(crate) struct Device {
    pub ctx: Context,
    /// The storage primary while it is loaded; re-created from its template on demand.
    primary: Option<KeyHandle>,
    primary_template: Public,
    /// Hex TPM name of the primary; legacy locators record it as their parent.
    pub parent_name: String,
    /// Most recently used last.
    loaded: Vec<Loaded>,
    max_loaded: usize,
}

pub(crate) fn hex(b: &[u8]) -> String {
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
            primary: Some(primary),
            primary_template: templates::storage_primary()?,
            parent_name: hex(name.value()),
            loaded: Vec::new(),
            max_loaded: c.max_loaded.max(1),
        })
    }

    /// Objects this connection holds in the TPM now.
    fn used(&self) -> usize {
        self.loaded.len() + usize::from(self.primary.is_some())
    }

    /// Flushes until `n` object slots are free (the TPM's transient capacity is taken as
    /// `max_loaded + 1`): the primary first unless `keep_primary`, then the least recently
    /// used keys.
    pub fn room(&mut self, n: usize, keep_primary: bool) -> Result<(), tss_esapi::Error> {
        let capacity = self.max_loaded + 1;
        while self.used() + n > capacity {
            if !keep_primary {
                if let Some(p) = self.primary.take() {
                    self.ctx.flush_context(p.into())?;
                    continue;
                }
            }
            if self.loaded.is_empty() {
                break;
            }
            let oldest = self.loaded.remove(0);
            self.ctx.flush_context(oldest.handle.into())?;
        }
        Ok(())
    }

    /// The storage primary, re-created from its fixed template if it was flushed.
    pub fn primary(&mut self) -> Result<KeyHandle, tss_esapi::Error> {
        if let Some(p) = self.primary {
            return Ok(p);
        }
        self.room(1, true)?;
        let template = self.primary_template.clone();
        let h = self
            .ctx
            .create_primary(Hierarchy::Owner, template, None, None, None, None)?
            .key_handle;
        self.primary = Some(h);
        Ok(h)
    }

    /// The ESYS handle of the persistent storage parent at `handle`, checked to be the
    /// object named `name` (hex). The caller closes it with `tr_close`. Needs one free
    /// object slot, which the caller makes.
    pub fn persistent_parent(
        &mut self,
        handle: u32,
        name: &str,
        key: &str,
    ) -> Result<ObjectHandle, ParentError> {
        let gone = |why: &str| {
            ParentError::Gone(HardwareError::KeyNotFound(format!(
                "{key}: its storage parent {handle:#010x} {why}: the key was destroyed, or this is another TPM"
            )))
        };
        let tpm_handle =
            PersistentTpmHandle::new(handle).map_err(|_| gone("is not a persistent handle"))?;
        let obj = match self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle)))
        {
            Ok(o) => o,
            Err(e) => {
                return Err(match meaning(&e) {
                    Meaning::ConnectionLost | Meaning::ObjectMemory => ParentError::Tss(e),
                    _ => gone("is not in this TPM"),
                })
            }
        };
        let mut obj = obj;
        match self.ctx.tr_get_name(obj) {
            Ok(n) if hex(n.value()) == name => Ok(obj),
            Ok(_) => {
                let _ = self.ctx.tr_close(&mut obj);
                Err(gone("now holds another object"))
            }
            Err(e) => {
                let _ = self.ctx.tr_close(&mut obj);
                Err(ParentError::Tss(e))
            }
        }
    }

    /// The handle of `key`, loading it under its parent (its own persistent storage
    /// parent `Some((handle, name))`, or the storage primary) and flushing what it takes
    /// to make room. TSS errors are returned raw in the inner result, for the caller to
    /// translate; a parent that is gone is `KeyNotFound`.
    pub fn load(
        &mut self,
        public_b64: &str,
        parent: Option<(u32, &str)>,
        parse: impl FnOnce() -> Result<WrappedKey, HardwareError>,
    ) -> Result<Result<(KeyHandle, &WrappedKey), tss_esapi::Error>, HardwareError> {
        if let Some(pos) = self.loaded.iter().position(|l| l.public_b64 == public_b64) {
            let entry = self.loaded.remove(pos);
            self.loaded.push(entry);
        } else {
            let key = parse()?;
            let loaded = match parent {
                Some((handle, name)) => {
                    // The persistent parent takes a slot for the command, the key another.
                    if let Err(e) = self.room(2, false) {
                        return Ok(Err(e));
                    }
                    let who = super::blobs::display_uri(&key.label, public_b64);
                    let mut obj = match self.persistent_parent(handle, name, &who) {
                        Ok(o) => o,
                        Err(ParentError::Gone(e)) => return Err(e),
                        Err(ParentError::Tss(e)) => return Ok(Err(e)),
                    };
                    let r = self.ctx.load(
                        KeyHandle::from(obj),
                        key.private.clone(),
                        key.public.clone(),
                    );
                    let _ = self.ctx.tr_close(&mut obj);
                    r
                }
                None => {
                    let primary = match self.primary() {
                        Ok(p) => p,
                        Err(e) => return Ok(Err(e)),
                    };
                    if let Err(e) = self.room(1, true) {
                        return Ok(Err(e));
                    }
                    self.ctx
                        .load(primary, key.private.clone(), key.public.clone())
                }
            };
            let handle = match loaded {
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

    /// A free persistent handle in keygate's range.
    pub fn free_persistent_handle(&mut self) -> Result<Option<u32>, tss_esapi::Error> {
        let used = self.persistent_handles()?;
        Ok((PERSISTENT_FIRST..PERSISTENT_FIRST + PERSISTENT_COUNT).find(|h| !used.contains(h)))
    }

    /// The persistent handles in keygate's range that hold an object now.
    pub fn persistent_handles(&mut self) -> Result<Vec<u32>, tss_esapi::Error> {
        let (data, _) = self.ctx.execute_without_session(|c| {
            c.get_capability(CapabilityType::Handles, PERSISTENT_FIRST, PERSISTENT_COUNT)
        })?;
        let mut out = Vec::new();
        if let CapabilityData::Handles(list) = data {
            for h in list.into_inner() {
                let raw = u32::from(h);
                if (PERSISTENT_FIRST..PERSISTENT_FIRST + PERSISTENT_COUNT).contains(&raw) {
                    out.push(raw);
                }
            }
        }
        Ok(out)
    }

    /// Makes the transient storage key `transient` persistent at `handle` and flushes the
    /// transient copy. Returns the persistent object's ESYS handle (close it after use).
    pub fn persist(
        &mut self,
        transient: KeyHandle,
        handle: u32,
    ) -> Result<ObjectHandle, tss_esapi::Error> {
        let target = PersistentTpmHandle::new(handle)?;
        let r = self.ctx.evict_control(
            Provision::Owner,
            transient.into(),
            Persistent::Persistent(target),
        );
        let _ = self.ctx.flush_context(transient.into());
        r
    }

    /// Removes the persistent object `obj` (at `handle`) from the TPM for good.
    pub fn evict(&mut self, obj: ObjectHandle, handle: u32) -> Result<(), tss_esapi::Error> {
        let target = PersistentTpmHandle::new(handle)?;
        self.ctx
            .evict_control(Provision::Owner, obj, Persistent::Persistent(target))
            .map(|_| ())
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

    /// Flushes everything: this connection's keys and primary, then any transient
    /// object left by an earlier process (a crashed keygate on a TPM without a resource
    /// manager can leave the TPM full). Used once when the TPM reports it is out of
    /// object memory; the primary is re-created on demand.
    pub fn reclaim_all(&mut self) {
        self.unload_all();
        if let Some(p) = self.primary.take() {
            let _ = self.ctx.flush_context(p.into());
        }
        let flushed = flush_stale_transients(&mut self.ctx);
        if flushed > 0 {
            tracing::warn!(flushed,
                "the TPM was out of object memory; flushed transient objects left by an earlier process");
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
        if let Some(p) = self.primary.take() {
            let _ = self.ctx.flush_context(p.into());
        }
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
