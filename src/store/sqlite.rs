//! The SQLite engine: the embedded default (docs/deployment.md, "Stores").
//!
//! Every `src/store/<area>.rs` is compiled once here and once in [`super::postgres`]; the
//! aliases below (`Db`, `DbConn`, `DbRow`, `DbPool`) and the few SQL fragments that differ
//! are what the area files see of their engine. Types the rest of keygate uses
//! (`shared! { ... }` in the area files) are compiled in this copy only, and the
//! PostgreSQL copy reuses them, so both engines take and return the same types.
//!
//! Durability: WAL with `synchronous = FULL`, so a write whose result a client has seen
//! (an API key secret, say) survives power loss, not only a process crash. Writers are
//! serialised by SQLite's one write lock (`BEGIN IMMEDIATE`).

#![allow(clippy::duplicate_mod)]

pub use super::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row as _;
use std::str::FromStr;
use std::time::Duration;

/// The sqlx database type of this engine.
pub type Db = sqlx::Sqlite;
/// A connection (or an open transaction, through `&mut *tx`) of this engine.
pub type DbConn = sqlx::SqliteConnection;
/// A result row of this engine.
pub type DbRow = sqlx::sqlite::SqliteRow;
/// The connection pool of this engine.
pub type DbPool = sqlx::SqlitePool;

/// Column that orders rows of one table by insertion (ties in a timestamp).
pub(crate) const ROWID: &str = "rowid";
/// `LIMIT` clause meaning "no limit", before an `OFFSET`.
pub(crate) const NO_LIMIT: &str = "LIMIT -1";
/// The character U+001F (ASCII unit separator) as an SQL expression.
pub(crate) const UNIT_SEPARATOR: &str = "char(31)";
/// The two-argument minimum.
pub(crate) const LEAST: &str = "MIN";
/// One row, one BIGINT: 1 when sqlx's migration table exists.
pub(crate) const MIGRATIONS_TABLE_EXISTS: &str =
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";

/// No notification channel: the appliers of replicas on one SQLite file poll.
pub(crate) const NOTIFY_CHANGE: Option<&str> = None;

/// Every SQLite migration built into this binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// Migrations whose text changed after release in comments only, with the checksum
/// released stores carry. sqlx refuses a store whose applied migration's checksum differs
/// from the binary's, so these are brought up to date before migrating.
pub(crate) const REWORDED: &[(i64, &str)] = &[(
    3,
    "6029801a9fae9e96eee1d9a1ae4371ee9d5df1ac22115b9bf4b7d6a19b912cb597bbb74134d64c7623a7c6b845bf08d1",
)];

/// Items the area files share between engines: compiled here, once.
macro_rules! shared {
    ($($i:item)*) => { $($i)* };
}
/// The PostgreSQL copy's import of the shared items; nothing to do here.
macro_rules! reuse_shared {
    ($m:ident) => {};
}

#[path = "api_keys.rs"]
pub mod api_keys;
#[path = "approvals.rs"]
pub mod approvals;
#[path = "attestation.rs"]
pub mod attestation;
#[path = "audit.rs"]
pub mod audit;
#[path = "audit_scope.rs"]
pub mod audit_scope;
#[path = "ca_profiles.rs"]
pub mod ca_profiles;
#[path = "changes.rs"]
pub mod changes;
#[path = "claims.rs"]
pub mod claims;
#[path = "console_sessions.rs"]
pub mod console_sessions;
#[path = "destroy_intents.rs"]
pub mod destroy_intents;
#[path = "groups.rs"]
pub mod groups;
#[path = "key_files.rs"]
pub mod key_files;
#[path = "keys.rs"]
pub mod keys;
#[path = "leases.rs"]
pub mod leases;
#[path = "meta.rs"]
pub mod meta;
#[path = "oauth_servers.rs"]
pub mod oauth_servers;
#[path = "revocations.rs"]
pub mod revocations;
#[path = "roles.rs"]
pub mod roles;
#[path = "schema.rs"]
pub mod schema;
#[path = "sessions.rs"]
pub mod sessions;
#[path = "users.rs"]
pub mod users;

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: DbPool,
    /// The change-feed applier's own connection (see [`super::on_feed_connection`]).
    feed: DbPool,
    /// `/readyz`'s own connection, so a flood of unauthenticated readiness checks waits on
    /// it and never on the applier's.
    ping: DbPool,
}

/// Begins a transaction that holds the write lock from its start (`BEGIN IMMEDIATE`),
/// for read-then-write changes that must not interleave.
pub(crate) async fn begin_write(
    pool: &DbPool,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Begins a transaction whose first statement writes (SQLite takes the write lock there).
pub(crate) async fn begin(pool: &DbPool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin().await
}

/// "Now" for leases: the caller's clock, bound as `$4` (SQLite has no clock of its own;
/// tests drive the process's with libfaketime).
pub(crate) const LEASE_NOW: &str = "$4";

/// Rows of `(TEXT, INTEGER)`, such as an id and a time.
fn text_int_pairs(rows: &[DbRow]) -> Result<Vec<(String, i64)>, StoreError> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

impl Store {
    /// The pool a call uses: the applier's dedicated connection inside
    /// [`super::on_feed_connection`], the shared pool everywhere else.
    pub(crate) fn pool(&self) -> &DbPool {
        if super::in_feed_task() {
            &self.feed
        } else {
            &self.pool
        }
    }

    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite://path/to/keygate.db`), with a pool of at most `max_connections`.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("store url {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(opts.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
        // Opened when the applier first polls (or `/readyz` first asks); a CLI command never does.
        let feed = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(opts.clone());
        let ping = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(opts);
        schema::check_not_newer(&pool, url).await?;
        schema::accept_reworded(&pool).await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {url}: {e}")))?;
        schema::record(&pool).await?;
        Ok(Store { pool, feed, ping })
    }

    /// Opens an existing store without creating or migrating anything, after checking
    /// its schema is not newer than this binary. Not SQLite's read-only mode: that cannot
    /// open a WAL store whose `-shm` file is gone.
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
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
        Ok(Store {
            feed: pool.clone(),
            ping: pool.clone(),
            pool,
        })
    }

    /// The newest migration applied to this store.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        schema::applied_version(&self.pool).await
    }

    /// Closes every connection (a restore renames the file afterwards).
    pub async fn close(&self) {
        self.pool.close().await;
        self.feed.close().await;
        self.ping.close().await;
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.ping).await?;
        Ok(())
    }
}
