//! The PostgreSQL engine, for several replicas on one database (docs/deployment.md,
//! "PostgreSQL").
//!
//! The same `src/store/<area>.rs` files as [`super::sqlite`], compiled against PostgreSQL.
//! The shared types (`shared! { ... }` in the area files) are not compiled again: each area
//! module here imports the SQLite copy's (`reuse_shared!`), so both engines take and
//! return the same types.
//!
//! Concurrency. SQLite serialises writers with its one write lock, and every
//! read-then-write rule of the store (the per-owner key limit, the session cap, approval
//! state moves, the audit chain, rotation steps) relies on it. Here every write
//! transaction ([`begin_write`], [`begin`]) takes one transaction-scoped advisory lock
//! first, so the same rules hold across every replica: at most one write transaction at a
//! time in the whole cluster, as on SQLite. Single statements outside a transaction are
//! atomic upserts (`ON CONFLICT`), which PostgreSQL runs under a row lock. The audit head
//! row is, in addition, updated with `UPDATE ... RETURNING`, which waits for the row.
//!
//! Time: leases compare against the database's clock ([`LEASE_NOW`]).

#![allow(clippy::duplicate_mod)]
// Pure helpers outside `shared!` compile in both copies but some are only used by the
// SQLite copy's shared items.
#![allow(dead_code)]
// Imports the area files need only for their shared items.
#![allow(unused_imports)]

pub use super::StoreError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Row as _;
use std::str::FromStr;
use std::time::Duration;

/// The sqlx database type of this engine.
pub type Db = sqlx::Postgres;
/// A connection (or an open transaction, through `&mut *tx`) of this engine.
pub type DbConn = sqlx::PgConnection;
/// A result row of this engine.
pub type DbRow = sqlx::postgres::PgRow;
/// The connection pool of this engine.
pub type DbPool = sqlx::PgPool;

/// Column that orders rows of one table by insertion: an identity column the PostgreSQL
/// migrations add where the SQLite queries use `rowid`.
pub(crate) const ROWID: &str = "ord";
/// `LIMIT` clause meaning "no limit", before an `OFFSET`.
pub(crate) const NO_LIMIT: &str = "LIMIT ALL";
/// The character U+001F (ASCII unit separator) as an SQL expression.
pub(crate) const UNIT_SEPARATOR: &str = "chr(31)";
/// The two-argument minimum.
pub(crate) const LEAST: &str = "LEAST";
/// One row, one BIGINT: 1 when sqlx's migration table exists in the current schema.
pub(crate) const MIGRATIONS_TABLE_EXISTS: &str = "SELECT COUNT(*) FROM information_schema.tables
     WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'";
/// "Now" for leases: the database server's clock, in whole seconds, so replicas whose
/// clocks differ agree on when a lease ends. (`$4`, the caller's time, is not used.)
pub(crate) const LEASE_NOW: &str = "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp())) AS BIGINT)";

/// Every PostgreSQL migration built into this binary. Several replicas starting on an
/// empty database apply them once: sqlx's migrator holds a session advisory lock while it
/// migrates.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// No PostgreSQL store was released before the migrations' final wording.
pub(crate) const REWORDED: &[(i64, &str)] = &[];

/// Advisory-lock keys (the two-`int4` key space, apart from sqlx's migration lock).
pub const LOCK_CLASS: i32 = 0x6b67; // "kg"
/// Held by every write transaction until it ends.
pub const WRITE_LOCK: i32 = 1;
/// Held while a replica creates the installation's built-in records at start.
const STARTUP_LOCK: i32 = 2;

/// Items the area files share between engines: compiled in the SQLite copy only.
macro_rules! shared {
    ($($t:tt)*) => {};
}
/// Imports the SQLite copy's shared items into this engine's area module `$m`.
macro_rules! reuse_shared {
    ($m:ident) => {
        #[allow(unused_imports)]
        pub use crate::store::sqlite::$m::*;
    };
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

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: DbPool,
    /// The change-feed applier's own connection (see [`super::on_feed_connection`]).
    feed: DbPool,
    /// The connection that `LISTEN`s for change-feed notifications.
    listen: DbPool,
    /// `/readyz`'s own connection, so a flood of unauthenticated readiness checks waits on
    /// it and never on the applier's.
    ping: DbPool,
}

/// Begins a write transaction and waits for the cluster-wide write lock (see the module
/// documentation), for read-then-write changes that must not interleave.
pub(crate) async fn begin_write(
    pool: &DbPool,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Begins a write transaction; the same as [`begin_write`] here.
pub(crate) async fn begin(pool: &DbPool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    begin_write(pool).await
}

/// Rows of `(TEXT, BIGINT)`, such as an id and a time.
fn text_int_pairs(rows: &[DbRow]) -> Result<Vec<(String, i64)>, StoreError> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// The channel a committed change feed write notifies (`changes.rs`): a wake-up for the
/// other replicas' appliers, never the source of truth (docs/deployment.md, "The change
/// feed").
pub(crate) const CHANGE_CHANNEL: &str = "keygate_changes";
/// Run inside every transaction that writes the change feed: PostgreSQL delivers the
/// notification at commit, and not at all on rollback.
pub(crate) const NOTIFY_CHANGE: Option<&str> = Some("SELECT pg_notify('keygate_changes', '')");

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

    /// Calls `wake` for every change-feed notification until the listening connection
    /// fails (then returns the error; the caller reconnects). The listener holds its own
    /// connection, never one of the shared pool's (docs/deployment.md, "Connection
    /// budget").
    pub async fn listen_for_changes(&self, wake: &(dyn Fn() + Send + Sync)) -> StoreError {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&self.listen).await {
            Ok(l) => l,
            Err(e) => return StoreError::from(e),
        };
        if let Err(e) = listener.listen(CHANGE_CHANNEL).await {
            return StoreError::from(e);
        }
        // Changes committed while this listener was not connected are found by the poll.
        wake();
        loop {
            match listener.recv().await {
                Ok(_) => wake(),
                Err(e) => return StoreError::from(e),
            }
        }
    }

    fn options(url: &str) -> Result<PgConnectOptions, StoreError> {
        Ok(PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("store url: {e}")))?
            .application_name("keygate"))
    }

    async fn connect(url: &str, size: u32) -> Result<DbPool, StoreError> {
        PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(Store::options(url)?)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))
    }

    /// A pool of one connection, opened on first use (a CLI command never uses it).
    fn one_connection(url: &str) -> Result<DbPool, StoreError> {
        Ok(PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(Store::options(url)?))
    }

    /// Connects to the database at `url` (`postgres://user@host/db`, which must exist)
    /// with a pool of at most `max_connections`, and migrates it.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let pool = Store::connect(url, max_connections).await?;
        let shown = super::redact_url(url);
        schema::check_not_newer(&pool, &shown).await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {shown}: {e}")))?;
        schema::record(&pool).await?;
        Ok(Store {
            pool,
            feed: Store::one_connection(url)?,
            listen: Store::one_connection(url)?,
            ping: Store::one_connection(url)?,
        })
    }

    /// Connects without migrating anything, after checking the schema is not newer than
    /// this binary (`keygate config check`).
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        let pool = Store::connect(url, 2).await?;
        schema::check_not_newer(&pool, &super::redact_url(url)).await?;
        Ok(Store {
            feed: pool.clone(),
            listen: pool.clone(),
            ping: pool.clone(),
            pool,
        })
    }

    /// The newest migration applied to this store.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        schema::applied_version(&self.pool).await
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
        self.feed.close().await;
        self.listen.close().await;
        self.ping.close().await;
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.ping).await?;
        Ok(())
    }

    /// Waits for the cluster-wide start-up lock, for creating the installation's
    /// built-in records (default rings, the bootstrap key) exactly once when replicas
    /// start together. Held on one connection until [`StartupLock::release`], or until
    /// the guard is dropped (the connection is then closed, which ends the lock).
    pub async fn startup_lock(&self) -> Result<StartupLock, StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(STARTUP_LOCK)
            .execute(&mut *conn)
            .await?;
        Ok(StartupLock { conn: Some(conn) })
    }
}

/// The start-up lock, held (see [`Store::startup_lock`]).
#[derive(Debug)]
pub struct StartupLock {
    conn: Option<sqlx::pool::PoolConnection<Db>>,
}

impl StartupLock {
    /// Releases the lock and returns its connection to the pool.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(LOCK_CLASS)
                .bind(STARTUP_LOCK)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Closing the session ends its locks.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for StartupLock {
    fn drop(&mut self) {
        // Never return a connection still holding the lock to the pool.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
