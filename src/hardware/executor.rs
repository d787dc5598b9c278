//! The bounded blocking pool that runs hardware calls off the async workers.
//!
//! Every backend call blocks (a PKCS#11 `C_Sign` can take milliseconds on a network HSM).
//! Running it on tokio's workers would stall unrelated requests; running it on
//! `spawn_blocking` would let a burst open hundreds of threads that all wait for the same
//! few device sessions. So each backend gets its own pool with exactly as many threads as
//! it has sessions, fed by a bounded queue: excess callers wait asynchronously for a
//! queue slot (back-pressure), never on a worker thread.
//!
//! Lanes (docs/operations.md "Hardware lanes"): calls come in three [`Lane`]s, each with
//! its own queue. `Reserved` calls (TLS handshake signatures, token issuance, signing)
//! are served first by every thread. `Unauthenticated` calls (the MAC that checks a
//! credential nobody has authenticated yet) are served only by the first `lane` threads,
//! fewer than all of them when there are two or more, so the other sessions can never be
//! taken by them; their queue is small, and a call that finds it full is refused at once
//! (503 with `Retry-After`) instead of waiting for a slot.

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

/// How long an idle worker waits before it looks at its queues again (see [`Queues::next`]).
const IDLE_RECHECK: Duration = Duration::from_millis(100);

/// The queues one worker serves, in priority order: reserved, normal, and (for the
/// first `lane` workers only) unauthenticated.
struct Queues {
    reserved: flume::Receiver<Job>,
    normal: flume::Receiver<Job>,
    unauthenticated: Option<flume::Receiver<Job>>,
}

impl Queues {
    /// The next job without waiting, highest priority first.
    fn try_next(&self) -> Option<Job> {
        self.reserved
            .try_recv()
            .or_else(|_| self.normal.try_recv())
            .ok()
            .or_else(|| self.unauthenticated.as_ref()?.try_recv().ok())
    }

    /// The next job, waiting for one; `None` once the executor is gone.
    ///
    /// The wait is bounded and followed by another look at every queue: a job must never
    /// sit in a queue behind a missed wake-up of a selector over several channels (seen
    /// as a lone unauthenticated call answered only by the 30 s timeout while no other
    /// call arrived). An idle worker looks again every [`IDLE_RECHECK`].
    fn next(&self) -> Option<Job> {
        loop {
            if let Some(job) = self.try_next() {
                return Some(job);
            }
            let sel = flume::Selector::new()
                .recv(&self.reserved, |r| r.ok())
                .recv(&self.normal, |r| r.ok());
            let waited = match &self.unauthenticated {
                Some(u) => sel.recv(u, |r| r.ok()).wait_timeout(IDLE_RECHECK),
                None => sel.wait_timeout(IDLE_RECHECK),
            };
            match waited {
                Ok(job) => return job,
                Err(_) => continue,
            }
        }
    }
}

fn worker(queues: Queues) {
    let mut done: Vec<Completion> = Vec::with_capacity(BATCH_MAX);
    // Ends when every sender (every executor clone) is dropped.
    while let Some(job) = queues.next() {
        let started = Instant::now();
        run_one(job, &mut done);
        while done.len() < BATCH_MAX && started.elapsed() < BATCH_WINDOW {
            match queues.try_next() {
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
    /// The unauthenticated lane's small queue, served by the first `lane` threads only.
    unauthenticated: flume::Sender<Job>,
    threads: usize,
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
    /// Starts `threads` worker threads with a queue of `threads * 256` pending calls, and
    /// the default unauthenticated lane ([`LimitsConfig`](crate::limits::LimitsConfig)).
    pub fn new(
        name: &str,
        backend: Arc<dyn Backend>,
        threads: usize,
    ) -> Result<Self, HardwareError> {
        let d = crate::limits::LimitsConfig::default();
        let lane = d.lane_for(threads);
        Self::with_lanes(name, backend, threads, lane, d.unauthenticated_queue)
    }

    /// Starts `threads` worker threads; the first `lane` of them (at least one) also serve
    /// unauthenticated calls, of which at most `lane_queue` may wait.
    pub fn with_lanes(
        name: &str,
        backend: Arc<dyn Backend>,
        threads: usize,
        lane: usize,
        lane_queue: usize,
    ) -> Result<Self, HardwareError> {
        let threads = threads.max(1);
        let lane = lane.clamp(1, threads);
        let (tx, normal) = flume::bounded::<Job>(threads * 256);
        let (reserved, reserved_rx) = flume::bounded::<Job>(threads * 256);
        let (unauthenticated, unauthenticated_rx) = flume::bounded::<Job>(lane_queue.max(1));
        for i in 0..threads {
            let queues = Queues {
                reserved: reserved_rx.clone(),
                normal: normal.clone(),
                unauthenticated: (i < lane).then(|| unauthenticated_rx.clone()),
            };
            std::thread::Builder::new()
                .name(format!("kg-hw-{name}-{i}"))
                .spawn(move || worker(queues))
                .map_err(|e| {
                    HardwareError::Failure(format!("cannot start hardware thread: {e}"))
                })?;
        }
        Ok(HardwareExecutor {
            name: name.into(),
            backend,
            tx,
            reserved,
            unauthenticated,
            threads,
            lane,
        })
    }

    /// Threads that serve unauthenticated calls.
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
        // The caller may have gone away (request cancelled); nothing to do then.
        let job = self.job(op, f, move |result| {
            let _ = otx.send(result);
        });
        let call = async {
            match lane {
                // Never waits for a queue slot: a full lane answers at once.
                Lane::Unauthenticated => self.unauthenticated.try_send(job).map_err(|e| {
                    if let flume::TrySendError::Full(_) = e {
                        metrics::counter!("keygate_hardware_lane_full_total", "backend" => self.name.to_string())
                            .increment(1);
                        HardwareError::Unavailable(format!(
                            "{op}: the unauthenticated lane of backend {} is full",
                            self.name
                        ))
                    } else {
                        HardwareError::Unavailable("hardware pool has stopped".into())
                    }
                })?,
                Lane::Reserved => self.reserved.send_async(job).await.map_err(|_| {
                    HardwareError::Unavailable("hardware pool has stopped".into())
                })?,
                Lane::Normal => self.tx.send_async(job).await.map_err(|_| {
                    HardwareError::Unavailable("hardware pool has stopped".into())
                })?,
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
