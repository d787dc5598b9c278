//! The store's lock file: who is using a SQLite store right now (`docs/operations.md`,
//! "Restoring over a running server").
//!
//! `keygate serve` holds a *shared* advisory lock (`flock`) on `<store>.lock` for as long
//! as it runs; several servers on one store each hold theirs. `keygate restore` takes the
//! *exclusive* lock before it replaces anything, so it is refused while any server runs
//! on the store, and a server does not start while a restore runs. The kernel drops the
//! lock when the process ends however it ends (`kill -9` included), so no stale lock is
//! ever left to clean up. PostgreSQL stores have no lock file.

use std::fs::File;
use std::path::{Path, PathBuf};

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

impl StoreLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds the lock in a mode that excludes ours.
    #[error("{0}")]
    Busy(String),
    #[error("lock file {path}: {reason}")]
    Io { path: String, reason: String },
}

/// The lock file of the SQLite store at `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_os_string();
    p.push(".lock");
    PathBuf::from(p)
}

/// Never creates a directory: the store's directory is the store's business.
fn take(db: &Path, exclusive: bool) -> Result<Result<StoreLock, ()>, LockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(db);
    let io = |e: &dyn std::fmt::Display| LockError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io(&e))?;
    let op = if exclusive {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockShared
    };
    match rustix::fs::flock(&file, op) {
        Ok(()) => Ok(Ok(StoreLock { _file: file, path })),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(Err(())),
        Err(e) => Err(io(&e)),
    }
}

/// Taken by `keygate serve` on a SQLite store at `db` for as long as it runs. Refused
/// while a restore into that store runs. None when the store's directory does not
/// exist: then there is no store to protect, and opening it fails with its own error.
pub fn hold_for_serving(db: &Path) -> Result<Option<StoreLock>, LockError> {
    if db
        .parent()
        .is_some_and(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Ok(None);
    }
    take(db, false)?.map(Some).map_err(|()| {
        LockError::Busy(format!(
            "a restore into the store {} is running (it holds {}); start keygate after it finished",
            db.display(),
            lock_path(db).display()
        ))
    })
}

/// Taken by `keygate restore` before it replaces the SQLite store at `db`. Refused while
/// any server runs on that store.
pub fn hold_for_restore(db: &Path) -> Result<StoreLock, LockError> {
    take(db, true)?.map_err(|()| {
        LockError::Busy(format!(
            "a keygate server is running on the store {} (it holds {}); stop every server \
             using this store, then restore",
            db.display(),
            lock_path(db).display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_is_refused_while_a_server_holds_the_store_and_a_server_while_a_restore_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keygate.db");
        let a = hold_for_serving(&db).unwrap().unwrap();
        let b = hold_for_serving(&db).unwrap().unwrap();
        assert!(matches!(hold_for_restore(&db), Err(LockError::Busy(_))));
        drop(a);
        assert!(matches!(hold_for_restore(&db), Err(LockError::Busy(_))));
        drop(b);
        let r = hold_for_restore(&db).unwrap();
        assert_eq!(r.path(), lock_path(&db));
        let e = hold_for_serving(&db).unwrap_err();
        assert!(e.to_string().contains("restore"), "{e}");
    }

    #[test]
    fn serving_a_store_whose_directory_is_missing_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("missing").join("keygate.db");
        assert!(hold_for_serving(&db).unwrap().is_none());
        assert!(!dir.path().join("missing").exists());
    }
}
