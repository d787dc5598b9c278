//! The store's schema version, and which keygate wrote it (`docs/upgrading.md`).
//!
//! Migrations are forward-only. Before migrating, [`check_not_newer`] refuses a store whose
//! schema is newer than this binary knows: a downgrade would run on tables it does not
//! understand. After migrating, [`record`] writes `schema_version` and `keygate_version`
//! (the last version that opened the store for writing) into `meta`.

use super::{DbPool, StoreError, MIGRATOR};

/// This binary's version, as recorded in the stores it writes.
pub const KEYGATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Migrations whose text changed after release in comments only, with the checksum
/// released stores carry. sqlx refuses a store whose applied migration's checksum differs
/// from the binary's, so these are brought up to date before migrating.
/// Engine-specific (`super::REWORDED`): PostgreSQL stores have none.
const REWORDED: &[(i64, &str)] = super::REWORDED;

/// The newest schema version this binary can migrate to.
pub fn known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration applied to the store behind `pool`; 0 for a new store.
pub async fn applied_version(pool: &DbPool) -> Result<i64, StoreError> {
    let exists: i64 = sqlx::query_scalar(super::MIGRATIONS_TABLE_EXISTS)
        .fetch_one(pool)
        .await?;
    if exists == 0 {
        return Ok(0);
    }
    let v: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    Ok(v.unwrap_or(0))
}

/// The keygate version recorded by the last binary that migrated the store, if any.
async fn recorded_writer(pool: &DbPool) -> Option<String> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = 'keygate_version'")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// Refuses a store written by a newer keygate, naming both versions.
pub async fn check_not_newer(pool: &DbPool, url: &str) -> Result<(), StoreError> {
    let applied = applied_version(pool).await?;
    let known = known_version();
    if applied > known {
        let writer = recorded_writer(pool)
            .await
            .map(|v| format!("keygate {v}"))
            .unwrap_or_else(|| "a newer keygate".into());
        return Err(StoreError::Unavailable(format!(
            "the store at {url} has schema version {applied}, written by {writer}; this keygate \
             {KEYGATE_VERSION} knows schema versions up to {known}. Run the newer keygate, or \
             restore a backup taken before the upgrade (docs/upgrading.md)"
        )));
    }
    Ok(())
}

/// Brings the checksums of [`REWORDED`] migrations up to date (see there).
pub async fn accept_reworded(pool: &DbPool) -> Result<(), StoreError> {
    if applied_version(pool).await? == 0 {
        return Ok(());
    }
    for (version, old) in REWORDED {
        let Some(current) = MIGRATOR.iter().find(|m| m.version == *version) else {
            continue;
        };
        let old = hex_decode(old)
            .ok_or_else(|| StoreError::Failed(format!("bad checksum for migration {version}")))?;
        sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
        )
        .bind(current.checksum.as_ref())
        .bind(version)
        .bind(old)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Records the schema version and this keygate's version after migrating.
pub async fn record(pool: &DbPool) -> Result<(), StoreError> {
    let applied = applied_version(pool).await?;
    for (key, value) in [
        ("schema_version", applied.to_string()),
        ("keygate_version", KEYGATE_VERSION.to_string()),
    ] {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(pool)
        .await?;
    }
    Ok(())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

shared! {
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_knows_the_released_migrations() {
        assert!(known_version() >= 7);
        assert_eq!(hex_decode("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex_decode("0g"), None);
    }
}
}
