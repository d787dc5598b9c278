//! Opening one store from several replicas at the same moment.
//!
//! PostgreSQL migrations run under the sqlx migrator's advisory lock. SQLite has no such
//! lock (sqlx's is a no-op there): two processes migrating one empty file both try to
//! create the first tables, and one fails. On SQLite the processes therefore hold an
//! exclusive transaction on a small lock database beside the file
//! (`<database>.migrate.lock`) while opening and migrating; the next one waits, then
//! finds the schema current and migrates nothing.

use crate::store::{Store, StoreError};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::PathBuf;
use std::time::Duration;

/// The database file named by a `sqlite:` URL, if it names one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// [`Store::open_with`], serialized across processes on SQLite (see the module docs).
pub async fn open_store(url: &str, max_connections: u32) -> Result<Store, StoreError> {
    let Some(db) = sqlite_file(url) else {
        return Store::open_with(url, max_connections).await;
    };
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".migrate.lock");
    let lock_path = db.with_file_name(name);
    let unavailable =
        |e: sqlx::Error| StoreError::Unavailable(format!("{}: {e}", lock_path.display()));
    let opts = SqliteConnectOptions::new()
        .filename(&lock_path)
        .create_if_missing(true)
        // Long enough for another replica to migrate a large store.
        .busy_timeout(Duration::from_secs(600));
    let mut lock = opts.connect().await.map_err(unavailable)?;
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .map_err(unavailable)?;
    let store = Store::open_with(url, max_connections).await;
    // Closing the connection ends the transaction and releases the lock.
    let _ = lock.close().await;
    store
}

/// Runs a blocking hardware `connect` again while it reports the device unavailable, at
/// most [`CONNECT_ATTEMPTS`] times. A SoftHSM token shared by replicas can look absent
/// for a moment while another process rewrites its files; a wrong PIN is a failure, not
/// unavailability, so it is never retried (it would count against the token's PIN).
pub fn retry_unavailable<T>(
    mut connect: impl FnMut() -> Result<T, crate::hardware::HardwareError>,
) -> Result<T, crate::hardware::HardwareError> {
    let mut attempt = 1;
    loop {
        match connect() {
            Err(crate::hardware::HardwareError::Unavailable(m)) if attempt < CONNECT_ATTEMPTS => {
                tracing::warn!(attempt, error = %m, "hardware not reachable at start; trying again");
                std::thread::sleep(Duration::from_millis(300));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Attempts [`retry_unavailable`] makes.
pub const CONNECT_ATTEMPTS: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_sits_beside_the_sqlite_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/keygate/k.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/keygate/k.db"))
        );
        assert_eq!(sqlite_file("sqlite:k.db"), Some(PathBuf::from("k.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://db/keygate"), None);
    }

    #[tokio::test]
    async fn processes_opening_one_empty_store_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { open_store(&url, 2).await })
            })
            .collect();
        for o in opens {
            o.await.unwrap().unwrap();
        }
    }
}
