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
//! replace an existing store without `--force`, and checks every live key version of the
//! snapshot against the configured hardware before anything is replaced.

use crate::config::Config;
use crate::hardware::executor::HardwareExecutor;
use crate::keys::KeyRegistry;
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

/// Restores `from` into the configured store. See the module documentation.
pub async fn restore(config: &Config, from: &Path, force: bool) -> Result<Manifest, BackupError> {
    let db = sqlite_path(&config.store.url)?;
    if db.exists() && !force {
        return Err(BackupError::Exists(db.display().to_string()));
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let staged = beside(&db, ".restoring");
    let _ = std::fs::remove_file(&staged);
    let result = stage_and_check(config, from, &staged).await;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            remove_sqlite_files(&staged);
            return Err(e);
        }
    };
    // The old store's WAL must not be replayed into the restored file.
    remove_sqlite_files(&db);
    std::fs::rename(&staged, &db).map_err(|e| io(&db, e))?;
    sync_dir(&db);
    Ok(manifest)
}

async fn stage_and_check(
    config: &Config,
    from: &Path,
    staged: &Path,
) -> Result<Manifest, BackupError> {
    let manifest = unpack(from, staged)?;
    let url = format!("sqlite://{}", staged.display());
    // Migrates a snapshot from an older keygate, so the restored store is current.
    let store = Store::open(&url).await.map_err(store_err)?;
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
    Ok(manifest)
}

fn remove_sqlite_files(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
