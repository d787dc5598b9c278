//! Command implementations behind `main`.

use crate::{AuditCommand, Command, KeysCommand, TlsCommand};
use anyhow::{bail, Context};
use keygate::config::Config;
use keygate::dev::DevLayout;
use keygate::http::{app, AppState};
use keygate::runtime::{now, Runtime};
use keygate::services::api_keys::NewApiKey;
use keygate::services::authz::{Role, ROOT_PRINCIPAL};
use keygate::services::{AuthMethod, Principal};
use secrecy::ExposeSecret;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

/// `println!` panics when stdout is closed (`keygate keys list | head`); this returns the
/// error instead.
macro_rules! out {
    ($($arg:tt)*) => {{
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// The CLI acts as the built-in `root` super-admin: whoever can read the PIN and the store
/// already holds every key.
fn cli_principal() -> Principal {
    Principal {
        name: ROOT_PRINCIPAL.into(),
        role: Role::SuperAdmin,
        method: AuthMethod::Cli,
    }
}

/// Runs a command. Every command but `serve` acts as `root` over the CLI, and the audit
/// entries of its changes say so (`docs/lifecycle.md`, "Audit log").
pub async fn run(
    command: Command,
    config: Config,
    layout: DevLayout,
    created: Vec<String>,
) -> anyhow::Result<()> {
    if matches!(command, Command::Serve { .. }) {
        return run_command(command, config, layout, created).await;
    }
    let actor = keygate::services::approvals::actor_of(&cli_principal(), None);
    keygate::store::audit_scope::AuditScope::for_actor(actor)
        .run(run_command(command, config, layout, created))
        .await
}

async fn run_command(
    command: Command,
    config: Config,
    layout: DevLayout,
    created: Vec<String>,
) -> anyhow::Result<()> {
    match command {
        Command::Serve { dev, .. } => serve(config, dev, layout, created).await,
        Command::AdminKeyCreate {
            name,
            description,
            role,
            owner,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let rt = Runtime::open(config).await?;
            // The same workflow as POST /api/v1/api-keys, as `root`: the act-as rule
            // applies (no key in an approver's name), and the key records root as its
            // maker, so it never votes for its owner.
            let actor = keygate::services::approvals::actor_of(&cli_principal(), None);
            let created = keygate::app::api_keys::create(
                &rt,
                &cli_principal(),
                &actor,
                NewApiKey {
                    name,
                    description: Some(description),
                    role,
                    owner: Some(owner),
                    expires_at: None,
                },
                now(),
            )
            .await?;
            match created {
                keygate::app::api_keys::KeyCreation::Created(key, secret) => {
                    eprintln!(
                        "created API key {} (role {}, owner {}); the secret is shown once:",
                        key.id, key.role, key.owner
                    );
                    out!("{}", secret.expose_secret());
                }
                keygate::app::api_keys::KeyCreation::Pending(a) => {
                    eprintln!(
                        "approvals.create-super-admin-key requires {} approval(s): request {} is pending; once approved, redeem it as root with POST /api/v1/approvals/{}/redeem",
                        a.required, a.approval_id, a.approval_id
                    );
                }
            }
            Ok(())
        }
        Command::AdminKeysList => {
            let rt = Runtime::open(config).await?;
            let keys = rt.api_keys.list(&cli_principal()).await?;
            out!(
                "{:<36}  {:<12}  {:<10}  {:<6}  {:<20}  NAME",
                "ID",
                "ROLE",
                "OWNER",
                "HINT",
                "EXPIRES"
            );
            for k in keys {
                out!(
                    "{:<36}  {:<12}  {:<10}  {:<6}  {:<20}  {}",
                    k.id,
                    k.role,
                    k.owner,
                    k.hint,
                    keygate::http::time_fmt::rfc3339(k.expires_at),
                    k.name
                );
            }
            Ok(())
        }
        Command::AdminKeyDelete { id } => {
            let rt = Runtime::open(config).await?;
            keygate::app::api_keys::delete(&rt, &cli_principal(), &id).await?;
            eprintln!("deleted API key {id}");
            Ok(())
        }
        Command::Keys { command } => {
            let rt = Runtime::open(config).await?;
            match command {
                KeysCommand::List => {
                    out!(
                        "{:<16} {:>3}  {:<10} {:<10} {:<8} KID",
                        "RING",
                        "VER",
                        "STATE",
                        "ALGORITHM",
                        "BACKEND"
                    );
                    for v in rt.keys.versions() {
                        let kind = rt
                            .keys
                            .backend(&v.backend)
                            .map(|b| b.backend().kind())
                            .unwrap_or("?");
                        out!(
                            "{:<16} {:>3}  {:<10} {:<10} {:<8} {}  ({kind}: {})",
                            v.ring,
                            v.version,
                            v.state,
                            v.algorithm,
                            v.backend,
                            v.kid,
                            v.locator.uri()
                        );
                    }
                }
                KeysCommand::Create {
                    ring,
                    algorithm,
                    backend,
                } => {
                    let v = keygate::services::key_rings::create(
                        &rt.keys,
                        &cli_principal(),
                        &ring,
                        &algorithm,
                        backend,
                        now(),
                    )
                    .await?;
                    out!(
                        "created ring {} v{} ({}) kid {}",
                        v.ring,
                        v.version,
                        v.algorithm,
                        v.kid
                    );
                }
                KeysCommand::Reconcile { apply } => {
                    reconcile(&rt, apply).await?;
                }
                KeysCommand::Attest {
                    ring,
                    version,
                    nonce,
                } => {
                    use keygate::http::routes::attestation::{parse_nonce, AttestationView};
                    let nonce = parse_nonce(nonce.as_deref()).map_err(anyhow::Error::msg)?;
                    let a = keygate::app::key_attestation::attest(
                        &rt,
                        &cli_principal(),
                        &ring,
                        version,
                        nonce,
                        now(),
                    )
                    .await?;
                    out!(
                        "{}",
                        serde_json::to_string_pretty(&AttestationView::from(a))?
                    );
                }
            }
            Ok(())
        }
        Command::Audit { command } => {
            let rt = Runtime::open(config).await?;
            match command {
                AuditCommand::Verify { from } => audit_verify(&rt, from).await,
                AuditCommand::Export { format, after } => {
                    if format != "jsonl" {
                        bail!("unknown export format {format:?}; use jsonl");
                    }
                    let mut after = after;
                    loop {
                        let page = rt.store.audit_entries(after, 1000).await?;
                        let Some(last) = page.last() else { break };
                        after = last.seq;
                        for e in &page {
                            out!("{}", serde_json::to_string(e)?);
                        }
                    }
                    Ok(())
                }
            }
        }
        // Handled in `main` before any configuration is read.
        Command::Client { .. } | Command::Openapi { .. } | Command::Manpage => {
            bail!("this command needs no configuration")
        }
        Command::Config { .. } | Command::Backup { .. } | Command::Restore { .. } => {
            crate::ops_cli::run(command, config).await
        }
        Command::Tls { command } => tls_command(command, config).await,
        Command::Bench {
            seconds,
            concurrency,
            rounds,
            load,
            rate,
            headers,
            body,
        } => {
            if let Some(url) = load {
                let spec = keygate::bench_load::LoadSpec {
                    url,
                    rate,
                    seconds,
                    connections: concurrency,
                    headers,
                    body,
                };
                return keygate::bench_load::run(&spec).await;
            }
            let rt = Runtime::open(config).await?;
            keygate::bench::run(&rt, seconds, concurrency, rounds).await?;
            // Every configured TPM backend: keygate against raw tss-esapi, same run.
            for (name, cfg) in &rt.config.backends {
                if let keygate::config::BackendConfig::Tpm(t) = cfg {
                    keygate::bench_tpm::run(&rt, name, &t.tcti, seconds, concurrency, rounds)
                        .await?;
                }
            }
            Ok(())
        }
    }
}

/// `keygate keys reconcile [--apply]` (docs/operations.md, "Reconciliation").
async fn reconcile(rt: &Runtime, apply: bool) -> anyhow::Result<()> {
    use keygate::services::approvals::{self, Done, Operation, Submitted};
    for done in rt.keys.complete_interrupted_destroys(now()).await {
        out!("{done}");
    }
    let problems = rt.keys.reconcile().await;
    if problems.is_empty() {
        out!("store and hardware agree");
        return Ok(());
    }
    for p in &problems {
        out!("{p}");
    }
    let orphans = rt.keys.orphans().await?;
    if !apply {
        if !orphans.is_empty() {
            eprintln!("{} orphaned object(s); `keygate keys reconcile --apply` removes them (gated by approvals.destroy)", orphans.len());
        }
        bail!("{} problem(s) found", problems.len());
    }
    let mut backends: Vec<&str> = orphans.iter().map(|o| o.backend.as_str()).collect();
    backends.sort_unstable();
    backends.dedup();
    let caller = cli_principal();
    let actor = approvals::actor_of(&caller, None);
    for backend in backends {
        let objects: Vec<String> = orphans
            .iter()
            .filter(|o| o.backend == backend)
            .map(|o| o.object.id.clone())
            .collect();
        let op = Operation::DestroyOrphans {
            backend: backend.to_string(),
            objects,
        };
        match keygate::app::approvals::submit(rt, &caller, &actor, op, now()).await? {
            Submitted::Done(Done::Other(s)) => out!("{s}"),
            Submitted::Done(_) => out!("done"),
            Submitted::Pending(a) => out!(
                "approval {} pending: {} approval(s) by {} needed (POST /api/v1/approvals/{}/approve)",
                a.approval_id,
                a.required,
                a.approvers.join(", "),
                a.approval_id
            ),
        }
    }
    Ok(())
}

/// `keygate tls ...`: the HTTPS identity in hardware.
async fn tls_command(command: TlsCommand, config: Config) -> anyhow::Result<()> {
    use keygate::tls::identity;
    let rt = Runtime::open(config).await?;
    let cert_file = rt.config.tls.cert_file.clone();
    match command {
        TlsCommand::Init {
            subject,
            san,
            csr,
            algorithm,
            backend,
            days,
        } => {
            let alg: keygate::hardware::Algorithm =
                algorithm.parse().map_err(anyhow::Error::msg)?;
            let params = identity::server_params(
                identity::parse_subject(&subject)?,
                identity::parse_sans(&san)?,
                days,
            );
            let (v, made) =
                identity::ensure_ring(&rt.keys, alg, backend.as_deref(), ROOT_PRINCIPAL).await?;
            if made {
                eprintln!(
                    "generated {} v{} ({}) in hardware: {}",
                    v.ring,
                    v.version,
                    v.algorithm,
                    v.locator.uri()
                );
            } else {
                eprintln!(
                    "using the existing {} v{} ({}): {}",
                    v.ring,
                    v.version,
                    v.algorithm,
                    v.locator.uri()
                );
            }
            let key = identity::signing_key(&rt.keys, &v)?;
            match csr {
                Some(path) => {
                    let pem = identity::csr(key, params).await?;
                    identity::write_atomically(&path, &pem)?;
                    eprintln!("wrote a CSR signed by the hardware key to {}; have it signed, then run `keygate tls install-cert <chain.pem>`", path.display());
                }
                None => {
                    let pem = identity::self_signed(key, params).await?;
                    identity::write_atomically(&cert_file, &pem)?;
                    eprintln!(
                        "wrote a self-signed certificate (signed by the hardware key) to {}",
                        cert_file.display()
                    );
                }
            }
            Ok(())
        }
        TlsCommand::InstallCert { chain } => {
            let bytes = std::fs::read(&chain)
                .with_context(|| format!("cannot read {}", chain.display()))?;
            let s = identity::install_cert(&rt.keys, &bytes, &cert_file).await?;
            eprintln!(
                "installed {} (subject {}, issuer {}, serial {}, valid until {}, {} certificate(s)); \
                 the leaf carries the hardware key. A running server loads it on SIGHUP or POST /api/v1/tls/reload.",
                cert_file.display(),
                s.subject,
                s.issuer,
                s.serial,
                s.not_after,
                s.chain_length
            );
            Ok(())
        }
    }
}

/// `keygate audit verify`: the chain, the checkpoints, the approvals, and the audit
/// keys against the hardware. Any problem is an error (exit 1).
async fn audit_verify(rt: &Runtime, from: i64) -> anyhow::Result<()> {
    let mut problems = rt.audit.check_keys_against_hardware().await;
    let report = rt.audit.verify_chain(from).await?;
    let mut approvals = 0;
    for a in rt.store.list_approvals(i64::MAX).await? {
        approvals += 1;
        problems
            .extend(keygate::services::approvals::verify_request(&rt.store, &rt.audit, &a).await?);
    }
    out!(
        "checked {} entries (to seq {}), {} checkpoints, {} approval requests",
        report.entries,
        report.last_seq,
        report.checkpoints,
        approvals
    );
    if let Some(b) = &report.broken {
        out!("BROKEN at seq {}: {}", b.seq, b.reason);
    }
    for p in &problems {
        out!("PROBLEM: {p}");
    }
    if report.broken.is_some() || !problems.is_empty() {
        bail!(
            "the audit log failed verification{}",
            report
                .broken
                .as_ref()
                .map(|b| format!(" (first broken seq {})", b.seq))
                .unwrap_or_default()
        );
    }
    out!("audit log OK");
    Ok(())
}

/// Plain HTTP is allowed only when asked for, and only on loopback.
fn check_listen(config: &Config, addr: &SocketAddr) -> anyhow::Result<()> {
    if config.server.insecure_http && !addr.ip().is_loopback() {
        bail!("plain HTTP (--insecure-http) may only listen on a loopback address, not {addr}");
    }
    Ok(())
}

async fn serve(
    config: Config,
    dev: bool,
    layout: DevLayout,
    created: Vec<String>,
) -> anyhow::Result<()> {
    let addr: SocketAddr =
        config.server.listen.parse().with_context(|| {
            format!("server.listen {:?} is not an address", config.server.listen)
        })?;
    check_listen(&config, &addr)?;
    let ops_addr: Option<SocketAddr> = match &config.server.ops_listen {
        Some(a) => Some(
            a.parse()
                .with_context(|| format!("server.ops_listen {a:?}"))?,
        ),
        None => None,
    };
    if let Some(a) = ops_addr.filter(|a| !a.ip().is_loopback()) {
        tracing::warn!(addr = %a, "server.ops_listen serves plain HTTP on a non-loopback address; keep it on a management network");
    }
    let _ = keygate::telemetry::metrics();
    // Bind before anything is printed or created: a port in use must not cost the
    // one-time bootstrap key. Binding first also tells us the issuer URL on port 0.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let ops = match ops_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a}"))?,
        ),
        None => None,
    };
    let mut config = config;
    let https = !config.server.insecure_http;
    let scheme = if https { "https" } else { "http" };
    if config.tokens.issuer.is_none() {
        let issuer = format!("{scheme}://{bound}");
        tracing::warn!(issuer = %issuer,
            "tokens.issuer is not set; using the listener's URL. Set it to the URL clients use.");
        config.tokens.issuer = Some(issuer);
    }
    // Held while serving: `keygate restore` refuses while any server holds it.
    let _store_lock = match keygate::ops::backup::sqlite_path(&config.store.url) {
        Ok(db) => keygate::ops::store_lock::hold_for_serving(&db)?,
        Err(_) => None,
    };
    let rt = Arc::new(Runtime::open(config).await?);
    let mut created = created;
    if https {
        if dev {
            created.extend(
                keygate::tls::identity::ensure_dev_identity(&rt.keys, &rt.config.tls.cert_file)
                    .await?,
            );
        }
        rt.tls.reload().await.context("loading the TLS identity")?;
        spawn_sighup_reload(&rt);
        if rt.config.tls.mtls != keygate::tls::settings::MtlsMode::Off {
            rt.tls.spawn_refresh();
        }
    }
    rt.keys.complete_interrupted_destroys(now()).await;
    rt.keys.reconcile().await;
    keygate::cluster::applier::spawn(&rt);
    rt.limits.spawn_sweeper();
    keygate::telemetry::spawn_upkeep();
    spawn_health_watch(&rt);
    keygate::background::spawn_rotation(&rt);
    keygate::background::spawn_purge(&rt);
    keygate::background::spawn_audit_checkpoints(&rt);
    keygate::background::spawn_audit_flush(&rt);
    let state = AppState { rt: rt.clone() };
    let mut out = std::io::stdout();
    if dev {
        writeln!(out, "keygate dev server")?;
        for c in &created {
            writeln!(out, "  created {c}")?;
        }
        writeln!(out, "  data dir     {}", layout.dir.display())?;
        writeln!(out, "  store        {}", layout.db.display())?;
        writeln!(
            out,
            "  SoftHSM conf {} (token \"keygate\")",
            layout.softhsm_conf.display()
        )?;
        writeln!(
            out,
            "  user PIN     {} (mode 0600)",
            layout.pin_file.display()
        )?;
    }
    if https {
        let cert = rt.config.tls.cert_file.display();
        writeln!(
            out,
            "  TLS cert     {cert} (key in hardware: ring tls-identity)"
        )?;
        let client = if rt.config.tls.mtls == keygate::tls::settings::MtlsMode::Required {
            " --cert CLIENT.pem --key CLIENT.key"
        } else {
            ""
        };
        writeln!(
            out,
            "  try          curl --cacert {cert}{client} https://{bound}/healthz"
        )?;
    }
    if dev {
        // The admin console (docs/console.md) on the same listener.
        writeln!(out, "  console      {scheme}://{bound}/console/")?;
    }
    bootstrap_key(&rt, &mut out).await?;
    if let Some(l) = &ops {
        writeln!(out, "keygate ops listening on http://{}", l.local_addr()?)?;
    }
    writeln!(out, "keygate listening on {scheme}://{bound}")?;
    out.flush()?;
    keygate::ops::notify_ready();
    tracing::info!(addr = %bound, "serving");
    if let Some(l) = ops {
        let router = keygate::http::ops_app(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, router)
                .with_graceful_shutdown(shutdown())
                .await
            {
                tracing::error!(error = %e, "ops listener failed");
            }
        });
    }
    if https {
        keygate::tls::listener::serve(
            listener,
            app(state),
            rt.tls.clone(),
            &rt.config.limits,
            shutdown(),
        )
        .await;
    } else {
        // The plain listener applies the same connection caps and timeouts as HTTPS; the
        // peer address reaches handlers as `PeerAddr` (rate limits, login throttling, audit).
        let limits = rt.config.limits.clone();
        keygate::conn::serve_plain(listener, app(state), &limits, shutdown()).await;
    }
    // Refusals counted in the open minute are written now, not lost.
    if let Err(e) = rt.audit.flush_failures(keygate::runtime::now(), true).await {
        tracing::error!(error = %e, "could not write the aggregated audit entries at shutdown");
    }
    // A TPM without a resource manager keeps what we loaded until it is flushed.
    for exec in rt.keys.backends().values() {
        if let Err(e) = exec
            .run("shutdown", |b| {
                b.shutdown();
                Ok(())
            })
            .await
        {
            tracing::warn!(backend = %exec.name(), error = %e, "backend shutdown failed");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The `meta` claim of the replica issuing the bootstrap key.
const BOOTSTRAP_CLAIM: &str = "bootstrap_key_claim";
/// After this long, a claim whose holder never issued the key is taken over.
const BOOTSTRAP_CLAIM_STALE_SECS: i64 = 300;

/// On the first start of an installation with no super-admin key, creates one and prints
/// its secret once. The key is recorded as issued only after the secret was written out;
/// if writing fails, the key is deleted again so the next start can issue a new one.
/// Replicas starting together on an empty store claim the job first, so exactly one of
/// them issues the key (docs/deployment.md); a claim whose holder died is taken over
/// after [`BOOTSTRAP_CLAIM_STALE_SECS`].
async fn bootstrap_key(rt: &Runtime, out: &mut impl Write) -> anyhow::Result<()> {
    // One replica at a time on a shared PostgreSQL store: exactly one bootstrap key.
    let startup = rt.store.startup_lock().await?;
    let r = bootstrap_key_locked(rt, out).await;
    startup.release().await;
    r
}

async fn bootstrap_key_locked(rt: &Runtime, out: &mut impl Write) -> anyhow::Result<()> {
    if rt.store.meta_get("bootstrap_key_issued").await?.is_some()
        || rt
            .store
            .any_api_key_with_role(Role::SuperAdmin.name())
            .await?
    {
        return Ok(());
    }
    if !rt
        .store
        .claim(BOOTSTRAP_CLAIM, now(), BOOTSTRAP_CLAIM_STALE_SECS)
        .await?
    {
        tracing::info!("another replica is issuing the bootstrap super-admin API key");
        return Ok(());
    }
    // The claim's previous holder may have finished just before its claim went stale.
    if rt
        .store
        .any_api_key_with_role(Role::SuperAdmin.name())
        .await?
    {
        return Ok(());
    }
    let (key, secret) = rt
        .api_keys
        .create(
            &cli_principal(),
            NewApiKey {
                name: "bootstrap".into(),
                description: Some("created at first start; replace it and delete this one".into()),
                role: Role::SuperAdmin,
                owner: Some(ROOT_PRINCIPAL.into()),
                expires_at: None,
            },
            now(),
        )
        .await?;
    let shown = writeln!(
        out,
        "bootstrap super-admin API key (shown once, store it now): {}",
        secret.expose_secret()
    )
    .and_then(|()| out.flush());
    if let Err(e) = shown {
        let _ = rt.api_keys.delete(&cli_principal(), &key.id).await;
        let _ = rt.store.release_claim(BOOTSTRAP_CLAIM).await;
        return Err(anyhow::Error::new(e).context("could not print the bootstrap key"));
    }
    rt.store
        .meta_set_once("bootstrap_key_issued", &key.id)
        .await?;
    tracing::info!(api_key = %key.id, "issued the bootstrap super-admin API key");
    Ok(())
}

/// Probes every backend every few seconds. A probe that finds the token gone
/// re-initialises the module, so keygate recovers when the token comes back even if
/// nobody polls `/readyz`.
fn spawn_health_watch(rt: &Arc<Runtime>) {
    for exec in rt.keys.backends().values() {
        let exec = exec.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut was_ok = true;
            loop {
                tick.tick().await;
                let ok = exec.probe().await.is_ok();
                if ok != was_ok {
                    if ok {
                        tracing::info!(backend = %exec.name(), "backend reachable again");
                    } else {
                        tracing::warn!(backend = %exec.name(), "backend unreachable");
                    }
                    was_ok = ok;
                }
            }
        });
    }
}

/// SIGHUP reloads the certificate chain, the CA profiles and their CRLs.
fn spawn_sighup_reload(rt: &Arc<Runtime>) {
    let rt = rt.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; use POST /api/v1/tls/reload");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the TLS configuration");
            if let Err(e) = rt.tls.reload().await {
                tracing::error!(error = %e, "TLS reload failed; the previous configuration stays in force");
            }
        }
    });
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
