//! The audit log as a service: records entries that are not part of a store change made
//! here (HTTP requests, authentication failures), signs checkpoints of the chain head
//! with the `audit` ring in hardware, publishes the ring's public keys, and verifies the
//! whole chain (`keygate audit verify`).
//!
//! Entries for state changes are written by the store in the same transaction as the
//! change (see [`crate::store::audit_scope`]); this service adds the checkpoints over
//! them, and the aggregated entries of refused and failed requests
//! ([`crate::services::audit_buckets`]).

use crate::config::AuditConfig;
use crate::keys::verify::verify_signature;
use crate::keys::{KeyRegistry, KeyVersion, Purpose};
use crate::services::audit_buckets::{entry_of, Failure, FailureBuckets};
use crate::services::ServiceError;
use crate::store::audit::{sha256, AuditEntry, Checkpoint, NewAuditEntry};
use crate::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ring whose hardware key signs approvals and audit checkpoints.
pub const AUDIT_RING: &str = crate::keys::ReservedRing::Audit.name();

/// Entries read per page while verifying or exporting.
const PAGE: i64 = 1000;

/// The first broken link, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

/// What `verify` checked.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    pub last_seq: i64,
    /// The lowest broken seq found by the chain or a checkpoint, if any.
    pub broken: Option<Broken>,
    /// Problems that have no seq (an audit key the hardware disagrees with).
    pub problems: Vec<String>,
}

pub struct AuditService {
    store: Store,
    keys: Arc<KeyRegistry>,
    config: AuditConfig,
    /// Serializes checkpoint signing in this process.
    checkpointing: tokio::sync::Mutex<()>,
    /// Refused and failed requests, aggregated until their minute ends.
    failures: FailureBuckets,
}

impl std::fmt::Debug for AuditService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService").finish_non_exhaustive()
    }
}

impl AuditService {
    pub fn new(store: Store, keys: Arc<KeyRegistry>, config: AuditConfig) -> AuditService {
        AuditService {
            store,
            keys,
            config,
            checkpointing: tokio::sync::Mutex::new(()),
            failures: FailureBuckets::default(),
        }
    }

    /// Counts a refused or failed request in its (source, actor, reason, minute) bucket;
    /// [`flush_failures`](Self::flush_failures) writes the bucket as one entry.
    pub fn count_failure(&self, f: Failure) {
        self.failures.count(f);
    }

    /// Writes every bucket whose minute has ended (every bucket with `all`, at shutdown)
    /// as one entry with its count, in one transaction. On failure the buckets are kept
    /// for the next flush and the error is returned (already counted and logged).
    /// Returns the number of entries written.
    pub async fn flush_failures(&self, now: i64, all: bool) -> Result<usize, ServiceError> {
        let buckets = self.failures.take_closed(now, all);
        if buckets.is_empty() {
            return Ok(0);
        }
        let entries: Vec<(NewAuditEntry, String, i64)> = buckets
            .iter()
            .map(|(k, n)| (entry_of(k), k.source.clone(), *n))
            .collect();
        if let Err(e) = self.store.append_audit_aggregates(&entries).await {
            self.failures.restore(buckets);
            return Err(e.into());
        }
        self.checkpoint_if_due(now, false).await;
        Ok(entries.len())
    }

    /// Appends an entry on its own (not tied to a store change), then checkpoints if
    /// `audit.checkpoint_every` entries have gathered. A failure is counted
    /// (`keygate_audit_write_failures_total`), logged and returned.
    pub async fn record(&self, e: NewAuditEntry) -> Result<i64, ServiceError> {
        let seq = self.store.append_audit(&e).await?;
        self.checkpoint_if_due(e.time, false).await;
        Ok(seq)
    }

    /// Signs a checkpoint when `checkpoint_every` entries passed since the last one, or
    /// (with `on_timer`) whenever the head moved since the last one.
    pub async fn checkpoint_if_due(&self, now: i64, on_timer: bool) {
        let due = async {
            let (head, _) = self.store.audit_head().await?;
            let last = self.store.last_checkpoint_seq().await?;
            let every = i64::try_from(self.config.checkpoint_every).unwrap_or(i64::MAX);
            Ok::<bool, crate::store::StoreError>(head > last && (on_timer || head - last >= every))
        };
        match due.await {
            Ok(true) => {
                if let Err(e) = self.checkpoint(now).await {
                    tracing::warn!(error = %e, "audit checkpoint failed; retrying later");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the audit head"),
        }
    }

    /// Signs the current chain head with the audit ring and records it. Returns the
    /// checkpoint's seq (0 when the log is empty).
    pub async fn checkpoint(&self, now: i64) -> Result<i64, ServiceError> {
        let _one = self.checkpointing.lock().await;
        let (seq, head_hash) = self.store.audit_head().await?;
        if seq == 0 || self.store.last_checkpoint_seq().await? >= seq {
            return Ok(seq);
        }
        let v = self.keys.active(AUDIT_RING)?;
        let msg = Checkpoint::signed_bytes(seq, &head_hash, now, &v.kid);
        let signature = self.keys.sign(&v, msg).await?.0;
        let kid = v.kid.clone();
        self.store
            .insert_checkpoint(&Checkpoint {
                seq,
                head_hash,
                time: now,
                kid,
                signature,
            })
            .await?;
        Ok(seq)
    }

    /// Signs `msg` with the audit ring's active version in hardware: (kid, signature).
    pub async fn sign(&self, msg: Vec<u8>) -> Result<(String, Vec<u8>), ServiceError> {
        let v = self.keys.active(AUDIT_RING)?;
        let sig = self.keys.sign(&v, msg).await?;
        Ok((v.kid.clone(), sig.0))
    }

    /// The audit ring's versions (every state: old signatures stay verifiable).
    pub fn audit_versions(&self) -> Vec<Arc<KeyVersion>> {
        self.keys
            .versions()
            .into_iter()
            .filter(|v| v.purpose == Purpose::Audit)
            .collect()
    }

    /// Whether `sig` over `msg` verifies under the audit version `kid`.
    pub fn verify(&self, kid: &str, msg: &[u8], sig: &[u8]) -> bool {
        self.audit_versions()
            .iter()
            .find(|v| v.kid == kid)
            .and_then(|v| {
                v.public_key
                    .as_ref()
                    .map(|p| verify_signature(p, v.algorithm, msg, sig))
            })
            .unwrap_or(false)
    }

    /// `GET /api/v1/audit/keys`: the audit ring's public keys as a JWK Set, with each
    /// version's state.
    pub fn public_keys(&self) -> Value {
        let keys: Vec<Value> = self
            .audit_versions()
            .iter()
            .filter_map(|v| {
                v.public_key.as_ref().map(|p| {
                    let mut jwk = p.jwk(&v.kid);
                    if let Value::Object(m) = &mut jwk {
                        m.insert("keygate_state".into(), json!(v.state));
                        m.insert("keygate_version".into(), json!(v.version));
                    }
                    jwk
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Entries after `after`, at most `limit`.
    pub async fn entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, ServiceError> {
        Ok(self.store.audit_entries(after, limit).await?)
    }

    /// Checks that each audit key in the store is the key its hardware holds, so a
    /// public key swapped in the database cannot vouch for forged signatures.
    pub async fn check_keys_against_hardware(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for v in self.audit_versions() {
            if !v.state.live() {
                continue;
            }
            let Ok(backend) = self.keys.backend(&v.backend) else {
                problems.push(format!(
                    "audit key v{}: backend {:?} is not configured",
                    v.version, v.backend
                ));
                continue;
            };
            let loc = v.locator.clone();
            match backend.run("public_key", move |b| b.public_key(&loc)).await {
                Ok(found) => {
                    if v.public_key
                        .as_ref()
                        .map(|p| p.material != found.material)
                        .unwrap_or(true)
                    {
                        problems.push(format!(
                            "audit key v{} ({}): the stored public key is not the key in the hardware",
                            v.version, v.kid
                        ));
                    }
                }
                Err(e) => problems.push(format!("audit key v{}: {e}", v.version)),
            }
        }
        problems
    }

    /// Verifies the chain from `from` (1 for all) to its head, and every checkpoint at or
    /// after `from`: its signature under the audit ring, and that it matches the chain.
    pub async fn verify_chain(&self, from: i64) -> Result<VerifyReport, ServiceError> {
        let from = from.max(1);
        let mut report = VerifyReport::default();
        let mut candidates: Vec<Broken> = Vec::new();
        let checkpoints: BTreeMap<i64, Checkpoint> = self
            .store
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.seq >= from)
            .map(|c| (c.seq, c))
            .collect();
        // The link into `from` is trusted as stored: entries before it are not checked.
        let (mut prev_seq, mut prev_hash) = if from > 1 {
            match self.store.audit_entry(from - 1).await? {
                Some(e) => (e.seq, e.hash),
                None => (from - 1, Vec::new()),
            }
        } else {
            (0, vec![0u8; 32])
        };
        let mut computed: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let mut after = from - 1;
        let mut chain_ok = true;
        loop {
            let page = self.store.audit_entries(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in page {
                report.entries += 1;
                report.last_seq = e.seq;
                if !chain_ok {
                    continue;
                }
                let broken = |reason: String| Broken { seq: e.seq, reason };
                if e.seq != prev_seq + 1 {
                    candidates.push(Broken {
                        seq: prev_seq + 1,
                        reason: format!(
                            "entry {} is missing: entry {} follows entry {prev_seq}",
                            prev_seq + 1,
                            e.seq
                        ),
                    });
                    chain_ok = false;
                    continue;
                }
                let h = e.compute_hash();
                if h != e.hash {
                    candidates.push(broken(format!(
                        "entry {} was altered: its content does not match its hash",
                        e.seq
                    )));
                    chain_ok = false;
                    continue;
                }
                if !prev_hash.is_empty() && e.prev_hash != prev_hash {
                    candidates.push(broken(format!(
                        "entry {} does not follow entry {prev_seq}: prev_hash differs (an entry was altered, removed or reordered)",
                        e.seq
                    )));
                    chain_ok = false;
                    continue;
                }
                if checkpoints.contains_key(&e.seq) {
                    computed.insert(e.seq, h.clone());
                }
                prev_seq = e.seq;
                prev_hash = h;
            }
        }
        let (head_seq, _) = self.store.audit_head().await?;
        if chain_ok && head_seq > prev_seq && head_seq >= from {
            candidates.push(Broken {
                seq: prev_seq + 1,
                reason: format!(
                    "entries {} to {head_seq} are missing: the chain head says {head_seq}",
                    prev_seq + 1
                ),
            });
        }
        for c in checkpoints.values() {
            report.checkpoints += 1;
            let msg = Checkpoint::signed_bytes(c.seq, &c.head_hash, c.time, &c.kid);
            if !self.verify(&c.kid, &msg, &c.signature) {
                candidates.push(Broken {
                    seq: c.seq,
                    reason: format!(
                        "checkpoint at entry {}: the audit ring's signature does not verify",
                        c.seq
                    ),
                });
                continue;
            }
            match computed.get(&c.seq) {
                Some(h) if *h == c.head_hash => {}
                Some(_) => candidates.push(Broken {
                    seq: c.seq,
                    reason: format!(
                        "entry {} differs from the signed checkpoint of the chain head",
                        c.seq
                    ),
                }),
                // Not reached by an intact chain: missing, or after the first break.
                None if chain_ok => candidates.push(Broken {
                    seq: c.seq,
                    reason: format!("entry {} is missing: a signed checkpoint covers it", c.seq),
                }),
                None => {}
            }
        }
        report.broken = candidates.into_iter().min_by_key(|b| b.seq);
        Ok(report)
    }

    /// SHA-256 helper for callers that sign digests of records.
    pub fn digest(bytes: &[u8]) -> Vec<u8> {
        sha256(bytes)
    }
}
