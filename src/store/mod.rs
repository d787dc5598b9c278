//! Metadata persistence.
//!
//! The store holds everything that is not secret: key ring versions and their locators,
//! API-key records (MACs only), users. Two engines are built in and the URL picks one
//! (docs/deployment.md, "Stores"): SQLite (`sqlite://`, the embedded default, [`sqlite`])
//! and PostgreSQL (`postgres://`, for several replicas, [`postgres`]). The area files
//! (`api_keys.rs`, `sessions.rs`, ...) are written once, with `$n` placeholders and
//! integer timestamps, and compiled once per engine; [`Store`] forwards each call to the
//! engine it opened (`dispatch.rs`, generated).

mod dispatch;
pub mod postgres;
pub mod sqlite;

// The crate sees one set of area modules and types: the SQLite copy's (see `sqlite`).
pub use sqlite::{
    api_keys, approvals, attestation, audit, audit_scope, ca_profiles, changes, claims,
    console_sessions, destroy_intents, groups, key_files, keys, leases, meta, oauth_servers,
    revocations, roles, schema, sessions, users,
};

/// Meaning-based store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk under the database is full: writes fail until space is freed; reads
    /// keep working (docs/operations.md, "A full disk").
    #[error("store full: {0}")]
    Full(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database refused a statement for a reason a retry will not fix (a bug).
    #[error("store failure: {0}")]
    Failed(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                return from_postgres(pg.code(), db.is_unique_violation(), db.message());
            }
        }
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), including extended codes: transient.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6)) =>
            {
                StoreError::Unavailable(db.message().to_string())
            }
            // SQLITE_FULL (13): no space for the database, its journal or its WAL.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| c & 0xff == 13) =>
            {
                StoreError::Full(db.message().to_string())
            }
            sqlx::Error::Database(db) => StoreError::Failed(db.message().to_string()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A PostgreSQL error by its SQLSTATE.
fn from_postgres(sqlstate: &str, unique: bool, message: &str) -> StoreError {
    let m = message.to_string();
    match sqlstate {
        _ if unique => StoreError::Conflict(m),
        // disk_full, insufficient_resources, out_of_memory.
        "53100" | "53000" | "53200" => StoreError::Full(m),
        // serialization_failure, deadlock_detected, lock_not_available, query_canceled,
        // admin/crash shutdown, cannot_connect_now, read-only standby (during a failover).
        "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "25006" => {
            StoreError::Unavailable(m)
        }
        // Connection exceptions.
        s if s.starts_with("08") => StoreError::Unavailable(m),
        _ => StoreError::Failed(m),
    }
}

/// `url` without its password, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The engine a [`Store`] opened.
#[derive(Clone, Debug)]
enum Engine {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// Handle to the metadata database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    engine: Engine,
}

/// Which engine a store URL names.
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A held start-up lock (see [`Store::startup_lock`]).
#[derive(Debug)]
pub struct StartupLock(Option<postgres::StartupLock>);

impl StartupLock {
    /// Releases the lock.
    pub async fn release(self) {
        if let Some(l) = self.0 {
            l.release().await;
        }
    }
}

/// Connections in a store's shared pool unless `store.max_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

tokio::task_local! {
    /// Set in the change-feed applier's task (see [`on_feed_connection`]).
    static FEED_TASK: ();
}

/// Runs `work` (the change-feed applier's round) with every store call it makes on the
/// store's dedicated feed connection instead of the shared pool, so that requests that
/// exhaust the pool (writers queued on the write lock, say) cannot delay the apply and
/// turn the replica stale (docs/deployment.md, "Connection budget").
pub async fn on_feed_connection<F: std::future::Future>(work: F) -> F::Output {
    FEED_TASK.scope((), work).await
}

/// Whether the current task is the applier's (inside [`on_feed_connection`]).
fn in_feed_task() -> bool {
    FEED_TASK.try_with(|_| ()).is_ok()
}

impl Store {
    /// Opens (creating if needed, on SQLite) and migrates the store at `url`:
    /// `sqlite://path/to/keygate.db` or `postgres://user@host:port/database`, with a
    /// shared pool of [`DEFAULT_MAX_CONNECTIONS`].
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`Store::open`] with a shared pool of at most `max_connections` connections
    /// (`store.max_connections`). Beside the pool the store keeps one connection for the
    /// change-feed applier and one for `/readyz`'s ping, opened on first use, and on PostgreSQL one
    /// for `LISTEN` (docs/deployment.md, "Connection budget").
    pub async fn open_with(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let max_connections = max_connections.max(1);
        Ok(Store {
            engine: if is_postgres(url) {
                Engine::Postgres(postgres::Store::open(url, max_connections).await?)
            } else {
                Engine::Sqlite(sqlite::Store::open(url, max_connections).await?)
            },
        })
    }

    /// Opens an existing store without creating or migrating anything, after checking
    /// its schema is not newer than this binary (`keygate config check`, which only
    /// reads).
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            engine: if is_postgres(url) {
                Engine::Postgres(postgres::Store::open_read_only(url).await?)
            } else {
                Engine::Sqlite(sqlite::Store::open_read_only(url).await?)
            },
        })
    }

    /// Whether this store is PostgreSQL (shared by replicas) rather than SQLite.
    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// The newest migration applied to this store.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        match &self.engine {
            Engine::Sqlite(s) => s.schema_version().await,
            Engine::Postgres(s) => s.schema_version().await,
        }
    }

    /// Closes every connection (a restore renames the file afterwards).
    pub async fn close(&self) {
        match &self.engine {
            Engine::Sqlite(s) => s.close().await,
            Engine::Postgres(s) => s.close().await,
        }
    }

    /// Cheap liveness check for `/readyz`, on a connection of its own: it asks whether the
    /// database answers, which a pool busy with requests does not tell, and a flood of
    /// readiness checks (which need no credential) queues there, never on the shared pool
    /// or the change-feed applier's connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite(s) => s.ping().await,
            Engine::Postgres(s) => s.ping().await,
        }
    }

    /// Calls `wake` whenever another process commits a change-feed row, on stores that can
    /// say so (PostgreSQL's `LISTEN`); returns at once on SQLite, whose appliers only poll.
    /// On PostgreSQL it returns only when the listening connection fails.
    pub async fn listen_for_changes(&self, wake: &(dyn Fn() + Send + Sync)) -> Option<StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(s) => Some(s.listen_for_changes(wake).await),
        }
    }

    /// Serialises start-up work that creates the installation's built-in records
    /// (default rings, the bootstrap key) across replicas sharing a PostgreSQL store:
    /// the second replica waits, then finds them made. A no-op on SQLite, whose store
    /// belongs to one process.
    pub async fn startup_lock(&self) -> Result<StartupLock, StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(StartupLock(None)),
            Engine::Postgres(s) => Ok(StartupLock(Some(s.startup_lock().await?))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_the_store_url() {
        assert_eq!(
            redact_url("postgres://kg:s3cret@db:5432/keygate"),
            "postgres://kg:***@db:5432/keygate"
        );
        assert_eq!(
            redact_url("postgres://kg@db/keygate"),
            "postgres://kg@db/keygate"
        );
        assert_eq!(redact_url("sqlite://a@b.db"), "sqlite://a@b.db");
    }

    #[test]
    fn postgres_errors_map_by_meaning() {
        assert!(matches!(
            from_postgres("23505", true, "dup"),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            from_postgres("40001", false, "x"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            from_postgres("08006", false, "x"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            from_postgres("53100", false, "x"),
            StoreError::Full(_)
        ));
        assert!(matches!(
            from_postgres("42601", false, "x"),
            StoreError::Failed(_)
        ));
    }
}
