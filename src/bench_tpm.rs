//! `keygate bench` for TPM backends: ES256 signatures per second through keygate (the
//! hardware executor, from many concurrent async callers, exactly as the services sign)
//! against raw tss-esapi calls in a tight loop on the same TPM in the same run.
//!
//! The two never hold the TPM at once: swtpm without a resource manager has room for
//! only 3 transient objects, and each side needs a primary and a key. So the rounds
//! alternate, and keygate's backend is shut down (everything flushed) before a raw round.

use crate::hardware::executor::HardwareExecutor;
use crate::hardware::tpm::templates;
use crate::hardware::{Algorithm, Backend, KeySpec};
use crate::runtime::Runtime;
use anyhow::Context as _;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, HashcheckTicket, SignatureScheme};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

const MESSAGE: &[u8] = b"keygate benchmark message: header.payload";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Raw tss-esapi: own context, own primary and ES256 key, `TPM2_Sign` in a loop (hashing
/// in software each time, as keygate does) for `dur`. Flushes everything before returning.
fn raw(tcti: &str, dur: Duration) -> anyhow::Result<f64> {
    let mut ctx = tss_esapi::Context::new(TctiNameConf::from_str(tcti)?)?;
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    let primary = ctx
        .create_primary(
            Hierarchy::Owner,
            templates::storage_primary()?,
            None,
            None,
            None,
            None,
        )?
        .key_handle;
    let created = ctx.create(
        primary,
        templates::child(Algorithm::ES256)?,
        None,
        None,
        None,
        None,
    )?;
    let key = ctx.load(primary, created.out_private, created.out_public)?;
    let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })?;
    let start = Instant::now();
    let mut n = 0u64;
    let result = loop {
        if start.elapsed() >= dur {
            break Ok(n as f64 / start.elapsed().as_secs_f64());
        }
        let digest = Digest::try_from(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, MESSAGE)
                .as_ref()
                .to_vec(),
        )?;
        if let Err(e) = ctx.sign(key, digest, SignatureScheme::Null, ticket.clone()) {
            break Err(anyhow::Error::from(e).context("raw TPM2_Sign"));
        }
        n += 1;
    };
    let _ = ctx.flush_context(key.into());
    let _ = ctx.flush_context(primary.into());
    result
}

/// Through keygate: `concurrency` async callers sign via the executor for `dur`.
async fn pooled(
    exec: &HardwareExecutor,
    key: &crate::hardware::KeyLocator,
    concurrency: usize,
    dur: Duration,
) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (exec, key, count) = (exec.clone(), key.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let k = key.clone();
                exec.run("sign", move |b: &dyn Backend| {
                    b.sign(&k, Algorithm::ES256, MESSAGE).map(|_| ())
                })
                .await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), crate::hardware::HardwareError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Prints keygate's and the raw ES256 sign rate on TPM backend `name`.
pub async fn run(
    rt: &Runtime,
    name: &str,
    tcti: &str,
    seconds: u64,
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let exec = rt.keys.backend(name)?.clone();
    let dur = Duration::from_secs(seconds.max(1));
    let spec = KeySpec {
        algorithm: Algorithm::ES256,
        label: "keygate:bench:tpm".into(),
    };
    let key = exec
        .run("generate", move |b| b.generate(&spec))
        .await
        .with_context(|| format!("generating a bench key on TPM backend {name:?}"))?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        ours.push(pooled(&exec, &key, concurrency, dur).await?);
        exec.run("shutdown", |b| {
            b.shutdown();
            Ok(())
        })
        .await?;
        let t = tcti.to_string();
        theirs.push(tokio::task::spawn_blocking(move || raw(&t, dur)).await??);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let mut out = std::io::stdout();
    writeln!(
        out,
        "TPM backend {name:?} ({tcti}): ES256 sign, {}s per run, {} rounds (medians)",
        dur.as_secs(),
        rounds.max(1)
    )?;
    writeln!(
        out,
        "{:<16} {:>14} {:>14} {:>10}",
        "operation", "raw esapi/s", "keygate/s", "keygate/raw"
    )?;
    writeln!(
        out,
        "{:<16} {:>14.0} {:>14.0} {:>9.0}%",
        "TPM ES256 sign",
        theirs,
        ours,
        100.0 * ours / theirs.max(1e-9)
    )?;
    let k = key.clone();
    if let Err(e) = exec.run("destroy", move |b| b.destroy(&k)).await {
        tracing::warn!(key = %key.uri(), error = %e, "could not flush the TPM bench key");
    }
    Ok(())
}
