//! Leases: a named right to do some work, held by one process until it expires. Several
//! replicas share one store; the one whose conditional upsert succeeds does the work.

use super::{Store, StoreError};

impl Store {
    /// Takes (or renews) lease `name` for `holder` until `now + ttl`. Succeeds when the
    /// lease is free, expired, or already held by `holder`; returns whether it did.
    /// "Now" is the database's clock on PostgreSQL (docs/deployment.md, "Several
    /// replicas on PostgreSQL"), `now` on SQLite.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(&format!(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {now} + $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                                              expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= {now}",
            now = super::LEASE_NOW
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
