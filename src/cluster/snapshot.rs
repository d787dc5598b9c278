//! [`Snapshot`]: the one in-memory copy type behind every cache the change feed keeps
//! current (API-key index, key-file bindings, IdP keys, custom roles, key versions).
//!
//! **Locking.** Readers clone an `Arc` under a read lock held for that clone only, so a
//! request never waits for a reload. Writers build the new value outside the lock and swap
//! it in whole. Writers of one snapshot are serialized by an async mutex, so a reload that
//! started earlier can never overwrite the result of one that started later.
//!
//! **Poisoning.** The guarded value is an `Arc` that is only ever cloned or replaced
//! whole, so a panic elsewhere cannot leave it half-updated: a poisoned lock is recovered
//! and its value used. (The token denylist is not a snapshot but a set that only grows
//! between sweeps; it fails closed on a poisoned lock, see `services/tokens/denylist.rs`.)

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

pub struct Snapshot<T> {
    current: RwLock<Arc<T>>,
    writer: tokio::sync::Mutex<()>,
}

impl<T: Default> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot::new(T::default())
    }
}

impl<T> std::fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

impl<T> Snapshot<T> {
    pub fn new(value: T) -> Self {
        Snapshot {
            current: RwLock::new(Arc::new(value)),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// The current value. Cheap: one `Arc` clone.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, value: T) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }

    /// Replaces the value with what `load` builds from the current one (typically by
    /// reading the store). On error the current value stays.
    pub async fn reload<E, F, Fut>(&self, load: F) -> Result<(), E>
    where
        F: FnOnce(Arc<T>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _writer = self.writer.lock().await;
        let next = load(self.get()).await?;
        self.set(next);
        Ok(())
    }

    /// Replaces the value with an edited copy of the current one, in memory only: a
    /// change this process made takes effect at once, before any reload.
    pub async fn patch(&self, edit: impl FnOnce(&T) -> T) {
        let _writer = self.writer.lock().await;
        let next = edit(&self.get());
        self.set(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_reload_keeps_the_current_value() {
        let s = Snapshot::new(1);
        s.reload(|cur| async move { Ok::<_, ()>(*cur + 1) })
            .await
            .unwrap();
        assert_eq!(*s.get(), 2);
        assert!(s
            .reload(|_| async { Err::<i32, _>("store down") })
            .await
            .is_err());
        assert_eq!(*s.get(), 2);
        s.patch(|v| v * 10).await;
        assert_eq!(*s.get(), 20);
    }

    #[tokio::test]
    async fn reloads_of_one_snapshot_do_not_interleave() {
        let s = Arc::new(Snapshot::new(Vec::<u32>::new()));
        let mut tasks = Vec::new();
        for i in 0..8u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.reload(|cur| async move {
                    tokio::task::yield_now().await;
                    let mut v = (*cur).clone();
                    v.push(i);
                    Ok::<_, ()>(v)
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Each reload saw the previous one's result: nothing was lost.
        assert_eq!(s.get().len(), 8);
    }

    #[test]
    fn a_poisoned_lock_still_serves_the_whole_value() {
        let s = Arc::new(Snapshot::new(7));
        let s2 = s.clone();
        let _ = std::thread::spawn(move || {
            let _g = s2.current.write().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(s.current.is_poisoned());
        assert_eq!(*s.get(), 7);
        s.set(8);
        assert_eq!(*s.get(), 8);
    }
}
