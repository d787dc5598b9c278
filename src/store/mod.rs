//! Metadata persistence.
//!
//! The store holds everything that is not secret: key ring versions and their locators,
//! API-key records (MACs only), users. SQLite in WAL mode is the embedded default. Queries
//! use `$n` placeholders and integer timestamps so the same SQL runs on PostgreSQL.
//!
//! Durability: `synchronous = FULL`, so a write whose result a client has seen (an API key
//! secret, say) survives power loss, not only a process crash.

pub mod api_keys;
pub mod approvals;
pub mod attestation;
pub mod audit;
pub mod audit_scope;
pub mod ca_profiles;
pub mod console_sessions;
pub mod destroy_intents;
pub mod groups;
pub mod key_files;
pub mod keys;
pub mod leases;
pub mod meta;
pub mod oauth_servers;
pub mod revocations;
pub mod roles;
pub mod schema;
pub mod sessions;
pub mod users;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

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

/// Rows of `(TEXT, INTEGER)`, such as an id and a time.
fn text_int_pairs(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<(String, i64)>, StoreError> {
    use sqlx::Row;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Handle to the metadata database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite://path/to/keygate.db`).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres") {
            return Err(StoreError::Unavailable(
                "PostgreSQL is not built into this keygate yet; use sqlite://".into(),
            ));
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("store url {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
        schema::check_not_newer(&pool, url).await?;
        schema::accept_reworded(&pool).await?;
        schema::MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {url}: {e}")))?;
        schema::record(&pool).await?;
        Ok(Store { pool })
    }

    /// Opens an existing store without creating or migrating anything, after checking
    /// its schema is not newer than this binary (`keygate config check`, which only
    /// reads). Not SQLite's read-only mode: that cannot open a WAL store whose `-shm`
    /// file is gone.
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres") {
            return Err(StoreError::Unavailable(
                "PostgreSQL is not built into this keygate yet; use sqlite://".into(),
            ));
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("store url {url:?}: {e}")))?
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
        schema::check_not_newer(&pool, url).await?;
        Ok(Store { pool })
    }

    /// The newest migration applied to this store.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        schema::applied_version(&self.pool).await
    }

    /// Closes every connection (a restore renames the file afterwards).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
