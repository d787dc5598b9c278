//! Reading and checking the audit log (`docs/audit.md`): entries in seq order, the
//! filtered view and export the console shows, and verification of the chain.
//!
//! Everything here needs `audit:read`. Verification is the one read that costs real work
//! (it rehashes every entry it covers and checks checkpoint signatures), so it is a
//! deliberate act (a POST, never a GET), starts at the last signed checkpoint rather than
//! at entry 1, and is rate limited in this process: one verification at a time, and one
//! per caller every [`VERIFY_INTERVAL_SECS`]. `keygate audit verify` checks the whole
//! chain offline.

use crate::runtime::Runtime;
use crate::services::audit::VerifyReport;
use crate::services::authz::{require, Permission};
use crate::services::{Principal, ServiceError};
use crate::store::audit::AuditEntry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// How many of the newest entries [`list`] and [`export`] search.
pub const WINDOW: i64 = 1000;

/// One caller may start a verification this often (seconds).
pub const VERIFY_INTERVAL_SECS: i64 = 30;

/// Which entries [`list`] and [`export`] keep: each text filter is a case-insensitive
/// substring (empty or absent: any); times are inclusive, seconds since the epoch.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl AuditFilter {
    fn keeps(&self, e: &AuditEntry) -> bool {
        fn contains(hay: &str, needle: &Option<String>) -> bool {
            needle
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
        }
        contains(&e.actor, &self.actor)
            && contains(&e.action, &self.action)
            && contains(&e.target, &self.target)
            && self.from.is_none_or(|t| e.time >= t)
            && self.to.is_none_or(|t| e.time <= t)
    }
}

fn require_read(caller: &Principal) -> Result<(), ServiceError> {
    require(caller.role, Permission::AuditRead, "read the audit log")
}

/// Up to `limit` entries with a seq greater than `after`, in seq order (the service's
/// `entries`).
pub async fn entries(
    rt: &Runtime,
    caller: &Principal,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>, ServiceError> {
    require_read(caller)?;
    rt.audit.entries(after, limit).await
}

/// The newest [`WINDOW`] entries that `filter` keeps, oldest first.
async fn window(rt: &Runtime, filter: &AuditFilter) -> Result<Vec<AuditEntry>, ServiceError> {
    let (head, _) = rt.store.audit_head().await?;
    let mut out = rt
        .audit
        .entries(head.saturating_sub(WINDOW).max(0), WINDOW)
        .await?;
    out.retain(|e| filter.keeps(e));
    Ok(out)
}

/// The newest [`WINDOW`] entries that `filter` keeps, newest first.
pub async fn list(
    rt: &Runtime,
    caller: &Principal,
    filter: &AuditFilter,
) -> Result<Vec<AuditEntry>, ServiceError> {
    require_read(caller)?;
    let mut out = window(rt, filter).await?;
    out.reverse();
    Ok(out)
}

/// The entries [`list`] shows, oldest first, for export (JSONL).
pub async fn export(
    rt: &Runtime,
    caller: &Principal,
    filter: &AuditFilter,
) -> Result<Vec<AuditEntry>, ServiceError> {
    require_read(caller)?;
    window(rt, filter).await
}

/// The seq of the last signed checkpoint (0: none yet).
pub async fn last_checkpoint(rt: &Runtime, caller: &Principal) -> Result<i64, ServiceError> {
    require_read(caller)?;
    Ok(rt.store.last_checkpoint_seq().await?)
}

/// What [`verify`] checked: the report, from which entry.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The first entry checked: the last signed checkpoint's (its signature and hash
    /// anchor everything after it), or 1 when there is none.
    pub from: i64,
    pub report: VerifyReport,
}

/// Callers' last verification starts, and whether one is running, in this process.
struct VerifyGate {
    last: Mutex<HashMap<String, i64>>,
    running: AtomicBool,
}

fn gate() -> &'static VerifyGate {
    static GATE: OnceLock<VerifyGate> = OnceLock::new();
    GATE.get_or_init(|| VerifyGate {
        last: Mutex::new(HashMap::new()),
        running: AtomicBool::new(false),
    })
}

/// Ends a verification's turn, even if the future is dropped midway.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        gate().running.store(false, Ordering::Release);
    }
}

/// Takes `caller`'s turn at `now`, or says when to come back.
fn admit(caller: &str, now: i64) -> Result<Running, ServiceError> {
    let g = gate();
    let mut last = g.last.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&at) = last.get(caller) {
        let next = at.saturating_add(VERIFY_INTERVAL_SECS);
        if now < next {
            return Err(ServiceError::RateLimited {
                detail: format!(
                    "one audit verification per caller every {VERIFY_INTERVAL_SECS} s; retry in {} s",
                    next - now
                ),
                retry_after: u64::try_from(next - now).unwrap_or(1),
            });
        }
    }
    if g.running
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return Err(ServiceError::RateLimited {
            detail: "another audit verification is running; retry shortly".into(),
            retry_after: 5,
        });
    }
    // Forget callers whose interval passed, so the map stays small.
    last.retain(|_, at| at.saturating_add(VERIFY_INTERVAL_SECS) > now);
    last.insert(caller.to_string(), now);
    Ok(Running)
}

/// Verifies the chain from the last signed checkpoint to its head, and that checkpoint's
/// signature (`audit:read`; rate limited, see the module documentation).
pub async fn verify(rt: &Runtime, caller: &Principal, now: i64) -> Result<Verified, ServiceError> {
    require_read(caller)?;
    let _turn = admit(&caller.name, now)?;
    let from = rt.store.last_checkpoint_seq().await?.max(1);
    let report = rt.audit.verify_chain(from).await?;
    Ok(Verified { from, report })
}
