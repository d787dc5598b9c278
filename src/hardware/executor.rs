//! The bounded blocking pool that runs hardware calls off the async workers.
//!
//! Every backend call blocks (a PKCS#11 `C_Sign` can take milliseconds on a network HSM).
//! Running it on tokio's workers would stall unrelated requests; running it on
//! `spawn_blocking` would let a burst open hundreds of threads that all wait for the same
//! few device sessions. So each backend gets its own pool with exactly as many threads as
//! it has sessions, fed by a bounded queue: excess callers wait asynchronously for a
//! queue slot (back-pressure), never on a worker thread.
//!
//! Lanes (docs/operations.md "Hardware lanes"): calls come in three [`Lane`]s.
//! `Reserved` calls (TLS handshake signatures, token issuance, signing) go to a queue the
//! threads always serve first. `Unauthenticated` calls (the MAC that checks a credential
//! nobody has authenticated yet) may hold at most `lane` slots, queued and running
//! together, and that is fewer than the threads: the rest of the sessions are kept for
//! everybody else. When the lane is full such a call is refused at once (503 with
//! `Retry-After`) instead of waiting for a slot.

use crate::hardware::{Backend, HardwareError};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which share of the pool a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Served before anything else: TLS handshakes, token issuance, signing.
    Reserved,
    /// Everything else that an authenticated caller or the server itself asks for.
    Normal,
    /// Checking a credential that is not authenticated yet: bounded, never waits.
    Unauthenticated,
}

/// A hardware call, named for metrics and batching; running it returns the step that
/// hands its result back.
struct Job {
    op: &'static str,
    run: Box<dyn FnOnce() -> Completion + Send + 'static>,
}
type Completion = Box<dyn FnOnce() + Send + 'static>;

/// Completions are handed back in small batches. Waking an idle async worker is a futex
/// syscall that costs as much as a SoftHSM HMAC; handing back several results at once
/// wakes it once. A batch only gathers jobs that are already queued, and no job starts in
/// a batch after `BATCH_WINDOW`: a lone call is answered at once, and a result waits at
/// most for the window plus one further call (on a device whose calls take longer than
/// the window, that is one call). Calls known to be slow (key generation, destruction,
/// health probes that may re-initialise the module) first hand back what is pending.
const BATCH_MAX: usize = 16;
const BATCH_WINDOW: Duration = Duration::from_micros(200);

/// The longest a caller waits for a queue slot plus the call (RSA-3072 generation on a
/// slow device takes seconds; a hung one takes forever).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The next job: a reserved one if any is queued, else whichever comes first.
fn next_job(first: &flume::Receiver<Job>, rest: &flume::Receiver<Job>) -> Option<Job> {
    if let Ok(job) = first.try_recv() {
        return Some(job);
    }
    flume::Selector::new()
        .recv(first, |r| r.ok())
        .recv(rest, |r| r.ok())
        .wait()
}

fn try_next_job(first: &flume::Receiver<Job>, rest: &flume::Receiver<Job>) -> Option<Job> {
    first.try_recv().or_else(|_| rest.try_recv()).ok()
}

fn worker(first: flume::Receiver<Job>, rx: flume::Receiver<Job>) {
    let mut done: Vec<Completion> = Vec::with_capacity(BATCH_MAX);
    // Ends when every sender (every executor clone) is dropped.
    while let Some(job) = next_job(&first, &rx) {
        let started = Instant::now();
        run_one(job, &mut done);
        while done.len() < BATCH_MAX && started.elapsed() < BATCH_WINDOW {
            match try_next_job(&first, &rx) {
                Some(job) => {
                    if is_slow(job.op) {
                        for complete in done.drain(..) {
                            complete();
                        }
                    }
                    run_one(job, &mut done);
                }
                None => break,
            }
        }
        for complete in done.drain(..) {
            complete();
        }
    }
}

fn is_slow(op: &str) -> bool {
    matches!(op, "generate" | "destroy" | "health" | "reconcile")
}

fn run_one(job: Job, done: &mut Vec<Completion>) {
    // A panicking call must not take a pool thread with it; its caller sees "ended
    // without a result" because the reply was dropped.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job.run)) {
        Ok(complete) => done.push(complete),
        Err(_) => tracing::error!("a hardware call panicked"),
    }
}

thread_local! {
    /// Histogram handles by (op, outcome) for this worker thread. Building a labelled
    /// metric key and looking it up in the registry costs more than some SoftHSM calls;
    /// a worker serves one backend, so (op, outcome) identifies the series.
    static HISTOGRAMS: RefCell<HashMap<(&'static str, &'static str), metrics::Histogram>> =
        RefCell::new(HashMap::new());
}

fn record(backend: &Arc<str>, op: &'static str, outcome: &'static str, secs: f64) {
    HISTOGRAMS.with(|h| {
        h.borrow_mut()
            .entry((op, outcome))
            .or_insert_with(|| {
                metrics::histogram!(
                    "keygate_hardware_call_duration_seconds",
                    "op" => op, "backend" => backend.clone(), "outcome" => outcome
                )
            })
            .record(secs)
    });
}

/// Runs closures against one backend on a fixed set of dedicated threads.
#[derive(Clone)]
pub struct HardwareExecutor {
    name: Arc<str>,
    backend: Arc<dyn Backend>,
    tx: flume::Sender<Job>,
    /// The reserved lane's queue, served first.
    reserved: flume::Sender<Job>,
    threads: usize,
    /// Slots of the unauthenticated lane (queued and running calls together).
    unauthenticated: Arc<tokio::sync::Semaphore>,
    lane: usize,
}

impl std::fmt::Debug for HardwareExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardwareExecutor")
            .field("name", &self.name)
            .field("threads", &self.threads)
            .field("unauthenticated_lane", &self.lane)
            .finish()
    }
}

impl HardwareExecutor {
    /// Starts `threads` worker threads with a queue of `threads * 256` pending calls.
    pub fn new(
        name: &str,
        backend: Arc<dyn Backend>,
        threads: usize,
    ) -> Result<Self, HardwareError> {
        let threads = threads.max(1);
        let (tx, rx) = flume::bounded::<Job>(threads * 256);
        let (reserved, first) = flume::bounded::<Job>(threads * 256);
        for i in 0..threads {
            let (first, rx) = (first.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("kg-hw-{name}-{i}"))
                .spawn(move || worker(first, rx))
                .map_err(|e| {
                    HardwareError::Failure(format!("cannot start hardware thread: {e}"))
                })?;
        }
        let lane = crate::limits::LimitsConfig::default().lane_for(threads);
        Ok(HardwareExecutor {
            name: name.into(),
            backend,
            tx,
            reserved,
            threads,
            unauthenticated: Arc::new(tokio::sync::Semaphore::new(lane)),
            lane,
        })
    }

    /// Sets the unauthenticated lane's slots (`limits.unauthenticated_lane`, resolved by
    /// [`LimitsConfig::lane_for`](crate::limits::LimitsConfig::lane_for)).
    pub fn with_unauthenticated_lane(mut self, slots: usize) -> Self {
        let slots = slots.max(1);
        self.lane = slots;
        self.unauthenticated = Arc::new(tokio::sync::Semaphore::new(slots));
        self
    }

    /// Slots of the unauthenticated lane.
    pub fn unauthenticated_lane(&self) -> usize {
        self.lane
    }

    /// The backend name from the configuration (`[backends.<name>]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of worker threads (= device sessions).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The backend itself, for synchronous callers (CLI, benchmarks) that are not on an
    /// async worker.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Probes the device on the pool. An unhealthy device is an error here, so the
    /// hardware-call metric records the failure.
    pub async fn probe(&self) -> Result<(), HardwareError> {
        self.run("health", |b| match b.health() {
            crate::hardware::Health::Ok => Ok(()),
            crate::hardware::Health::Unavailable { reason } => {
                Err(HardwareError::Unavailable(reason))
            }
        })
        .await
    }

    /// Wraps `f` into a pool job that times and records the call, then hands its result
    /// to `reply` (run by the pool thread as part of a completion batch).
    fn job<T, F, R>(&self, op: &'static str, f: F, reply: R) -> Job
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T, HardwareError> + Send + 'static,
        R: FnOnce(Result<T, HardwareError>) + Send + 'static,
    {
        let backend = self.backend.clone();
        let name = self.name.clone();
        let run = Box::new(move || {
            let start = Instant::now();
            let result = f(&*backend);
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            record(&name, op, outcome, start.elapsed().as_secs_f64());
            Box::new(move || reply(result)) as Completion
        });
        Job { op, run }
    }

    fn timed_out(&self, op: &str) -> HardwareError {
        HardwareError::Unavailable(format!(
            "{op}: backend {} did not answer within {}s",
            self.name,
            CALL_TIMEOUT.as_secs()
        ))
    }

    /// Runs `f` on the pool and awaits its result. `op` names the operation in metrics.
    pub async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, HardwareError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T, HardwareError> + Send + 'static,
    {
        self.run_lane(Lane::Normal, op, f).await
    }

    /// [`run`](Self::run) in `lane`. An `Unauthenticated` call that finds its lane full
    /// fails at once with `Unavailable`.
    pub async fn run_lane<T, F>(
        &self,
        lane: Lane,
        op: &'static str,
        f: F,
    ) -> Result<T, HardwareError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T, HardwareError> + Send + 'static,
    {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let permit = match lane {
            Lane::Unauthenticated => match self.unauthenticated.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    metrics::counter!("keygate_hardware_lane_full_total", "backend" => self.name.to_string())
                        .increment(1);
                    return Err(HardwareError::Unavailable(format!(
                        "{op}: the unauthenticated lane of backend {} is full",
                        self.name
                    )));
                }
            },
            _ => None,
        };
        // The caller may have gone away (request cancelled); nothing to do then. The
        // lane slot is given back when the call has run, not when the caller leaves.
        let job = self.job(op, f, move |result| {
            drop(permit);
            let _ = otx.send(result);
        });
        let call = async {
            let queue = if lane == Lane::Reserved {
                &self.reserved
            } else {
                &self.tx
            };
            if lane == Lane::Unauthenticated {
                // Never waits for a queue slot either.
                queue.try_send(job).map_err(|e| match e {
                    flume::TrySendError::Full(_) => HardwareError::Unavailable(format!(
                        "{op}: the hardware queue of backend {} is full",
                        self.name
                    )),
                    flume::TrySendError::Disconnected(_) => {
                        HardwareError::Unavailable("hardware pool has stopped".into())
                    }
                })?;
            } else {
                queue
                    .send_async(job)
                    .await
                    .map_err(|_| HardwareError::Unavailable("hardware pool has stopped".into()))?;
            }
            orx.await.map_err(|_| {
                HardwareError::Failure("hardware call ended without a result".into())
            })?
        };
        // A hung device must not hold requests forever; the call itself may still finish
        // on its thread, and its result is then dropped.
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(op)),
        }
    }

    /// Runs `f` on the pool and blocks the calling thread until it answers, for callers
    /// that must answer synchronously (rustls's `Signer::sign` inside a TLS handshake).
    /// The call still goes through the same bounded queue and the same threads as
    /// [`run`](Self::run), so the device sees no more concurrent calls than it has
    /// sessions. Never call this on an async worker directly: wrap it in
    /// `tokio::task::block_in_place` (see `tls::signer`). Its only caller is the TLS
    /// handshake, so it runs in the reserved lane.
    pub fn run_blocking<T, F>(&self, op: &'static str, f: F) -> Result<T, HardwareError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T, HardwareError> + Send + 'static,
    {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let (rtx, rrx) = flume::bounded(1);
        let job = self.job(op, f, move |result| {
            let _ = rtx.send(result);
        });
        match self.reserved.send_deadline(job, deadline) {
            Ok(()) => {}
            Err(flume::SendTimeoutError::Timeout(_)) => return Err(self.timed_out(op)),
            Err(flume::SendTimeoutError::Disconnected(_)) => {
                return Err(HardwareError::Unavailable(
                    "hardware pool has stopped".into(),
                ))
            }
        }
        match rrx.recv_deadline(deadline) {
            Ok(result) => result,
            Err(flume::RecvTimeoutError::Timeout) => Err(self.timed_out(op)),
            Err(flume::RecvTimeoutError::Disconnected) => Err(HardwareError::Failure(
                "hardware call ended without a result".into(),
            )),
        }
    }
}
