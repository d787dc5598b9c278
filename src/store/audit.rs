//! The audit log: a hash chain of entries plus checkpoints signed by the `audit` ring.
//!
//! An entry's hash is SHA-256 over its canonical bytes: the JSON object of every field
//! (binary fields in lowercase hex) with keys sorted and no whitespace. Those bytes hold
//! `prev_hash`, the previous entry's hash, so changing, removing or reordering any entry
//! breaks every link after it. Appends run inside the caller's transaction, so an entry
//! commits or rolls back with the change it records; the first statement of an append
//! updates the one-row `audit_head`, which takes the write lock, so two appends can never
//! fork the chain.

use super::{Store, StoreError};
reuse_shared!(audit);
use serde_json::json;
use sqlx::Row;

shared! {
/// Who did something, as written in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    /// The principal (`docs/roles.md`), or `anonymous`, or `keygate` for the
    /// server's own scheduled work.
    pub principal: String,
    /// `api-key:<id>`, `access-token`, `key-file`, `idp:<oauth_id>`, `cli`, `scheduler`,
    /// `none`.
    pub method: String,
    /// The client certificate's serial when the request came over mutual TLS.
    pub client_cert_serial: Option<String>,
    pub request_id: Option<String>,
}

impl AuditActor {
    /// keygate's own background work.
    pub fn scheduler() -> AuditActor {
        AuditActor {
            principal: "keygate".into(),
            method: "scheduler".into(),
            client_cert_serial: None,
            request_id: None,
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub time: i64,
    pub actor: AuditActor,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub time: i64,
    pub actor: String,
    pub auth_method: String,
    pub client_cert_serial: Option<String>,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: Option<String>,
    /// The client address of an aggregated entry (see [`append_aggregate_in`]).
    pub source: Option<String>,
    /// How many events the entry stands for: 1, or the size of an aggregated bucket.
    pub count: i64,
    #[serde(serialize_with = "hex_ser")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "hex_ser")]
    pub hash: Vec<u8>,
}

fn hex_ser<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(b))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl AuditEntry {
    /// The canonical bytes the hash covers: every field but `hash`, as sorted-key JSON.
    /// `source` and `count` are covered when set (not `None`, not 1), so entries written
    /// before those fields existed keep their hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // serde_json's map is ordered by key, so this serialization is canonical.
        let mut v = json!({
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "auth_method": self.auth_method,
            "client_cert_serial": self.client_cert_serial,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "prev_hash": hex(&self.prev_hash),
        });
        if let Some(m) = v.as_object_mut() {
            if let Some(src) = &self.source {
                m.insert("source".into(), json!(src));
            }
            if self.count != 1 {
                m.insert("count".into(), json!(self.count));
            }
        }
        v.to_string().into_bytes()
    }

    /// SHA-256 of [`canonical_bytes`](Self::canonical_bytes).
    pub fn compute_hash(&self) -> Vec<u8> {
        sha256(&self.canonical_bytes())
    }
}

pub fn sha256(b: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub time: i64,
    pub kid: String,
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The bytes the audit ring signs.
    pub fn signed_bytes(seq: i64, head_hash: &[u8], time: i64, kid: &str) -> Vec<u8> {
        json!({"checkpoint": seq, "head_hash": hex(head_hash), "time": time, "kid": kid})
            .to_string()
            .into_bytes()
    }
}
}

/// Appends `e` inside `tx` and returns its seq. The caller commits. A failure is counted
/// (`keygate_audit_write_failures_total`) and logged before it is returned.
pub async fn append_in(tx: &mut super::DbConn, e: &NewAuditEntry) -> Result<i64, StoreError> {
    append_counted_in(tx, e, None, 1).await
}

/// Appends one entry standing for `count` events from `source` (an aggregated bucket of
/// refused or failed requests, see `docs/lifecycle.md`).
pub async fn append_aggregate_in(
    tx: &mut super::DbConn,
    e: &NewAuditEntry,
    source: &str,
    count: i64,
) -> Result<i64, StoreError> {
    append_counted_in(tx, e, Some(source), count).await
}

async fn append_counted_in(
    tx: &mut super::DbConn,
    e: &NewAuditEntry,
    source: Option<&str>,
    count: i64,
) -> Result<i64, StoreError> {
    match write_entry(tx, e, source, count).await {
        Ok(seq) => {
            super::audit_scope::note_written();
            Ok(seq)
        }
        Err(err) => {
            super::audit_scope::audit_write_failed(&e.action, &e.target, &err);
            Err(err)
        }
    }
}

async fn write_entry(
    tx: &mut super::DbConn,
    e: &NewAuditEntry,
    source: Option<&str>,
    count: i64,
) -> Result<i64, StoreError> {
    // Writing first takes the write lock (SQLite) before the head is read.
    let row = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut *tx)
        .await?;
    let (seq, prev_hash): (i64, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?);
    let mut entry = AuditEntry {
        seq,
        time: e.time,
        actor: e.actor.principal.clone(),
        auth_method: e.actor.method.clone(),
        client_cert_serial: e.actor.client_cert_serial.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        outcome: e.outcome.clone(),
        request_id: e.actor.request_id.clone(),
        source: source.map(str::to_string),
        count,
        prev_hash,
        hash: Vec::new(),
    };
    entry.hash = entry.compute_hash();
    sqlx::query(
        "INSERT INTO audit_log (seq, time, actor, auth_method, client_cert_serial, action,
                                target, outcome, request_id, prev_hash, hash, source, count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(entry.seq)
    .bind(entry.time)
    .bind(&entry.actor)
    .bind(&entry.auth_method)
    .bind(&entry.client_cert_serial)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.outcome)
    .bind(&entry.request_id)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .bind(&entry.source)
    .bind(entry.count)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&entry.hash)
        .execute(&mut *tx)
        .await?;
    Ok(seq)
}

fn entry_from(row: &super::DbRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        seq: row.try_get(0)?,
        time: row.try_get(1)?,
        actor: row.try_get(2)?,
        auth_method: row.try_get(3)?,
        client_cert_serial: row.try_get(4)?,
        action: row.try_get(5)?,
        target: row.try_get(6)?,
        outcome: row.try_get(7)?,
        request_id: row.try_get(8)?,
        prev_hash: row.try_get(9)?,
        hash: row.try_get(10)?,
        source: row.try_get(11)?,
        count: row.try_get(12)?,
    })
}

impl Store {
    /// Begins a transaction that holds the write lock from its start (`BEGIN
    /// IMMEDIATE`), for read-then-write changes that must not interleave.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, super::Db>, StoreError> {
        Ok(super::begin_write(self.pool()).await?)
    }

    /// Appends one entry in its own transaction (for records not tied to a store change
    /// of this process: HTTP refusals, TLS reloads).
    pub async fn append_audit(&self, e: &NewAuditEntry) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let seq = append_in(&mut tx, e).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Appends aggregated entries (one per bucket: entry, source, count) in one
    /// transaction: all or none.
    pub async fn append_audit_aggregates(
        &self,
        entries: &[(NewAuditEntry, String, i64)],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for (e, source, count) in entries {
            append_aggregate_in(&mut tx, e, source, *count).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` entries with seq > `after`, in order.
    pub async fn audit_entries(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, time, actor, auth_method, client_cert_serial, action, target, outcome,
                    request_id, prev_hash, hash, source, count
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(entry_from)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// The stored entry `seq`, if any.
    pub async fn audit_entry(&self, seq: i64) -> Result<Option<AuditEntry>, StoreError> {
        Ok(self
            .audit_entries(seq - 1, 1)
            .await?
            .into_iter()
            .find(|e| e.seq == seq))
    }

    /// The chain head as recorded: (last seq, its hash).
    pub async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The last checkpoint's seq (0 before the first).
    pub async fn last_checkpoint_seq(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Records a checkpoint; a second one for the same seq is ignored (another replica
    /// made it). Returns whether this call recorded it.
    pub async fn insert_checkpoint(&self, c: &Checkpoint) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, time, kid, signature)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(c.seq)
        .bind(&c.head_hash)
        .bind(c.time)
        .bind(&c.kid)
        .bind(&c.signature)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every checkpoint, in order.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, head_hash, time, kid, signature FROM audit_checkpoints ORDER BY seq",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    seq: r.try_get(0)?,
                    head_hash: r.try_get(1)?,
                    time: r.try_get(2)?,
                    kid: r.try_get(3)?,
                    signature: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
