//! Hardware objects the store does not know (docs/operations.md, "Reconciliation").
//!
//! A crash between generating a key in hardware and recording its version leaves an
//! object no version names. Start-up reconciliation reports each one; removing them is a
//! destructive act, so it goes through the same approvals as destroying a version
//! (`keygate keys reconcile --apply`). Removal re-checks after a grace period, so a key
//! another process is generating right now (in hardware, not yet recorded) is never taken
//! for an orphan.

use super::{KeyRegistry, KeysError};
use crate::hardware::inventory::HeldObject;
use crate::hardware::KeyLocator;
use crate::store::audit::{AuditActor, NewAuditEntry};
use std::collections::HashSet;
use std::time::Duration;

/// How long an object must stay unknown to the store before it is removed.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// A hardware object no key version in the store names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub backend: String,
    pub object: HeldObject,
}

impl KeyRegistry {
    /// Objects keygate made on each backend that no live version names, from a fresh
    /// read of the store. Backends that cannot list their objects are skipped; one that
    /// is unreachable is an error.
    pub async fn orphans(&self) -> Result<Vec<Orphan>, KeysError> {
        self.refresh().await?;
        let versions = self.versions();
        let mut names: Vec<&String> = self.backends().keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let exec = self.backend(name)?;
            let held = exec
                .run("reconcile", |b| match b.inventory() {
                    Some(i) => i.held().map(Some),
                    None => Ok(None),
                })
                .await?;
            let Some(held) = held else { continue };
            let mut known: HashSet<(String, Option<String>)> = HashSet::new();
            for v in versions
                .iter()
                .filter(|v| &v.backend == name && v.state.live())
            {
                match &v.locator {
                    KeyLocator::Pkcs11 { id, .. } => {
                        known.insert((id.to_ascii_lowercase(), None));
                    }
                    KeyLocator::Tpm {
                        parent_handle: Some(h),
                        parent,
                        ..
                    } => {
                        known.insert((format!("{h:08x}"), Some(parent.clone())));
                    }
                    KeyLocator::Tpm { .. } => {}
                }
            }
            for object in held {
                let as_pkcs11 = (object.id.to_ascii_lowercase(), None);
                let as_tpm = (object.id.clone(), Some(object.label.clone()));
                if !known.contains(&as_pkcs11) && !known.contains(&as_tpm) {
                    out.push(Orphan {
                        backend: name.clone(),
                        object,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes those of `ids` on `backend` that are orphans now and still are after
    /// [`ORPHAN_GRACE`], with one audit entry each. Returns the objects removed.
    pub async fn remove_orphans(
        &self,
        backend: &str,
        ids: &[String],
        actor: &AuditActor,
        now: i64,
    ) -> Result<Vec<HeldObject>, KeysError> {
        let wanted = |o: &Orphan| o.backend == backend && ids.contains(&o.object.id);
        let first: Vec<Orphan> = self.orphans().await?.into_iter().filter(wanted).collect();
        if first.is_empty() {
            return Ok(Vec::new());
        }
        tokio::time::sleep(ORPHAN_GRACE).await;
        let still: Vec<Orphan> = self
            .orphans()
            .await?
            .into_iter()
            .filter(|o| wanted(o) && first.contains(o))
            .collect();
        let exec = self.backend(backend)?;
        let mut removed = Vec::new();
        for o in still {
            let obj = o.object.clone();
            exec.run("destroy", move |b| match b.inventory() {
                Some(i) => i.remove(&obj),
                None => Ok(()),
            })
            .await?;
            self.store
                .append_audit(&NewAuditEntry {
                    time: now,
                    actor: actor.clone(),
                    action: "key.orphan-destroy".into(),
                    target: format!("backend:{backend}/object:{}", o.object.id),
                    outcome: format!(
                        "removed {} ({}), which no key version in the store names",
                        o.object.uri, o.object.label
                    ),
                })
                .await?;
            tracing::warn!(backend = %backend, object = %o.object.uri, by = %actor.principal,
                "removed a hardware object no key version names");
            removed.push(o.object);
        }
        Ok(removed)
    }
}
