//! Who is acting, for audit entries written inside the store's own transactions.
//!
//! Every state change made for a caller writes its audit entry in the transaction of the
//! change (see `docs/lifecycle.md`, "Audit log"): the change and its entry commit or roll
//! back together, and a change whose entry cannot be written fails as a whole. The store
//! write paths open that transaction with [`Store::begin_audited`], naming the action and
//! its target; the actor comes from the [`AuditScope`] of the running task:
//!
//! - the HTTP layer opens one scope per request (`src/http/audit_log.rs`) and the `Caller`
//!   extractor fills in the authenticated principal;
//! - the CLI runs each command in a scope whose actor is `root` / `cli`;
//! - work outside any scope (scheduled jobs) is recorded as `keygate` / `internal`.
//!
//! A scope is a tokio task-local, so work moved to another task must carry it along
//! ([`AuditScope::current`] then [`AuditScope::run`]); `http::detached` does.
//! The scope also counts the entries written under it, so the HTTP layer can tell a
//! state-changing request that wrote none (a bug it reports, see `audit_log.rs`), and
//! carries the client's address for login throttling (`services/login_throttle.rs`).

use super::audit::{append_in, AuditActor, NewAuditEntry};
use super::{Store, StoreError};
reuse_shared!(audit_scope);
use std::future::Future;
use std::sync::{Arc, Mutex};

shared! {
tokio::task_local! {
    static SCOPE: AuditScope;
}

#[derive(Debug, Default)]
struct ScopeState {
    actor: Option<AuditActor>,
    request_id: Option<String>,
    client_cert_serial: Option<String>,
    /// The client's address as the socket saw it (for login throttling).
    source: Option<std::net::IpAddr>,
    written: u64,
}

/// The audit context of one request or command; cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct AuditScope(Arc<Mutex<ScopeState>>);

impl AuditScope {
    /// A scope for a request with this id and client certificate serial; the actor is
    /// anonymous until [`set_actor`](Self::set_actor).
    pub fn new(request_id: Option<String>, client_cert_serial: Option<String>) -> AuditScope {
        AuditScope(Arc::new(Mutex::new(ScopeState {
            request_id,
            client_cert_serial,
            ..ScopeState::default()
        })))
    }

    /// A scope whose actor is known from the start (the CLI's `root`).
    pub fn for_actor(actor: AuditActor) -> AuditScope {
        let s = AuditScope::new(actor.request_id.clone(), actor.client_cert_serial.clone());
        s.set_actor(actor);
        s
    }

    /// The scope of the running task, if any.
    pub fn current() -> Option<AuditScope> {
        SCOPE.try_with(Clone::clone).ok()
    }

    /// Runs `f` with this scope as the task's scope.
    pub async fn run<F: Future>(self, f: F) -> F::Output {
        SCOPE.scope(self, f).await
    }

    /// Records the client's address.
    pub fn set_source(&self, source: Option<std::net::IpAddr>) {
        if let Ok(mut s) = self.0.lock() {
            s.source = source;
        }
    }

    /// The client address of the running task's request, if known.
    pub fn current_source() -> Option<std::net::IpAddr> {
        Self::current().and_then(|s| s.0.lock().ok().and_then(|st| st.source))
    }

    /// Records who the request authenticated as.
    pub fn set_actor(&self, actor: AuditActor) {
        if let Ok(mut s) = self.0.lock() {
            s.actor = Some(actor);
        }
    }

    /// The actor as entries record it: the authenticated principal (or `anonymous`),
    /// with the request id and client certificate serial of the scope.
    pub fn actor(&self) -> AuditActor {
        let s = match self.0.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let base = s.actor.clone().unwrap_or_else(|| AuditActor {
            principal: "anonymous".into(),
            method: "none".into(),
            client_cert_serial: None,
            request_id: None,
        });
        AuditActor {
            request_id: s.request_id.clone().or(base.request_id),
            client_cert_serial: base.client_cert_serial.or(s.client_cert_serial.clone()),
            ..base
        }
    }

    /// Whether a principal authenticated in this scope.
    pub fn authenticated(&self) -> bool {
        self.0.lock().map(|s| s.actor.is_some()).unwrap_or(false)
    }

    /// Entries written under this scope so far (committed or not).
    pub fn written(&self) -> u64 {
        self.0.lock().map(|s| s.written).unwrap_or(0)
    }

    fn note_written(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.written += 1;
        }
    }
}

/// The actor for an entry written now: the task's scope, or keygate's own work.
pub fn current_actor() -> AuditActor {
    AuditScope::current()
        .map(|s| s.actor())
        .unwrap_or_else(|| AuditActor {
            principal: "keygate".into(),
            method: "internal".into(),
            client_cert_serial: None,
            request_id: None,
        })
}

/// Counts an entry written in the running task's scope (called by `append_in`).
pub(crate) fn note_written() {
    if let Some(s) = AuditScope::current() {
        s.note_written();
    }
}

/// Counts and logs an audit write that failed (called by `append_in`); the caller fails
/// the change with the error.
pub fn audit_write_failed(action: &str, target: &str, e: &StoreError) {
    metrics::counter!("keygate_audit_write_failures_total").increment(1);
    tracing::error!(error = %e, action = %action, target = %target,
        "could not write an audit entry; the change it records is refused");
}
}

impl Store {
    /// Begins a write transaction (holding the write lock) whose first statement appends
    /// the audit entry `action` on `target` by the current actor. The caller makes its
    /// change in the transaction and commits; an error before the commit rolls both back.
    /// A failed append is counted (`keygate_audit_write_failures_total`), logged and
    /// returned (by `append_in`), so the change fails as a whole.
    pub(crate) async fn begin_audited(
        &self,
        action: &str,
        target: &str,
        now: i64,
    ) -> Result<sqlx::Transaction<'static, super::Db>, StoreError> {
        let mut tx = self.begin_write().await?;
        let entry = NewAuditEntry {
            time: now,
            actor: current_actor(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: "ok".into(),
        };
        append_in(&mut tx, &entry).await?;
        Ok(tx)
    }
}

shared! {
/// The current time for audit entries written by store paths that take no `now`.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
}
