//! The destructive end of a key's life: regeneration (the active version is replaced at
//! once and marked `compromised`, so verification refuses what it signed), destruction
//! of retired or compromised versions in hardware, and which rings are due for
//! scheduled rotation. Approval gating lives in the service layer; these are the
//! operations it runs once approved. Every state change here is one store transaction
//! together with its audit entry.

use super::{generate_version, KeyMove, KeyRegistry, KeyState, KeyVersion, KeysError, Purpose};
use crate::hardware::{HardwareError, KeyLocator};
use crate::store::audit::{AuditActor, NewAuditEntry};
use crate::store::keys::NewVersion;
use crate::store::StoreError;
use std::sync::Arc;

impl KeyRegistry {
    /// Replaces the active version of `ring` with a new one, active at once, and marks
    /// the old one `compromised`: it leaves the JWKS and the verification cache in the
    /// same step, so every token it signed is refused from now on. For a MAC ring this
    /// invalidates every MAC it made (API keys, refresh tokens).
    pub async fn regenerate(
        &self,
        ring: &str,
        actor: &AuditActor,
        now: i64,
    ) -> Result<Arc<KeyVersion>, KeysError> {
        let current = self.active(ring)?;
        if matches!(current.purpose, Purpose::Tls | Purpose::Audit) {
            return Err(KeysError::Invalid(format!(
                "ring {ring:?} is a {} ring; it cannot be regenerated through this workflow",
                current.purpose.name()
            )));
        }
        let next = self
            .versions()
            .iter()
            .filter(|v| v.ring == ring)
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1;
        let backend = self.backend(&current.backend)?.clone();
        let generated = generate_version(&backend, ring, next, current.algorithm).await?;
        let locator = serde_json::to_string(&generated.locator)
            .map_err(|e| KeysError::Invalid(format!("locator: {e}")))?;
        let record = NewVersion {
            ring: ring.to_string(),
            version: next,
            backend: current.backend.clone(),
            algorithm: current.algorithm.name().to_string(),
            locator,
            kid: generated.kid,
            public_key: generated.spki,
            now,
        };
        let audit = NewAuditEntry {
            time: now,
            actor: actor.clone(),
            action: "key.regenerate".into(),
            target: format!("ring:{ring}/version:{}", current.version),
            outcome: format!("v{} compromised; v{next} active", current.version),
        };
        if let Err(e) = self
            .store
            .replace_compromised(&record, current.version, &audit)
            .await
        {
            let loc = generated.locator.clone();
            if let Err(de) = backend.run("destroy", move |b| b.destroy(&loc)).await {
                tracing::error!(ring = %ring, key = %generated.locator.uri(), error = %de,
                    "could not destroy a key whose record failed; it is orphaned on the token");
            }
            return Err(match e {
                StoreError::Conflict(m) => KeysError::Conflict(m),
                other => other.into(),
            });
        }
        self.refresh().await?;
        tracing::warn!(ring = %ring, compromised = current.version, active = next,
            by = %actor.principal, "regenerated key ring; the old version verifies nothing");
        self.version(ring, next)
    }

    /// The version `version` of `ring`.
    pub fn version(&self, ring: &str, version: i64) -> Result<Arc<KeyVersion>, KeysError> {
        self.versions()
            .into_iter()
            .find(|v| v.ring == ring && v.version == version)
            .ok_or_else(|| KeysError::UnknownRing(format!("{ring} v{version}")))
    }

    /// Checks that `version` of `ring` may be destroyed: it must be retired or
    /// compromised. Active, pending and retiring versions still sign or verify.
    pub fn check_destroyable(&self, ring: &str, version: i64) -> Result<(), KeysError> {
        if !self.ring_exists(ring) {
            return Err(KeysError::UnknownRing(ring.to_string()));
        }
        let v = self.version(ring, version)?;
        match v.state {
            _ if v.state.after(KeyMove::Destroy).is_some() => Ok(()),
            KeyState::Destroyed => Err(KeysError::Conflict(format!(
                "{ring} v{version} is already destroyed"
            ))),
            other => Err(KeysError::Conflict(format!(
                "{ring} v{version} is {other}; only retired or compromised versions can be destroyed"
            ))),
        }
    }

    /// Removes a retired or compromised version from its hardware and records it as
    /// `destroyed`. The hardware object goes first: a key the hardware no longer has is
    /// treated as gone (a crash between the two steps is completed by a retry), while a
    /// store failure after the hardware step leaves a record that `reconcile` reports.
    ///
    /// A TPM version's wrapped private blob is erased from its stored locator in the
    /// transaction that marks it destroyed, and its own storage parent is evicted from
    /// the TPM first, so no copy of the old row can be loaded again (docs/tpm.md).
    pub async fn destroy_version(
        &self,
        ring: &str,
        version: i64,
        actor: &AuditActor,
        now: i64,
    ) -> Result<(), KeysError> {
        self.check_destroyable(ring, version)?;
        let v = self.version(ring, version)?;
        // Recorded before the hardware step: a crash between it and the store step
        // leaves an intent that the next start completes.
        self.store.record_destroy_intent(ring, version, now).await?;
        let loc = v.locator.clone();
        match self
            .backend(&v.backend)?
            .run("destroy", move |b| b.destroy(&loc))
            .await
        {
            Ok(()) | Err(HardwareError::KeyNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let erased = match &v.locator {
            KeyLocator::Tpm {
                parent,
                parent_handle,
                label,
                public,
                ..
            } => Some(KeyLocator::Tpm {
                parent: parent.clone(),
                parent_handle: *parent_handle,
                label: label.clone(),
                public: public.clone(),
                private: String::new(),
            }),
            KeyLocator::Pkcs11 { .. } => None,
        };
        let outcome = match &v.locator {
            KeyLocator::Tpm {
                parent_handle: Some(h),
                ..
            } => format!(
                "removed {} from backend {}: storage parent {h:#010x} evicted from the TPM, loaded handle flushed, wrapped private blob erased from the store",
                v.locator.uri(),
                v.backend
            ),
            KeyLocator::Tpm { .. } => format!(
                "removed {} from backend {}: loaded handle flushed, wrapped private blob erased from the store",
                v.locator.uri(),
                v.backend
            ),
            KeyLocator::Pkcs11 { .. } => {
                format!("removed {} from backend {}", v.locator.uri(), v.backend)
            }
        };
        let audit = NewAuditEntry {
            time: now,
            actor: actor.clone(),
            action: "key.destroy".into(),
            target: format!("ring:{ring}/version:{version}"),
            outcome,
        };
        let marked = match erased {
            Some(loc) => {
                let json = serde_json::to_string(&loc)
                    .map_err(|e| KeysError::Invalid(format!("locator: {e}")))?;
                self.store
                    .mark_destroyed_erasing(ring, version, now, &json, &audit)
                    .await?
            }
            None => {
                self.store
                    .mark_destroyed(ring, version, now, &audit)
                    .await?
            }
        };
        if !marked {
            return Err(KeysError::Conflict(format!(
                "{ring} v{version} changed state while it was being destroyed"
            )));
        }
        self.refresh().await?;
        tracing::warn!(ring = %ring, version, by = %actor.principal, "destroyed key version in hardware");
        Ok(())
    }

    /// Completes destroys a crash interrupted between the hardware step and the store
    /// step (start-up, and `keygate keys reconcile`). The hardware step is idempotent: a
    /// key already gone counts as destroyed. Returns what it completed or could not.
    pub async fn complete_interrupted_destroys(&self, now: i64) -> Vec<String> {
        let pending = match self.store.unfinished_destroys().await {
            Ok(p) => p,
            Err(e) => return vec![format!("listing unfinished destroys: {e}")],
        };
        if pending.is_empty() {
            return Vec::new();
        }
        if let Err(e) = self.refresh().await {
            return vec![format!("reading key versions: {e}")];
        }
        let actor = AuditActor {
            principal: "keygate".into(),
            method: "reconcile".into(),
            client_cert_serial: None,
            request_id: None,
        };
        let mut report = Vec::new();
        for (ring, version) in pending {
            match self.destroy_version(&ring, version, &actor, now).await {
                Ok(()) => {
                    tracing::warn!(ring = %ring, version, "completed a destroy a crash had interrupted");
                    report.push(format!(
                        "{ring} v{version}: completed an interrupted destroy"
                    ));
                }
                Err(e) => report.push(format!(
                    "{ring} v{version}: an interrupted destroy could not be completed: {e}"
                )),
            }
        }
        report
    }

    /// JWT-signing rings whose active version has been active for at least their period
    /// at `now` and that have no pending version: the rings scheduled rotation should
    /// rotate. `period_of` gives a ring's period, `None` for no scheduled rotation.
    pub fn due_for_rotation(
        &self,
        period_of: &impl Fn(&str) -> Option<i64>,
        now: i64,
    ) -> Vec<String> {
        let versions = self.versions();
        versions
            .iter()
            .filter(|v| v.state == KeyState::Active && v.purpose == Purpose::Jwt)
            .filter(|v| {
                !versions
                    .iter()
                    .any(|p| p.ring == v.ring && p.state == KeyState::Pending)
            })
            .filter(|v| {
                period_of(&v.ring).is_some_and(|p| {
                    v.activated_at.unwrap_or(v.created_at).saturating_add(p) <= now
                })
            })
            .map(|v| v.ring.clone())
            .collect()
    }

    /// Scheduled rotation, one step at `now`: the process holding the store lease
    /// `key-rotation` (taken or renewed here for `lease_ttl` seconds) creates the next,
    /// pending version of every ring [`due_for_rotation`](Self::due_for_rotation) names.
    /// Other processes do nothing here; [`advance`](Self::advance) then moves states on
    /// wherever it runs, since each of its steps is a compare-and-set. Returns the
    /// versions created.
    pub async fn run_schedule(
        &self,
        period_of: impl Fn(&str) -> Option<i64>,
        holder: &str,
        lease_ttl: i64,
        now: i64,
    ) -> Result<Vec<super::rotation::Transition>, KeysError> {
        if self.due_for_rotation(&period_of, now).is_empty() {
            return Ok(Vec::new());
        }
        if !self
            .store
            .take_lease("key-rotation", holder, now, lease_ttl)
            .await?
        {
            return Ok(Vec::new());
        }
        // Another replica may have rotated just before this one took the lease.
        self.refresh().await?;
        let mut done = Vec::new();
        for ring in self.due_for_rotation(&period_of, now) {
            match self
                .rotate_as(&ring, false, None, &AuditActor::scheduler(), now)
                .await
            {
                Ok(v) => {
                    tracing::info!(ring = %ring, version = v.version, "scheduled rotation created a pending version");
                    done.push(super::rotation::Transition::Created {
                        ring: ring.clone(),
                        version: v.version,
                    });
                }
                // Lost a race with a replica whose lease expired mid-rotation: its
                // version stands, ours was destroyed again.
                Err(KeysError::Conflict(m)) => {
                    tracing::info!(ring = %ring, reason = %m, "scheduled rotation skipped")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
