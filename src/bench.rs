//! `keygate bench`: raw token rates against the same operations through keygate's pool.
//!
//! "Raw" opens its own sessions with cryptoki and calls `C_Sign` in a tight loop, one
//! thread per session: the ceiling the device gives any program. "Pool" sends the same
//! operation through [`HardwareExecutor`] from many concurrent async callers, exactly as
//! request handlers do. Both use temporary keys generated for the run and destroyed after.

use crate::hardware::executor::HardwareExecutor;
use crate::hardware::pkcs11::module::{find_token, shared_context};
use crate::hardware::{Algorithm, Backend, KeyLocator, KeySpec};
use crate::runtime::Runtime;
use anyhow::{bail, Context};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one raw loop does per iteration.
#[derive(Clone, Copy)]
enum Op {
    SignEs256,
    Hmac,
    /// No hardware call: measures the pool's own round trip.
    Noop,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::SignEs256 => "ES256 sign",
            Op::Hmac => "HMAC-SHA256",
            Op::Noop => "no-op",
        }
    }
}

/// CPU time the calling thread has used, in nanoseconds (`/proc/thread-self/schedstat`),
/// or `None` where that file does not exist.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// CPU time of every live thread of this process, in nanoseconds.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let path = t.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(path).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// One measurement: operations per second, and CPU microseconds per operation (0 when
/// the CPU time cannot be read).
#[derive(Clone, Copy)]
struct Rate {
    per_sec: f64,
    cpu_us: f64,
}

fn medians(v: &[Rate]) -> Rate {
    Rate {
        per_sec: median(v.iter().map(|r| r.per_sec).collect()),
        cpu_us: median(v.iter().map(|r| r.cpu_us).collect()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs every measurement `rounds` times, interleaved (raw 1, raw 2, pool, raw 1, ...) so
/// that drift on a shared machine hits all three alike, and prints medians.
pub async fn run(
    rt: &Runtime,
    seconds: u64,
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let active = rt.keys.active(crate::keys::JWT_DEFAULT_RING)?;
    let exec = rt.keys.backend(&active.backend)?.clone();
    let settings = Arc::new(raw_settings(rt, &active.backend)?);
    let dur = Duration::from_secs(seconds.max(1));
    let rounds = rounds.max(1);
    let ec = generate(&exec, Algorithm::ES256).await?;
    let mac = match generate(&exec, Algorithm::HS256).await {
        Ok(m) => m,
        Err(e) => {
            destroy(&exec, &ec).await;
            return Err(e);
        }
    };
    let result = measure(&exec, &settings, &ec, &mac, dur, rounds, concurrency).await;
    // The temporary keys go whatever happened above (an error, a closed stdout).
    destroy(&exec, &ec).await;
    destroy(&exec, &mac).await;
    result
}

async fn destroy(exec: &HardwareExecutor, key: &KeyLocator) {
    let k = key.clone();
    if let Err(e) = exec.run("destroy", move |b| b.destroy(&k)).await {
        tracing::warn!(key = %key.uri(), error = %e, "could not destroy a bench key");
    }
}

async fn measure(
    exec: &HardwareExecutor,
    settings: &Arc<RawSettings>,
    ec: &KeyLocator,
    mac: &KeyLocator,
    dur: Duration,
    rounds: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    // `println!` would panic on a closed stdout (`keygate bench | head`).
    let mut out = std::io::stdout();
    writeln!(
        out,
        "keygate bench: backend {:?}, pool {} sessions, {}s per run, {rounds} interleaved rounds (medians), pooled concurrency {}",
        exec.name(),
        exec.threads(),
        dur.as_secs(),
        concurrency
    )?;
    writeln!(
        out,
        "{:<12} {:>12} {:>12} {:>14} {:>10}",
        "operation", "raw 1 thr/s", "raw 2 thr/s", "keygate pool/s", "pool/best"
    )?;
    let mut cpu = Vec::new();
    for (op, key) in [(Op::SignEs256, ec), (Op::Hmac, mac)] {
        let (mut r1, mut r2, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            r1.push(raw_off_runtime(settings, op, key, 1, dur).await?);
            r2.push(raw_off_runtime(settings, op, key, 2, dur).await?);
            pooled.push(pool(exec, op, key, concurrency, dur).await?);
        }
        let (r1, r2, pooled) = (medians(&r1), medians(&r2), medians(&pooled));
        cpu.push((op, r1.cpu_us, r2.cpu_us, pooled.cpu_us));
        let (r1, r2, pooled) = (r1.per_sec, r2.per_sec, pooled.per_sec);
        let best = r1.max(r2);
        writeln!(
            out,
            "{:<12} {:>12.0} {:>12.0} {:>14.0} {:>9.0}%",
            op.name(),
            r1,
            r2,
            pooled,
            100.0 * pooled / best.max(1.0)
        )?;
        if pooled <= 0.0 {
            bail!("{} made no progress through the pool", op.name());
        }
    }
    let verify = verify_rates(&mut out, exec, ec, dur, rounds).await?;
    let noop = pool(exec, Op::Noop, mac, concurrency, dur).await?;
    writeln!(
        out,
        "pool round trip without a hardware call: {:.0}/s (the executor's own ceiling, {:.1} us CPU per call)",
        noop.per_sec, noop.cpu_us
    )?;
    // CPU per operation: steadier than rates on a shared machine. `ci/bench.sh` reads the
    // `cpu` lines (raw 1-thread figure = the cost of the hardware operation itself).
    writeln!(
        out,
        "CPU per operation, us (medians): {:>10} {:>10} {:>12}",
        "raw 1 thr", "raw 2 thr", "keygate pool"
    )?;
    for (op, c1, c2, cp) in cpu {
        writeln!(
            out,
            "cpu {:<14} {c1:>10.1} {c2:>10.1} {cp:>12.1}",
            op.name().replace(' ', "-")
        )?;
    }
    writeln!(
        out,
        "cpu {:<14} {:>10.1} {:>10.1} {:>12}",
        "P-256-verify", verify.0, verify.1, "-"
    )?;
    Ok(())
}

/// The software ceiling for verifying keygate's JWTs: aws-lc-rs ECDSA P-256 verification
/// of a signature the token made, on 1 and 2 threads, no keygate code in the loop.
async fn verify_rates(
    out: &mut std::io::Stdout,
    exec: &HardwareExecutor,
    ec: &KeyLocator,
    dur: Duration,
    rounds: usize,
) -> anyhow::Result<(f64, f64)> {
    let k = ec.clone();
    let msg = b"keygate bench verify".to_vec();
    let m = msg.clone();
    let (public, sig) = exec
        .run("bench", move |b| {
            Ok((b.public_key(&k)?, b.sign(&k, Algorithm::ES256, &m)?))
        })
        .await?;
    let point = match &public.material {
        crate::hardware::public_key::PublicKeyMaterial::Ec { point } => point.clone(),
        _ => bail!("the ES256 bench key has no EC point"),
    };
    let verify_loop = move |threads: usize| -> Rate {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, count, cpu_ns) = (stop.clone(), count.clone(), cpu_ns.clone());
                let (point, msg, sig) = (point.clone(), msg.clone(), sig.0.clone());
                std::thread::spawn(move || {
                    let cpu0 = thread_cpu_ns();
                    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                        point,
                    );
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if key.verify(&msg, &sig).is_ok() {
                            n += 1;
                        }
                    }
                    count.fetch_add(n, Ordering::Relaxed);
                    if let (Some(a), Some(b)) = (cpu0, thread_cpu_ns()) {
                        cpu_ns.fetch_add(b.saturating_sub(a), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        let n = count.load(Ordering::Relaxed) as f64;
        Rate {
            per_sec: n / start.elapsed().as_secs_f64(),
            cpu_us: cpu_ns.load(Ordering::Relaxed) as f64 / 1000.0 / n.max(1.0),
        }
    };
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let f = verify_loop.clone();
        v1.push(tokio::task::spawn_blocking(move || f(1)).await?);
        let f = verify_loop.clone();
        v2.push(tokio::task::spawn_blocking(move || f(2)).await?);
    }
    let (v1, v2) = (medians(&v1), medians(&v2));
    writeln!(
        out,
        "{:<12} {:>12.0} {:>12.0}   (aws-lc-rs in software, the JWT verification ceiling)",
        "P-256 verify", v1.per_sec, v2.per_sec
    )?;
    Ok((v1.cpu_us, v2.cpu_us))
}

async fn generate(exec: &HardwareExecutor, algorithm: Algorithm) -> anyhow::Result<KeyLocator> {
    let spec = KeySpec {
        algorithm,
        label: format!("keygate:bench:{algorithm}"),
    };
    Ok(exec.run("generate", move |b| b.generate(&spec)).await?)
}

struct RawSettings {
    module: std::path::PathBuf,
    label: String,
    pin: secrecy::SecretString,
    hash_in_software: bool,
}

fn raw_settings(rt: &Runtime, backend: &str) -> anyhow::Result<RawSettings> {
    use crate::config::BackendConfig;
    let Some(BackendConfig::Pkcs11(p)) = rt.config.backends.get(backend) else {
        bail!("bench needs a pkcs11 backend; {backend:?} is not one");
    };
    let profile =
        crate::hardware::profile::HsmProfile::load(p.profiles_dir.as_deref(), &p.profile)?;
    let module = p
        .module
        .clone()
        .or(profile.module.clone())
        .context("no module path")?;
    let pin = match (&p.pin_env, &p.pin_file) {
        (Some(v), _) if std::env::var(v).is_ok() => {
            secrecy::SecretString::from(std::env::var(v).unwrap_or_default())
        }
        (_, Some(f)) => crate::dev::read_pin_file(f)?,
        _ => bail!("no PIN configured"),
    };
    Ok(RawSettings {
        module,
        label: p.token_label.clone(),
        pin,
        hash_in_software: profile.quirks.ecdsa_hash_in_software,
    })
}

/// [`raw`] on a blocking thread: its PKCS#11 calls and sleep must not hold an async worker.
async fn raw_off_runtime(
    s: &Arc<RawSettings>,
    op: Op,
    key: &KeyLocator,
    threads: usize,
    dur: Duration,
) -> anyhow::Result<Rate> {
    let (s, key) = (s.clone(), key.clone());
    tokio::task::spawn_blocking(move || raw(&s, op, &key, threads, dur)).await?
}

/// Raw cryptoki: `threads` threads, each with its own session, for `dur`.
fn raw(
    s: &RawSettings,
    op: Op,
    key: &KeyLocator,
    threads: usize,
    dur: Duration,
) -> anyhow::Result<Rate> {
    let KeyLocator::Pkcs11 { id, .. } = key else {
        anyhow::bail!("{} is not a PKCS#11 key", key.uri());
    };
    let id = crate::hardware::pkcs11::decode_hex(id).context("key id")?;
    let ctx = shared_context(&s.module)?;
    let slot = find_token(&ctx, &s.label)?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let session = ctx.open_rw_session(slot)?;
        match session.login(UserType::User, Some(&s.pin)) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => return Err(e.into()),
        }
        let class = match op {
            Op::SignEs256 => ObjectClass::PRIVATE_KEY,
            Op::Hmac | Op::Noop => ObjectClass::SECRET_KEY,
        };
        let h = *session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())])?
            .first()
            .context("bench key not found")?;
        let (count, stop) = (count.clone(), stop.clone());
        let soft = s.hash_in_software;
        handles.push(std::thread::spawn(
            move || -> Result<u64, cryptoki::error::Error> {
                let msg = b"keygate benchmark message: header.payload";
                let cpu0 = thread_cpu_ns();
                while !stop.load(Ordering::Relaxed) {
                    match op {
                        Op::SignEs256 if soft => {
                            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
                            session.sign(&Mechanism::Ecdsa, h, d.as_ref())?;
                        }
                        Op::SignEs256 => {
                            session.sign(&Mechanism::EcdsaSha256, h, msg)?;
                        }
                        Op::Hmac | Op::Noop => {
                            session.sign(&Mechanism::Sha256Hmac, h, msg)?;
                        }
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(match (cpu0, thread_cpu_ns()) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => 0,
                })
            },
        ));
    }
    let start = Instant::now();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let mut cpu_ns = 0u64;
    for h in handles {
        cpu_ns += h
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
    }
    let n = count.load(Ordering::Relaxed) as f64;
    Ok(Rate {
        per_sec: n / start.elapsed().as_secs_f64(),
        cpu_us: cpu_ns as f64 / 1000.0 / n.max(1.0),
    })
}

/// Through keygate's executor from `concurrency` async callers.
async fn pool(
    exec: &HardwareExecutor,
    op: Op,
    key: &KeyLocator,
    concurrency: usize,
    dur: Duration,
) -> anyhow::Result<Rate> {
    let count = Arc::new(AtomicU64::new(0));
    let cpu0 = process_cpu_ns();
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (exec, key, count) = (exec.clone(), key.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let k = key.clone();
                exec.run("bench", move |b: &dyn Backend| {
                    let msg = b"keygate benchmark message: header.payload";
                    match op {
                        Op::SignEs256 => b.sign(&k, Algorithm::ES256, msg).map(|_| ()),
                        Op::Hmac => b.mac(&k, msg).map(|_| ()),
                        Op::Noop => Ok(()),
                    }
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
    let n = count.load(Ordering::Relaxed) as f64;
    let cpu_ns = match (cpu0, process_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    Ok(Rate {
        per_sec: n / start.elapsed().as_secs_f64(),
        cpu_us: cpu_ns as f64 / 1000.0 / n.max(1.0),
    })
}
