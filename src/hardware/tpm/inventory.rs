//! Listing and removing keygate's persistent objects on a TPM (reconciliation). Every
//! TPM key keygate makes has its own persistent storage parent in keygate's handle range
//! (docs/tpm.md); one the store does not know is left by a crash between generating a
//! key and recording it. Evicting it makes the key unloadable, like a destroy.

use super::device::{self, ParentError};
use super::{Step, TpmBackend};
use crate::hardware::inventory::{HeldObject, Inventory};
use crate::hardware::HardwareError;
use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};

fn uri(handle: u32) -> String {
    format!("tpm:persistent={handle:#010x}")
}

impl Inventory for TpmBackend {
    fn held(&self) -> Result<Vec<HeldObject>, HardwareError> {
        self.call(|dev| {
            let handles = dev
                .persistent_handles()
                .map_err(|e| Step::Tss("listing persistent handles".into(), e))?;
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                dev.room(1, false)
                    .map_err(|e| Step::Tss("flushing a key to make room".into(), e))?;
                let tpm_handle = PersistentTpmHandle::new(h)
                    .map_err(|e| Step::Tss(format!("handle {h:#010x}"), e))?;
                let mut obj = dev
                    .ctx
                    .execute_without_session(|c| {
                        c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
                    })
                    .map_err(|e| Step::Tss(format!("reading {}", uri(h)), e))?;
                let name = dev.ctx.tr_get_name(obj);
                let _ = dev.ctx.tr_close(&mut obj);
                let name = name.map_err(|e| Step::Tss(format!("naming {}", uri(h)), e))?;
                out.push(HeldObject {
                    id: format!("{h:08x}"),
                    label: device::hex(name.value()),
                    uri: uri(h),
                });
            }
            Ok(out)
        })
    }

    fn remove(&self, obj: &HeldObject) -> Result<(), HardwareError> {
        let handle = u32::from_str_radix(&obj.id, 16).map_err(|_| {
            HardwareError::InvalidInput(format!("malformed persistent handle {:?}", obj.id))
        })?;
        self.call(|dev| {
            dev.room(1, false)
                .map_err(|e| Step::Tss("flushing a key to make room".into(), e))?;
            let parent = match dev.persistent_parent(handle, &obj.label, &obj.uri) {
                Ok(p) => p,
                Err(ParentError::Gone(e)) => return Err(Step::Hw(e)),
                Err(ParentError::Tss(e)) => {
                    return Err(Step::Tss(format!("finding {}", obj.uri), e))
                }
            };
            dev.evict(parent, handle)
                .map_err(|e| Step::Tss(format!("evicting {}", obj.uri), e))
        })
    }
}
