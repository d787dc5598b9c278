//! Approval requests and their votes. Every state change is a compare-and-set `UPDATE`
//! in a transaction that also appends its audit entry, so concurrent approvers cannot
//! run an operation twice and the log cannot miss a step.

use super::audit::{append_in, NewAuditEntry};
use super::{Store, StoreError};
reuse_shared!(approvals);
use sqlx::Row;

shared! {
/// One stored approval request.
#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: String,
    pub operation: String,
    pub target: String,
    pub params: String,
    pub requested_by: String,
    pub requested_at: i64,
    pub expires_at: i64,
    pub required: i64,
    pub approvers: String,
    pub state: String,
    pub outcome: Option<String>,
    pub decided_at: Option<i64>,
    pub sig_kid: String,
    pub request_sig: Vec<u8>,
    /// The requester's credential, `<kind>:<id>` (empty on requests made before it was
    /// recorded).
    pub requested_with: String,
}

/// One stored vote.
#[derive(Debug, Clone)]
pub struct VoteRow {
    pub approval_id: String,
    pub principal: String,
    pub decision: String,
    pub at: i64,
    pub sig_kid: String,
    pub signature: Vec<u8>,
    /// The credential the vote was cast with, `<kind>:<id>`.
    pub credential: String,
}

/// What recording a vote led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteResult {
    /// Recorded; still waiting for more approvals.
    Recorded,
    /// Recorded, and this vote moved the request to `executing`: the caller runs it.
    Execute,
    /// Recorded a rejection; the request is now `rejected`.
    Rejected,
}
}

const COLUMNS: &str = "id, operation, target, params, requested_by, requested_at, expires_at,
    required, approvers, state, outcome, decided_at, sig_kid, request_sig, requested_with";

fn row_from(r: &super::DbRow) -> Result<ApprovalRow, sqlx::Error> {
    Ok(ApprovalRow {
        id: r.try_get(0)?,
        operation: r.try_get(1)?,
        target: r.try_get(2)?,
        params: r.try_get(3)?,
        requested_by: r.try_get(4)?,
        requested_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        required: r.try_get(7)?,
        approvers: r.try_get(8)?,
        state: r.try_get(9)?,
        outcome: r.try_get(10)?,
        decided_at: r.try_get(11)?,
        sig_kid: r.try_get(12)?,
        request_sig: r.try_get(13)?,
        requested_with: r.try_get(14)?,
    })
}

impl Store {
    /// Records a new pending request with its audit entry.
    pub async fn insert_approval(
        &self,
        a: &ApprovalRow,
        audit: &NewAuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
        ))
        .bind(&a.id)
        .bind(&a.operation)
        .bind(&a.target)
        .bind(&a.params)
        .bind(&a.requested_by)
        .bind(a.requested_at)
        .bind(a.expires_at)
        .bind(a.required)
        .bind(&a.approvers)
        .bind(&a.state)
        .bind(&a.outcome)
        .bind(a.decided_at)
        .bind(&a.sig_kid)
        .bind(&a.request_sig)
        .bind(&a.requested_with)
        .execute(&mut *tx)
        .await?;
        append_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_approval(&self, id: &str) -> Result<ApprovalRow, StoreError> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row_from(&r)?)
    }

    /// Every request, newest first, at most `limit`.
    pub async fn list_approvals(&self, limit: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM approvals ORDER BY requested_at DESC, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(row_from)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// The votes on request `id`, in the order they were cast.
    pub async fn votes(&self, id: &str) -> Result<Vec<VoteRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT approval_id, principal, decision, at, sig_kid, signature, credential
             FROM approval_votes WHERE approval_id = $1 ORDER BY at, {}",
            super::ROWID
        ))
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VoteRow {
                    approval_id: r.try_get(0)?,
                    principal: r.try_get(1)?,
                    decision: r.try_get(2)?,
                    at: r.try_get(3)?,
                    sig_kid: r.try_get(4)?,
                    signature: r.try_get(5)?,
                    credential: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Records a vote, in one transaction with its audit entry: refused (Conflict) when
    /// the request is no longer pending, has expired at `v.at`, or `v.principal` already
    /// voted. An approval that reaches `required` moves the request to `executing` in the
    /// same transaction (compare-and-set), so exactly one voter gets [`VoteResult::Execute`].
    pub async fn cast_vote(
        &self,
        v: &VoteRow,
        audit: &NewAuditEntry,
    ) -> Result<VoteResult, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT state, expires_at, required FROM approvals WHERE id = $1")
            .bind(&v.approval_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let (state, expires_at, required): (String, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if state != "pending" {
            return Err(StoreError::Conflict(format!("the request is {state}")));
        }
        if expires_at <= v.at {
            return Err(StoreError::Conflict("the request has expired".into()));
        }
        sqlx::query(
            "INSERT INTO approval_votes (approval_id, principal, decision, at, sig_kid, signature,
                                         credential)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&v.approval_id)
        .bind(&v.principal)
        .bind(&v.decision)
        .bind(v.at)
        .bind(&v.sig_kid)
        .bind(&v.signature)
        .bind(&v.credential)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("{} already decided on this request", v.principal))
            }
            other => other,
        })?;
        let result = if v.decision == "reject" {
            sqlx::query(
                "UPDATE approvals SET state = 'rejected', decided_at = $2, outcome = $3
                 WHERE id = $1 AND state = 'pending'",
            )
            .bind(&v.approval_id)
            .bind(v.at)
            .bind(format!("rejected by {}", v.principal))
            .execute(&mut *tx)
            .await?;
            VoteResult::Rejected
        } else {
            let approvals: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM approval_votes WHERE approval_id = $1 AND decision = 'approve'",
            )
            .bind(&v.approval_id)
            .fetch_one(&mut *tx)
            .await?;
            if approvals >= required && claim_in(&mut tx, &v.approval_id, v.at).await? {
                VoteResult::Execute
            } else {
                VoteResult::Recorded
            }
        };
        append_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(result)
    }

    /// Records how an executing request ended (`executed` or `failed`), with its audit
    /// entry. False when it was not executing.
    pub async fn finish_approval(
        &self,
        id: &str,
        state: &str,
        outcome: &str,
        now: i64,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE approvals SET state = $2, outcome = $3, decided_at = $4
             WHERE id = $1 AND state = 'executing'",
        )
        .bind(id)
        .bind(state)
        .bind(outcome)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        append_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks an executed `create-super-admin-key` request as redeemed by its requester,
    /// once (compare-and-set), and inserts the key it yields, in ONE transaction with both
    /// audit entries: a request yields exactly one key however many redemptions race, and
    /// a crash leaves both or neither. False (nothing written) when it is not redeemable
    /// (another redemption won, or it is not executed, or it expired at `now`).
    #[allow(clippy::too_many_arguments)]
    pub async fn redeem_approval_into_key(
        &self,
        id: &str,
        requested_by: &str,
        now: i64,
        audit: &NewAuditEntry,
        key: &super::api_keys::ApiKeyRow,
        digest: &super::api_keys::SecretDigest,
        max_per_owner: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE approvals SET redeemed_at = $2
             WHERE id = $1 AND requested_by = $3 AND state = 'executed'
               AND operation = 'create-super-admin-key' AND redeemed_at IS NULL
               AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .bind(requested_by)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        append_in(&mut tx, audit).await?;
        append_in(
            &mut tx,
            &NewAuditEntry {
                time: now,
                actor: audit.actor.clone(),
                action: "api-key.create".into(),
                target: key.id.clone(),
                outcome: "ok".into(),
            },
        )
        .await?;
        super::api_keys::insert_api_key_in(&mut tx, key, digest, max_per_owner).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// When request `id` was redeemed, if it was.
    pub async fn approval_redeemed_at(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT redeemed_at FROM approvals WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?
                .flatten(),
        )
    }

    /// Marks pending requests whose time ran out at `now` as expired, one audit entry
    /// each. Returns the ids expired.
    pub async fn expire_approvals(
        &self,
        now: i64,
        audit: impl Fn(&str) -> NewAuditEntry,
    ) -> Result<Vec<String>, StoreError> {
        // A cheap read first: the write lock is taken only when something is due.
        let due: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approvals WHERE state = 'pending' AND expires_at <= $1",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        if due == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE approvals SET state = 'expired', decided_at = $1, outcome = 'expired'
             WHERE state = 'pending' AND expires_at <= $1 RETURNING id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            append_in(&mut tx, &audit(id)).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }
}

impl Store {
    /// Marks requests still `executing` since before `cutoff` as `failed` with `outcome`
    /// (the process running them was killed mid-way), one audit entry each. Returns
    /// their ids and operations.
    pub async fn fail_interrupted_approvals(
        &self,
        cutoff: i64,
        now: i64,
        outcome: &str,
        audit: impl Fn(&str, &str) -> NewAuditEntry,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // A cheap read first: the write lock is taken only when something is stuck.
        let due: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approvals WHERE state = 'executing' AND decided_at <= $1",
        )
        .bind(cutoff)
        .fetch_one(self.pool())
        .await?;
        if due == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "UPDATE approvals SET state = 'failed', decided_at = $2, outcome = $3
             WHERE state = 'executing' AND decided_at <= $1 RETURNING id, operation",
        )
        .bind(cutoff)
        .bind(now)
        .bind(outcome)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (id, op): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            append_in(&mut tx, &audit(&id, &op)).await?;
            out.push((id, op));
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// pending → executing, compare-and-set.
async fn claim_in(tx: &mut super::DbConn, id: &str, now: i64) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE approvals SET state = 'executing', decided_at = $2
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(r.rows_affected() == 1)
}
