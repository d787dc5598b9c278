//! `keygate backup` and `keygate restore` (`docs/backup.md`).
//!
//! A backup is a tar file holding `manifest.json` and `keygate.db`: a consistent snapshot
//! of the SQLite store taken with `VACUUM INTO` while the server runs (one read
//! transaction, so it never holds the write lock for long and never sees half a write).
//! The manifest names the keygate and schema versions, the audit chain head, every key
//! version with its hardware locator, and the snapshot's SHA-256. Key material is never in
//! a backup: it stays in the HSM or TPM, which has its own backup story.
//!
//! Restore checks the checksum, refuses a schema newer than this binary, refuses to
//! replace an existing store without `--force` or while a server holds its lock file
//! ([`crate::ops::store_lock`]). Over an existing store it keeps what that store revoked
//! or took away after the backup (credentials, roles, memberships, IdPs, key version
//! states) and appends a `store.restore` audit entry to the restored chain, in one
//! transaction (`docs/operations.md`, "Restoring over a newer store"). Then it checks
//! every live key version of the result against the configured hardware, before anything
//! is replaced.

use crate::config::Config;
use crate::hardware::executor::HardwareExecutor;
use crate::keys::KeyRegistry;
use crate::ops::store_lock;
use crate::store::{schema, Store};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The manifest's `format`.
pub const FORMAT: &str = "keygate-backup/1";
const MANIFEST: &str = "manifest.json";
const DB: &str = "keygate.db";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store is not one this command can snapshot.
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("store: {0}")]
    Store(String),
    /// The backup file is damaged, not a keygate backup, or too new.
    #[error("backup {path}: {reason}")]
    BadBackup { path: String, reason: String },
    /// A store exists where the restore would write.
    #[error("a store already exists at {0}; stop keygate and pass --force to replace it")]
    Exists(String),
    /// A server is running on the store (it holds the store's lock file).
    #[error("{0}")]
    InUse(String),
    /// The hardware lacks keys the snapshot needs.
    #[error("the configured hardware does not hold every key this backup needs:\n  {}", .0.join("\n  "))]
    MissingKeys(Vec<String>),
    #[error("hardware: {0}")]
    Hardware(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn store_err(e: impl std::fmt::Display) -> BackupError {
    BackupError::Store(e.to_string())
}

/// What `manifest.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The keygate that took the backup.
    pub keygate_version: String,
    pub schema_version: i64,
    pub created_at: String,
    pub audit_head: AuditHead,
    pub key_versions: Vec<RingVersion>,
    pub store: StoreFile,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: i64,
    /// Hex SHA-256 of the newest entry.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingVersion {
    pub ring: String,
    pub version: i64,
    pub state: String,
    pub backend: String,
    pub algorithm: String,
    /// Where the key lives in its hardware, as an RFC 7512 `pkcs11:` URI or the TPM
    /// key's display URI.
    pub locator: String,
    pub kid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreFile {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `keygate backup` and `keygate restore` copy the SQLite file; on a PostgreSQL store
/// they refuse, saying what to use instead (docs/backup.md#postgresql).
fn refuse_postgres(url: &str, restore: bool) -> Result<(), BackupError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok(());
    }
    Err(BackupError::Unsupported(if restore {
        "keygate restore writes a SQLite store file and cannot restore a PostgreSQL store \
         (store.url is postgres://). Stop every replica, restore the dump with \
         `pg_restore --clean --if-exists --dbname <database> keygate.dump`, check that the \
         hardware still holds every live key the dump names (`keygate config check`) and \
         that the audit chain is whole (`keygate audit verify`), then start the replicas \
         (docs/backup.md#postgresql)"
            .into()
    } else {
        "keygate backup copies the SQLite store file and cannot back up a PostgreSQL store \
         (store.url is postgres://). Use PostgreSQL's tools: `pg_dump --format=custom \
         --file keygate.dump <database>` takes a consistent dump while the replicas serve. \
         Keep it with the HSM's own backup: the dump holds the metadata (key versions and \
         their hardware locators, API keys, users, the audit log), the keys stay in the \
         hardware (docs/backup.md#postgresql)"
            .into()
    }))
}

/// The SQLite file behind `config.store.url`, or why there is none to back up.
pub fn sqlite_path(url: &str) -> Result<PathBuf, BackupError> {
    if url.starts_with("postgres") {
        return Err(BackupError::Unsupported(
            "keygate backup works on the SQLite store only; back up PostgreSQL with pg_dump \
             (docs/backup.md)"
                .into(),
        ));
    }
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| BackupError::Unsupported(format!("store.url {url:?}: {e}")))?;
    let path = opts.get_filename().to_path_buf();
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Err(BackupError::Unsupported(format!(
            "store.url {url:?} is not a file"
        )));
    }
    Ok(path)
}

async fn open_pool(path: &Path, create: bool) -> Result<SqlitePool, BackupError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .busy_timeout(std::time::Duration::from_secs(30));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| io(path, e))
}

/// A path beside `path` for a temporary file.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}{suffix}", std::process::id()));
    path.with_file_name(name)
}

fn sha256_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        ctx.update(buf.get(..n).unwrap_or_default());
    }
    Ok((total, crate::store::audit::hex(ctx.finish().as_ref())))
}

/// Reads the manifest's facts from a snapshot.
async fn describe(pool: &SqlitePool) -> Result<(i64, AuditHead, Vec<RingVersion>), BackupError> {
    let schema_version = schema::applied_version(pool).await.map_err(store_err)?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(pool)
        .await
        .map_err(store_err)?;
    let audit_head = match head {
        Some(r) => AuditHead {
            seq: r.try_get(0).map_err(store_err)?,
            hash: crate::store::audit::hex(&r.try_get::<Vec<u8>, _>(1).map_err(store_err)?),
        },
        None => AuditHead {
            seq: 0,
            hash: String::new(),
        },
    };
    let rows = sqlx::query(
        "SELECT ring, version, state, backend, algorithm, locator, kid
         FROM key_versions ORDER BY ring, version",
    )
    .fetch_all(pool)
    .await
    .map_err(store_err)?;
    let mut versions = Vec::with_capacity(rows.len());
    for r in rows {
        let raw: String = r.try_get(5).map_err(store_err)?;
        let locator = serde_json::from_str::<crate::hardware::KeyLocator>(&raw)
            .map(|l| l.uri())
            .unwrap_or(raw);
        versions.push(RingVersion {
            ring: r.try_get(0).map_err(store_err)?,
            version: r.try_get(1).map_err(store_err)?,
            state: r.try_get(2).map_err(store_err)?,
            backend: r.try_get(3).map_err(store_err)?,
            algorithm: r.try_get(4).map_err(store_err)?,
            locator,
            kid: r.try_get(6).map_err(store_err)?,
        });
    }
    Ok((schema_version, audit_head, versions))
}

/// Writes a consistent snapshot of the store to `out` (mode 0600), atomically.
pub async fn backup(config: &Config, out: &Path) -> Result<Manifest, BackupError> {
    refuse_postgres(&config.store.url, false)?;
    let db = sqlite_path(&config.store.url)?;
    if !db.exists() {
        return Err(BackupError::Store(format!(
            "no store at {}; nothing to back up",
            db.display()
        )));
    }
    let pool = open_pool(&db, false).await?;
    schema::check_not_newer(&pool, &config.store.url)
        .await
        .map_err(store_err)?;
    let snapshot = beside(out, ".db-snapshot");
    let _ = std::fs::remove_file(&snapshot);
    let snap = snapshot
        .to_str()
        .ok_or_else(|| BackupError::Unsupported(format!("{} is not UTF-8", snapshot.display())))?;
    sqlx::query("VACUUM INTO $1")
        .bind(snap)
        .execute(&pool)
        .await
        .map_err(|e| io(&snapshot, e))?;
    pool.close().await;
    let result = package(&snapshot, out).await;
    let _ = std::fs::remove_file(&snapshot);
    result
}

async fn package(snapshot: &Path, out: &Path) -> Result<Manifest, BackupError> {
    let pool = open_pool(snapshot, false).await?;
    let described = describe(&pool).await;
    pool.close().await;
    let (schema_version, audit_head, key_versions) = described?;
    let (bytes, sha256) = sha256_file(snapshot)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        keygate_version: schema::KEYGATE_VERSION.into(),
        schema_version,
        created_at: crate::http::time_fmt::rfc3339(crate::runtime::now()),
        audit_head,
        key_versions,
        store: StoreFile {
            file: DB.into(),
            bytes,
            sha256,
        },
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Store(format!("manifest: {e}")))?;
    let tmp = beside(out, ".partial");
    let written = write_tar(&tmp, &json, snapshot);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(|e| io(out, e))?;
    sync_dir(out);
    Ok(manifest)
}

/// Writes the tar of `manifest.json` and the snapshot to `tmp` (mode 0600) and syncs it.
fn write_tar(tmp: &Path, json: &[u8], snapshot: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| io(tmp, e))?;
    let mut tar = tar::Builder::new(file);
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(crate::runtime::now()).unwrap_or(0));
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, json)
        .map_err(|e| io(tmp, e))?;
    let mut db = std::fs::File::open(snapshot).map_err(|e| io(snapshot, e))?;
    tar.append_file(DB, &mut db).map_err(|e| io(tmp, e))?;
    let file = tar.into_inner().map_err(|e| io(tmp, e))?;
    file.sync_all().map_err(|e| io(tmp, e))
}

/// Makes a rename durable.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Reads a backup's manifest and unpacks its store to `db_out`; checks the checksum.
pub fn unpack(from: &Path, db_out: &Path) -> Result<Manifest, BackupError> {
    let bad = |reason: String| BackupError::BadBackup {
        path: from.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(from).map_err(|e| io(from, e))?;
    let mut archive = tar::Archive::new(file);
    let mut manifest: Option<Manifest> = None;
    let mut got_db = false;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        match name.as_str() {
            MANIFEST => {
                let mut text = String::new();
                entry
                    .take(1024 * 1024 * 16)
                    .read_to_string(&mut text)
                    .map_err(|e| bad(e.to_string()))?;
                manifest =
                    Some(serde_json::from_str(&text).map_err(|e| bad(format!("manifest: {e}")))?);
            }
            DB => {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(db_out)
                    .map_err(|e| io(db_out, e))?;
                std::io::copy(&mut entry, &mut f).map_err(|e| io(db_out, e))?;
                f.flush().map_err(|e| io(db_out, e))?;
                f.sync_all().map_err(|e| io(db_out, e))?;
                got_db = true;
            }
            other => return Err(bad(format!("unexpected entry {other:?}"))),
        }
    }
    let manifest = manifest.ok_or_else(|| bad("no manifest.json".into()))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "format {:?}; this keygate reads {FORMAT}",
            manifest.format
        )));
    }
    if !got_db {
        return Err(bad("no keygate.db".into()));
    }
    let (bytes, sha) = sha256_file(db_out)?;
    if bytes != manifest.store.bytes || sha != manifest.store.sha256 {
        return Err(bad(format!(
            "keygate.db does not match the manifest's checksum (sha256 {sha}, manifest {})",
            manifest.store.sha256
        )));
    }
    if manifest.schema_version > schema::known_version() {
        return Err(bad(format!(
            "schema version {} (keygate {}) is newer than this keygate {} knows ({}); restore it \
             with that keygate or newer",
            manifest.schema_version,
            manifest.keygate_version,
            schema::KEYGATE_VERSION,
            schema::known_version()
        )));
    }
    Ok(manifest)
}

/// Connects every configured backend, as `serve` does.
pub async fn connect_backends(
    config: &Config,
) -> Result<HashMap<String, HardwareExecutor>, BackupError> {
    let mut executors = HashMap::new();
    for (name, cfg) in &config.backends {
        let (n, c) = (name.clone(), cfg.clone());
        let (backend, size) =
            tokio::task::spawn_blocking(move || crate::runtime::connect_backend(&n, &c))
                .await
                .map_err(|e| BackupError::Hardware(e.to_string()))?
                .map_err(|e| BackupError::Hardware(e.to_string()))?;
        let exec = HardwareExecutor::new(name, backend, size)
            .map_err(|e| BackupError::Hardware(format!("backend {name:?}: {e}")))?;
        executors.insert(name.clone(), exec);
    }
    Ok(executors)
}

/// What a restore carried over from the store it replaced (`docs/operations.md`,
/// "Restoring over a newer store").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CarriedOver {
    /// Whether the replaced store is a later state of the backed-up one (its audit chain
    /// holds the backup's head): only then are its credentials compared.
    pub descends: bool,
    /// Access-token denylist entries still in force, copied.
    pub denylisted_tokens: u64,
    /// Sessions ended (logged out, revoked or purged) in the replaced store, ended.
    pub sessions_ended: u64,
    /// Refresh tokens exchanged in the replaced store, marked used.
    pub refresh_tokens_used: u64,
    /// API keys deleted, regenerated or re-roled in the replaced store, dropped.
    pub api_keys_dropped: u64,
    /// Key files deleted or re-keyed in the replaced store, dropped.
    pub key_files_dropped: u64,
    /// Passwords changed in the replaced store, taken from it; users deleted there lose
    /// their password.
    pub passwords: u64,
    /// Users whose role differs in the replaced store (a demotion, say), given that role.
    pub user_roles: u64,
    /// Custom roles whose permissions differ in the replaced store (or that it created
    /// since: users may hold them), taken from it; those it deleted keep no permission.
    pub custom_roles: u64,
    /// Groups deleted in the replaced store, deleted with their members and grants.
    pub groups_dropped: u64,
    /// Group memberships (of any principal) removed in the replaced store, removed.
    pub memberships_removed: u64,
    /// Group grants removed or changed in the replaced store, removed or taken from it.
    pub grants: u64,
    /// IdP registrations deleted in the replaced store, deleted.
    pub idps_dropped: u64,
    /// IdP registrations changed in the replaced store (re-keyed, another audience or
    /// mapping), taken from it.
    pub idps_updated: u64,
    /// Key versions whose state moved on in the replaced store (retired, compromised,
    /// destroyed, rotated) or that it created since, taken from it: the hardware holds
    /// what that store says.
    pub key_versions: u64,
    /// Approval requests decided (rejected, executed, expired, failed) or redeemed in the
    /// replaced store, given that outcome: none is pending or redeemable again.
    pub approvals: u64,
}

impl std::fmt::Display for CarriedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} denylisted tokens, {} sessions ended, {} refresh tokens used, {} API keys \
             dropped, {} key files dropped, {} passwords, {} user roles, {} custom roles, {} \
             groups dropped, {} group memberships removed, {} group grants, {} IdPs dropped, \
             {} IdPs updated, {} key versions, {} approvals",
            self.denylisted_tokens,
            self.sessions_ended,
            self.refresh_tokens_used,
            self.api_keys_dropped,
            self.key_files_dropped,
            self.passwords,
            self.user_roles,
            self.custom_roles,
            self.groups_dropped,
            self.memberships_removed,
            self.grants,
            self.idps_dropped,
            self.idps_updated,
            self.key_versions,
            self.approvals
        )?;
        if !self.descends {
            write!(
                f,
                " (the replaced store does not descend from this backup: only its denylist was carried over)"
            )?;
        }
        Ok(())
    }
}

/// Restores `from` into the configured store. See the module documentation.
pub async fn restore(config: &Config, from: &Path, force: bool) -> Result<Manifest, BackupError> {
    restore_reporting(config, from, force).await.map(|(m, _)| m)
}

/// [`restore`], also saying what was carried over from the store it replaced.
pub async fn restore_reporting(
    config: &Config,
    from: &Path,
    force: bool,
) -> Result<(Manifest, CarriedOver), BackupError> {
    refuse_postgres(&config.store.url, true)?;
    let db = sqlite_path(&config.store.url)?;
    if db.exists() && !force {
        return Err(BackupError::Exists(db.display().to_string()));
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    // Never under a running server: it would keep writing to the replaced file.
    let _lock = store_lock::hold_for_restore(&db).map_err(|e| match e {
        store_lock::LockError::Busy(m) => BackupError::InUse(m),
        e => BackupError::Io {
            path: store_lock::lock_path(&db).display().to_string(),
            reason: e.to_string(),
        },
    })?;
    let staged = beside(&db, ".restoring");
    let _ = std::fs::remove_file(&staged);
    let result = stage_carry_and_check(config, from, &staged, &db).await;
    let (manifest, carried) = match result {
        Ok(r) => r,
        Err(e) => {
            remove_sqlite_files(&staged);
            return Err(e);
        }
    };
    // The old store's WAL must not be replayed into the restored file.
    remove_sqlite_files(&db);
    std::fs::rename(&staged, &db).map_err(|e| io(&db, e))?;
    sync_dir(&db);
    Ok((manifest, carried))
}

/// In the staged store: carries over what the replaced store (`current`, if any) revoked
/// after the backup, and appends the `store.restore` audit entry, in one transaction.
async fn carry_over_and_record(
    staged: &Path,
    current: Option<&Path>,
    from: &Path,
    manifest: &Manifest,
) -> Result<CarriedOver, BackupError> {
    use sqlx::Connection;
    let now = crate::store::audit_scope::unix_now();
    let pool = open_pool(staged, false).await?;
    let mut conn = pool.acquire().await.map_err(store_err)?;
    let mut carried = CarriedOver::default();
    if let Some(cur) = current {
        sqlx::query("ATTACH DATABASE $1 AS cur")
            .bind(cur.display().to_string())
            .execute(&mut *conn)
            .await
            .map_err(|e| io(cur, e))?;
    }
    let mut tx = conn.begin().await.map_err(store_err)?;
    if current.is_some() {
        carried = carry_over(&mut tx, manifest, now)
            .await
            .map_err(|e| BackupError::Store(format!("carrying over revocations: {e}")))?;
    }
    let entry = crate::store::audit::NewAuditEntry {
        time: now,
        actor: crate::store::audit_scope::current_actor(),
        action: "store.restore".into(),
        target: from.display().to_string(),
        outcome: format!(
            "restored the backup taken {} (audit head seq {}); carried over: {carried}",
            manifest.created_at, manifest.audit_head.seq
        ),
    };
    crate::store::audit::append_in(&mut tx, &entry)
        .await
        .map_err(store_err)?;
    tx.commit().await.map_err(store_err)?;
    if current.is_some() {
        sqlx::query("DETACH DATABASE cur")
            .execute(&mut *conn)
            .await
            .map_err(store_err)?;
    }
    // Everything into the main file: only that file is renamed into place.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await
        .map_err(store_err)?;
    drop(conn);
    pool.close().await;
    Ok(carried)
}

/// The statements of [`carry_over_and_record`], against the attached `cur`.
async fn carry_over(
    tx: &mut sqlx::SqliteConnection,
    manifest: &Manifest,
    now: i64,
) -> Result<CarriedOver, sqlx::Error> {
    // The denylist is harmless to carry whatever the stores' relation.
    let denylisted_tokens = sqlx::query(
        "INSERT INTO main.revoked_tokens (jti, expires_at)
         SELECT jti, expires_at FROM cur.revoked_tokens WHERE expires_at >= $1
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let mut c = CarriedOver {
        denylisted_tokens,
        ..CarriedOver::default()
    };
    // Credentials are compared only with a later state of the same store: restoring into
    // another installation must not drop what that one never had.
    let head: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM cur.audit_log WHERE seq = $1")
        .bind(manifest.audit_head.seq)
        .fetch_optional(&mut *tx)
        .await?;
    c.descends = manifest.audit_head.seq == 0
        || head.is_some_and(|h| crate::store::audit::hex(&h) == manifest.audit_head.hash);
    if !c.descends {
        return Ok(c);
    }
    c.sessions_ended = sqlx::query(
        "UPDATE main.sessions SET revoked_at = $1,
             revoked_reason = COALESCE(
                 (SELECT s.revoked_reason FROM cur.sessions s WHERE s.id = sessions.id),
                 'ended after the backup that was restored')
         WHERE revoked_at IS NULL
           AND id NOT IN (SELECT id FROM cur.sessions WHERE revoked_at IS NULL)",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.refresh_tokens_used = sqlx::query(
        "UPDATE main.refresh_tokens
         SET used_at = (SELECT r.used_at FROM cur.refresh_tokens r WHERE r.mac = refresh_tokens.mac)
         WHERE used_at IS NULL AND EXISTS (
             SELECT 1 FROM cur.refresh_tokens r
             WHERE r.mac = refresh_tokens.mac AND r.used_at IS NOT NULL)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.api_keys_dropped = sqlx::query(
        "DELETE FROM main.api_keys
         WHERE id NOT IN (SELECT id FROM cur.api_keys)
            OR EXISTS (SELECT 1 FROM cur.api_keys k WHERE k.id = api_keys.id
                       AND (k.mac <> api_keys.mac OR k.role <> api_keys.role))",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.key_files_dropped = sqlx::query(
        "DELETE FROM main.key_files
         WHERE access_id NOT IN (SELECT access_id FROM cur.key_files)
            OR EXISTS (SELECT 1 FROM cur.key_files f WHERE f.access_id = key_files.access_id
                       AND (f.generation <> key_files.generation
                            OR f.public_key <> key_files.public_key
                            OR f.role <> key_files.role))",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.passwords = sqlx::query(
        "UPDATE main.users SET password_hash =
             (SELECT u.password_hash FROM cur.users u WHERE u.username = users.username)
         WHERE password_hash IS NOT NULL AND password_hash IS NOT
             (SELECT u.password_hash FROM cur.users u WHERE u.username = users.username)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    carry_over_privileges(tx, &mut c).await?;
    carry_over_idps(tx, &mut c).await?;
    carry_over_key_versions(tx, &mut c).await?;
    // An approval request decided or redeemed after the backup keeps that outcome: a
    // rejected request is not pending again, an executed super-admin key is not
    // redeemable again.
    c.approvals = sqlx::query(
        "UPDATE main.approvals SET (state, outcome, decided_at, redeemed_at) =
             (SELECT a.state, a.outcome, a.decided_at, a.redeemed_at FROM cur.approvals a
              WHERE a.id = approvals.id)
         WHERE EXISTS (SELECT 1 FROM cur.approvals a WHERE a.id = approvals.id
                       AND (a.state <> approvals.state
                            OR a.redeemed_at IS NOT approvals.redeemed_at))",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(c)
}

/// Who may do what: the replaced store's user roles, custom roles, groups, memberships
/// and grants where they differ, so a demotion, a removal from a group or a revoked grant
/// made after the backup holds. Memberships and groups are only ever removed (failing
/// closed): what the replaced store added since is not brought in, except the custom
/// roles its users now hold.
async fn carry_over_privileges(
    tx: &mut sqlx::SqliteConnection,
    c: &mut CarriedOver,
) -> Result<(), sqlx::Error> {
    // Roles first: a user's current role may be a custom role created after the backup.
    let updated = sqlx::query(
        "UPDATE main.roles SET (description, permissions, updated_at) =
             (SELECT r.description, r.permissions, r.updated_at FROM cur.roles r
              WHERE r.name = roles.name)
         WHERE EXISTS (SELECT 1 FROM cur.roles r WHERE r.name = roles.name
                       AND (r.permissions <> roles.permissions
                            OR r.description <> roles.description))",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let added = sqlx::query(
        "INSERT INTO main.roles (name, description, permissions, created_by, created_at, updated_at)
         SELECT name, description, permissions, created_by, created_at, updated_at
         FROM cur.roles WHERE name NOT IN (SELECT name FROM main.roles)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // A role deleted since keeps its row (a user deleted since may still name it) but
    // grants nothing.
    let emptied = sqlx::query(
        "UPDATE main.roles SET permissions = '[]', updated_at = $1
         WHERE name NOT IN (SELECT name FROM cur.roles) AND permissions <> '[]'",
    )
    .bind(crate::store::audit_scope::unix_now())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.custom_roles = updated + added + emptied;
    c.user_roles = sqlx::query(
        "UPDATE main.users SET (role, updated_at) =
             (SELECT u.role, u.updated_at FROM cur.users u WHERE u.username = users.username)
         WHERE EXISTS (SELECT 1 FROM cur.users u WHERE u.username = users.username
                       AND u.role <> users.role)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Members and grants go explicitly (not by cascade) so they are counted apart.
    c.memberships_removed = sqlx::query(
        "DELETE FROM main.group_members
         WHERE NOT EXISTS (SELECT 1 FROM cur.group_members m
                           WHERE m.group_name = group_members.group_name
                             AND m.principal = group_members.principal)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let grants_removed = sqlx::query(
        "DELETE FROM main.group_grants
         WHERE NOT EXISTS (SELECT 1 FROM cur.group_grants g
                           WHERE g.group_name = group_grants.group_name
                             AND g.resource = group_grants.resource)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let grants_changed = sqlx::query(
        "UPDATE main.group_grants SET (permissions, granted_by, granted_at) =
             (SELECT g.permissions, g.granted_by, g.granted_at FROM cur.group_grants g
              WHERE g.group_name = group_grants.group_name AND g.resource = group_grants.resource)
         WHERE EXISTS (SELECT 1 FROM cur.group_grants g
                       WHERE g.group_name = group_grants.group_name
                         AND g.resource = group_grants.resource
                         AND g.permissions <> group_grants.permissions)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.grants = grants_removed + grants_changed;
    c.groups_dropped =
        sqlx::query("DELETE FROM main.groups WHERE name NOT IN (SELECT name FROM cur.groups)")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    Ok(())
}

/// IdP registrations: one deleted after the backup stays deleted; one re-keyed (or given
/// another issuer, audience or mapping) keeps the replaced store's settings. One
/// registered since is not brought in.
async fn carry_over_idps(
    tx: &mut sqlx::SqliteConnection,
    c: &mut CarriedOver,
) -> Result<(), sqlx::Error> {
    c.idps_dropped = sqlx::query(
        "DELETE FROM main.oauth_servers
         WHERE oauth_id NOT IN (SELECT oauth_id FROM cur.oauth_servers)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.idps_updated = sqlx::query(
        "UPDATE main.oauth_servers SET
             (name, issuer, public_key_pem, jwks_uri, audience, audience_check, role_claim,
              role_mapping, updated_at) =
             (SELECT o.name, o.issuer, o.public_key_pem, o.jwks_uri, o.audience,
                     o.audience_check, o.role_claim, o.role_mapping, o.updated_at
              FROM cur.oauth_servers o WHERE o.oauth_id = oauth_servers.oauth_id)
         WHERE EXISTS (SELECT 1 FROM cur.oauth_servers o
                       WHERE o.oauth_id = oauth_servers.oauth_id
                         AND (o.name IS NOT oauth_servers.name
                              OR o.issuer IS NOT oauth_servers.issuer
                              OR o.public_key_pem IS NOT oauth_servers.public_key_pem
                              OR o.jwks_uri IS NOT oauth_servers.jwks_uri
                              OR o.audience IS NOT oauth_servers.audience
                              OR o.audience_check IS NOT oauth_servers.audience_check
                              OR o.role_claim IS NOT oauth_servers.role_claim
                              OR o.role_mapping IS NOT oauth_servers.role_mapping
                              OR o.updated_at IS NOT oauth_servers.updated_at))",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(())
}

/// Key versions: the hardware holds what the replaced store says, so its states win (a
/// version compromised, retired or destroyed after the backup is not live again) and the
/// versions it created since (a regenerate's replacement) are brought in with their rings.
/// States only move forward, so the replaced store's state is always the later one.
async fn carry_over_key_versions(
    tx: &mut sqlx::SqliteConnection,
    c: &mut CarriedOver,
) -> Result<(), sqlx::Error> {
    const TAKE: &str = "UPDATE main.key_versions SET
             (state, activated_at, retired_at, deactivated_at, compromised_at, destroyed_at) =
             (SELECT v.state, v.activated_at, v.retired_at, v.deactivated_at,
                     v.compromised_at, v.destroyed_at
              FROM cur.key_versions v
              WHERE v.ring = key_versions.ring AND v.version = key_versions.version)
         WHERE EXISTS (SELECT 1 FROM cur.key_versions v
                       WHERE v.ring = key_versions.ring AND v.version = key_versions.version
                         AND v.kid = key_versions.kid AND v.state <> key_versions.state
                         AND (v.state = 'active') = $1)";
    // Versions leaving `active` first, then those entering it: one active version per
    // ring holds after every statement.
    let mut n = sqlx::query(TAKE)
        .bind(false)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "INSERT INTO main.rings (name, algorithm, backend, purpose, created_by, created_at)
         SELECT name, algorithm, backend, purpose, created_by, created_at
         FROM cur.rings WHERE name NOT IN (SELECT name FROM main.rings)",
    )
    .execute(&mut *tx)
    .await?;
    n += sqlx::query(TAKE)
        .bind(true)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    n += sqlx::query(
        "INSERT INTO main.key_versions (ring, version, state, backend, algorithm, locator, kid,
             public_key, created_at, activated_at, retired_at, deactivated_at, compromised_at,
             destroyed_at)
         SELECT ring, version, state, backend, algorithm, locator, kid, public_key, created_at,
                activated_at, retired_at, deactivated_at, compromised_at, destroyed_at
         FROM cur.key_versions v
         WHERE NOT EXISTS (SELECT 1 FROM main.key_versions k
                           WHERE k.ring = v.ring AND k.version = v.version)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    c.key_versions = n;
    Ok(())
}

/// Unpacks and migrates the backup into `staged`, carries over what the store at `db` (if
/// any) changed since, then checks the hardware against the result: key versions created,
/// compromised or destroyed after the backup are known by then, so they are neither
/// orphans nor missing keys.
async fn stage_carry_and_check(
    config: &Config,
    from: &Path,
    staged: &Path,
    db: &Path,
) -> Result<(Manifest, CarriedOver), BackupError> {
    let manifest = unpack(from, staged)?;
    let url = format!("sqlite://{}", staged.display());
    // Migrates a snapshot from an older keygate, so the restored store is current.
    let store = Store::open(&url).await.map_err(store_err)?;
    store.close().await;
    let current = db.exists().then_some(db);
    let carried = carry_over_and_record(staged, current, from, &manifest).await?;
    check_hardware(config, &url).await?;
    Ok((manifest, carried))
}

/// Every live key version of the staged store against the configured hardware.
async fn check_hardware(config: &Config, url: &str) -> Result<(), BackupError> {
    let store = Store::open(url).await.map_err(store_err)?;
    let executors = connect_backends(config).await?;
    let registry = KeyRegistry::load(store.clone(), executors)
        .await
        .map_err(store_err)?;
    let problems = registry.reconcile().await;
    for exec in registry.backends().values() {
        let _ = exec
            .run("shutdown", |b| {
                b.shutdown();
                Ok(())
            })
            .await;
    }
    drop(registry);
    store.close().await;
    if !problems.is_empty() {
        return Err(BackupError::MissingKeys(problems));
    }
    Ok(())
}

fn remove_sqlite_files(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
