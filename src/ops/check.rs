//! `keygate config check`: is this configuration safe to restart with?
//!
//! Loading the file already names every unknown key and bad value by path
//! ([`crate::config::errors`]) and every contradiction ([`Config`]'s validation), the same
//! way `serve` does. This then probes what the file points at, without changing anything:
//! each backend (module loads, token found, login works), the store (readable, schema not
//! newer than this binary), and each key version the store records (present in its
//! hardware with the stored public key, or a working MAC key). See `docs/deployment.md`.

use crate::config::{BackendConfig, Config};
use crate::keys::KeyRegistry;
use crate::store::{schema, Store};
use std::io::Write;

/// What a check found: lines to show, and the problems among them.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: Vec<String>,
    pub problems: Vec<String>,
}

/// The effective settings, defaults included, with credentials in URLs redacted. Secret
/// values never appear in the configuration itself: PINs and owner auth are read from
/// the files or variables it names.
pub fn effective_settings(config: &Config) -> String {
    redact_userinfo(&format!("{config:#?}"))
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn redact_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '"' || c.is_whitespace() || c == '/')
            .unwrap_or(tail.len());
        let authority = tail.get(..end).unwrap_or_default();
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(authority.get(..=colon).unwrap_or_default());
                out.push_str("***");
                out.push_str(authority.get(at..).unwrap_or_default());
            }
            _ => out.push_str(authority),
        }
        rest = tail.get(end..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// Probes the store and the hardware `config` names.
pub async fn probe(config: &Config) -> Report {
    let mut r = Report::default();
    let mut executors = std::collections::HashMap::new();
    if config.backends.is_empty() {
        r.problems
            .push("backends: none configured (add [backends.<name>], or use --dev)".into());
    }
    for (name, cfg) in &config.backends {
        let kind = match cfg {
            BackendConfig::Pkcs11(p) => format!("pkcs11, token {:?}", p.token_label),
            BackendConfig::Tpm(t) => format!("tpm, {}", t.tcti),
        };
        let (n, c) = (name.clone(), cfg.clone());
        let connected =
            tokio::task::spawn_blocking(move || crate::runtime::connect_backend(&n, &c)).await;
        let exec = match connected {
            Ok(Ok((backend, size))) => {
                crate::hardware::executor::HardwareExecutor::new(name, backend, size)
                    .map_err(|e| e.to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match exec {
            Ok(exec) => match exec.probe().await {
                Ok(()) => {
                    r.ok.push(format!(
                        "backend {name} ({kind}): module loaded, token found, logged in"
                    ));
                    executors.insert(name.clone(), exec);
                }
                Err(e) => r
                    .problems
                    .push(format!("backends.{name} ({kind}): not reachable: {e}")),
            },
            Err(e) => r.problems.push(format!("backends.{name} ({kind}): {e}")),
        }
    }
    probe_store(config, executors, &mut r).await;
    r
}

async fn probe_store(
    config: &Config,
    executors: std::collections::HashMap<String, crate::hardware::executor::HardwareExecutor>,
    r: &mut Report,
) {
    let url = &config.store.url;
    if let Ok(path) = super::backup::sqlite_path(url) {
        if !path.exists() {
            r.ok.push(format!(
                "store {}: does not exist yet; `keygate serve` creates it and its key rings",
                path.display()
            ));
            return;
        }
    }
    let store = match Store::open_read_only(url).await {
        Ok(s) => s,
        Err(e) => {
            r.problems.push(format!("store.url: {e}"));
            return;
        }
    };
    let applied = store.schema_version().await.unwrap_or(0);
    if applied == 0 && store.is_postgres() {
        r.ok.push(format!(
            "store {}: empty database; `keygate serve` creates its tables and key rings",
            crate::store::redact_url(url)
        ));
        return;
    }
    let version = store.meta_get("keygate_version").await.ok().flatten();
    let known = schema::known_version();
    let pending = if applied < known {
        format!("; `serve` migrates it to {known}")
    } else {
        String::new()
    };
    r.ok.push(format!(
        "store {}: schema version {applied}, last written by keygate {}{pending}",
        crate::store::redact_url(url),
        version.as_deref().unwrap_or("(unrecorded)")
    ));
    let registry = match KeyRegistry::load(store.clone(), executors).await {
        Ok(k) => k,
        Err(e) => {
            r.problems.push(format!("store: reading key rings: {e}"));
            return;
        }
    };
    let versions = registry.versions();
    for (ring, rc) in &config.rings {
        match registry.active(ring) {
            Ok(v) if v.algorithm.to_string() != rc.algorithm || v.backend != rc.backend => {
                r.problems.push(format!(
                    "rings.{ring}: configured as {} on {:?}, but the store holds {} on {:?}; \
                     configuration does not change an existing ring (rotate it to move it)",
                    rc.algorithm, rc.backend, v.algorithm, v.backend
                ))
            }
            Ok(_) => {}
            Err(_) => r.ok.push(format!(
                "rings.{ring}: not created yet; `serve` creates it on {:?}",
                rc.backend
            )),
        }
    }
    let problems = registry.reconcile().await;
    let live = versions.iter().filter(|v| v.state.live()).count();
    if problems.is_empty() {
        r.ok.push(format!(
            "key rings: all {live} live key versions present in their hardware"
        ));
    }
    r.problems
        .extend(problems.into_iter().map(|p| format!("key ring {p}")));
    for exec in registry.backends().values() {
        let _ = exec
            .run("shutdown", |b| {
                b.shutdown();
                Ok(())
            })
            .await;
    }
    store.close().await;
}

/// Prints a report; returns the number of problems.
pub fn print(r: &Report, out: &mut impl Write) -> std::io::Result<usize> {
    for l in &r.ok {
        writeln!(out, "ok       {l}")?;
    }
    for p in &r.problems {
        writeln!(out, "PROBLEM  {p}")?;
    }
    Ok(r.problems.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_userinfo("url: \"postgres://kg:s3cret@db:5432/kg\", x: \"sqlite://var/k.db\""),
            "url: \"postgres://kg:***@db:5432/kg\", x: \"sqlite://var/k.db\""
        );
        assert_eq!(redact_userinfo("https://a@b/c"), "https://a@b/c");
    }
}
