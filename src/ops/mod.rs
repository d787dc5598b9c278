//! Operations: checking a configuration before a restart (`keygate config check`),
//! backing up and restoring the store (`keygate backup`, `keygate restore`), the schema
//! and version record of a store, and the HTTP reference generated from the OpenAPI
//! document (`keygate openapi`). See `docs/deployment.md`, `docs/backup.md` and
//! `docs/upgrading.md`.

pub mod api_doc;
pub mod backup;
pub mod check;
pub mod store_lock;

/// Tells systemd (`Type=notify`) that keygate is listening; nothing without
/// `NOTIFY_SOCKET`.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify systemd that keygate is ready");
    }
}
