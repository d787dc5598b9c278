//! The bounded blocking pool that runs hardware calls off the async workers.
//!
//! Every backend call blocks (a PKCS#11 `C_Sign` can take milliseconds on a network HSM).
//! Running it on tokio's workers would stall unrelated requests; running it on
//! `spawn_blocking` would let a burst open hundreds of threads that all wait for the same
//! few device sessions. So each backend gets its own pool with exactly as many threads as
//! it has sessions, fed by a bounded queue: excess callers wait asynchronously for a
//! queue slot (back-pressure), never on a worker thread.

use crate::hardware::{Backend, HardwareError};
use std::sync::Arc;
use std::time::Instant;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs closures against one backend on a fixed set of dedicated threads.
#[derive(Clone)]
pub struct HardwareExecutor {
    name: Arc<str>,
    backend: Arc<dyn Backend>,
    tx: flume::Sender<Job>,
    threads: usize,
}

impl std::fmt::Debug for HardwareExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardwareExecutor")
            .field("name", &self.name)
            .field("threads", &self.threads)
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
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("kg-hw-{name}-{i}"))
                .spawn(move || {
                    // Ends when every sender (every executor clone) is dropped.
                    while let Ok(job) = rx.recv() {
                        // A panicking call must not take a pool thread with it; its caller
                        // sees "ended without a result" because the reply was dropped.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a hardware call panicked");
                        }
                    }
                })
                .map_err(|e| {
                    HardwareError::Failure(format!("cannot start hardware thread: {e}"))
                })?;
        }
        Ok(HardwareExecutor {
            name: name.into(),
            backend,
            tx,
            threads,
        })
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

    /// Runs `f` on the pool and awaits its result. `op` names the operation in metrics.
    pub async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, HardwareError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T, HardwareError> + Send + 'static,
    {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let backend = self.backend.clone();
        let name = self.name.clone();
        let job: Job = Box::new(move || {
            let start = Instant::now();
            let result = f(&*backend);
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            metrics::histogram!(
                "keygate_hardware_call_duration_seconds",
                "op" => op, "backend" => name.to_string(), "outcome" => outcome
            )
            .record(start.elapsed().as_secs_f64());
            // The caller may have gone away (request cancelled); nothing to do then.
            let _ = otx.send(result);
        });
        self.tx
            .send_async(job)
            .await
            .map_err(|_| HardwareError::Unavailable("hardware pool has stopped".into()))?;
        orx.await
            .map_err(|_| HardwareError::Failure("hardware call ended without a result".into()))?
    }
}
