//! Rotation of signing rings: `pending → active → retiring → retired`.
//!
//! A new version is published first (pending) so every verifier's cached JWKS holds it
//! before it signs anything; it becomes active after `rotation.publish_delay`. The
//! version it replaces keeps verifying (retiring) until the longest-lived token it can
//! have signed has expired, and is then retired. Every state change is one store
//! transaction. The current time is always a parameter, so tests drive the clock.

use super::{generate_version, KeyMove, KeyRegistry, KeyState, KeyVersion, KeysError, Purpose};
use crate::store::audit::{AuditActor, NewAuditEntry};
use crate::store::keys::NewVersion;
use crate::store::StoreError;
use std::sync::Arc;

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct RotationTimes {
    /// Seconds a new version stays pending before it signs.
    pub publish_delay: i64,
    /// Seconds a replaced version stays published: the longest token lifetime plus leeway.
    pub retire_after: i64,
}

/// One state change made by [`KeyRegistry::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Scheduled rotation created a pending version.
    Created {
        ring: String,
        version: i64,
    },
    Activated {
        ring: String,
        version: i64,
    },
    Retired {
        ring: String,
        version: i64,
    },
}

impl KeyRegistry {
    /// Creates the next version of `ring` in hardware and records it as pending, or with
    /// `immediate`, as active at once (rotate-now; the previous version starts retiring).
    pub async fn rotate(
        &self,
        ring: &str,
        immediate: bool,
        by: &str,
        now: i64,
    ) -> Result<Arc<KeyVersion>, KeysError> {
        let actor = AuditActor {
            principal: by.to_string(),
            method: "internal".into(),
            client_cert_serial: None,
            request_id: None,
        };
        self.rotate_as(ring, immediate, None, &actor, now).await
    }

    /// [`rotate`](Self::rotate) with the audit actor, and optionally onto another
    /// configured backend (change-backend: the new version is generated there).
    pub async fn rotate_as(
        &self,
        ring: &str,
        immediate: bool,
        backend_name: Option<&str>,
        actor: &AuditActor,
        now: i64,
    ) -> Result<Arc<KeyVersion>, KeysError> {
        let by = actor.principal.as_str();
        let current = self.active(ring)?;
        if current.purpose != Purpose::Jwt {
            return Err(KeysError::Invalid(format!(
                "ring {ring:?} is a {} ring; only JWT-signing rings rotate through this workflow",
                current.purpose.name()
            )));
        }
        let versions = self.versions();
        if versions
            .iter()
            .any(|v| v.ring == ring && v.state == KeyState::Pending)
        {
            return Err(KeysError::Conflict(format!(
                "ring {ring:?} already has a pending version; it activates after the publish delay"
            )));
        }
        let next = versions
            .iter()
            .filter(|v| v.ring == ring)
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1;
        let backend_name = backend_name.unwrap_or(&current.backend).to_string();
        let backend = self.backend(&backend_name)?.clone();
        let generated = generate_version(&backend, ring, next, current.algorithm).await?;
        let locator = serde_json::to_string(&generated.locator)
            .map_err(|e| KeysError::Invalid(format!("locator: {e}")))?;
        let record = NewVersion {
            ring: ring.to_string(),
            version: next,
            backend: backend_name.clone(),
            algorithm: current.algorithm.name().to_string(),
            locator,
            kid: generated.kid,
            public_key: generated.spki,
            now,
        };
        let audit = NewAuditEntry {
            time: now,
            actor: actor.clone(),
            action: if immediate {
                "key.rotate-now"
            } else {
                "key.rotate"
            }
            .into(),
            target: format!("ring:{ring}/version:{next}"),
            outcome: format!(
                "created {} on {backend_name}{}",
                if immediate {
                    KeyState::Active
                } else {
                    KeyState::Pending
                },
                if immediate {
                    format!("; v{} retiring", current.version)
                } else {
                    String::new()
                }
            ),
        };
        if let Err(e) = self.store.insert_version(&record, immediate, &audit).await {
            let loc = generated.locator.clone();
            if let Err(de) = backend.run("destroy", move |b| b.destroy(&loc)).await {
                tracing::error!(ring = %ring, key = %generated.locator.uri(), error = %de,
                    "could not destroy a key whose record failed; it is orphaned on the token");
            }
            return Err(match e {
                StoreError::Conflict(_) => {
                    KeysError::Conflict(format!("ring {ring:?} changed while rotating; retry"))
                }
                other => other.into(),
            });
        }
        self.refresh().await?;
        tracing::info!(ring = %ring, version = next, immediate, by = %by,
            key = %generated.locator.uri(), "rotated key ring");
        self.versions()
            .into_iter()
            .find(|v| v.ring == ring && v.version == next)
            .ok_or_else(|| KeysError::Corrupt(format!("{ring} v{next} vanished after rotation")))
    }

    /// Applies every transition that is due at `now`: pending versions older than the
    /// publish delay become active, retiring versions past `retire_after` are retired.
    /// Reads the in-memory view and touches the store only when something is due.
    pub async fn advance(
        &self,
        times: RotationTimes,
        now: i64,
    ) -> Result<Vec<Transition>, KeysError> {
        let mut done = Vec::new();
        for v in self.versions() {
            // The two timed moves: pending → active and retiring → retired.
            let due = match v.state {
                KeyState::Pending => v.created_at.saturating_add(times.publish_delay) <= now,
                KeyState::Retiring => {
                    v.deactivated_at
                        .unwrap_or(v.created_at)
                        .saturating_add(times.retire_after)
                        <= now
                }
                _ => false,
            };
            if !due {
                continue;
            }
            let audit = |what: &str| NewAuditEntry {
                time: now,
                actor: AuditActor::scheduler(),
                action: format!("key.{what}"),
                target: format!("ring:{}/version:{}", v.ring, v.version),
                outcome: "ok".into(),
            };
            if v.state.after(KeyMove::Activate).is_some() {
                if self
                    .store
                    .activate_version(&v.ring, v.version, now, &audit("activate"))
                    .await?
                {
                    tracing::info!(ring = %v.ring, version = v.version, "key version is now active");
                    done.push(Transition::Activated {
                        ring: v.ring.clone(),
                        version: v.version,
                    });
                }
            } else if self
                .store
                .retire_version(&v.ring, v.version, now, &audit("retire"))
                .await?
            {
                tracing::info!(ring = %v.ring, version = v.version,
                    "key version retired; it no longer verifies");
                done.push(Transition::Retired {
                    ring: v.ring.clone(),
                    version: v.version,
                });
            }
        }
        if !done.is_empty() {
            self.refresh().await?;
        }
        Ok(done)
    }
}
