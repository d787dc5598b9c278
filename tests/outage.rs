//! Hardware loss under load: while custom-token issuance, the signing service and TLS
//! handshakes run at a steady rate, the SoftHSM token directory disappears for 5 seconds
//! and returns, a second process logs in and closes its sessions on the same token over
//! and over, and swtpm is killed and restarted. During an outage every request answers a
//! 503 with `Retry-After` or a correct 200 (its signature verifies): never a 500, never a
//! wrong answer, never a hang past the hardware call timeout. Afterwards the service
//! recovers without a restart (polled with a 5-second deadline: a liveness bound, not a
//! performance assertion), and `/metrics` counts the outage by kind.

use crate::common::server::{Options, Server};
use crate::common::swtpm::Swtpm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keygate::hardware::{Algorithm, PublicKey};
use keygate::keys::verify::verify_signature;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The executor's hardware call timeout (30 s) plus slack: a request still unanswered
/// after this has hung.
const HANG: Duration = Duration::from_secs(35);

/// What the load saw, by phase.
#[derive(Default, Debug)]
struct Seen {
    /// (phase, what, status) -> count
    counts: BTreeMap<(String, String, u16), usize>,
    problems: Vec<String>,
}

fn jwks_key(jwks: &Value, kid: &str) -> Option<PublicKey> {
    let jwk = jwks["keys"].as_array()?.iter().find(|k| k["kid"] == kid)?;
    let coord = |n: &str| URL_SAFE_NO_PAD.decode(jwk[n].as_str().unwrap_or("")).ok();
    let point = [vec![4u8], coord("x")?, coord("y")?].concat();
    PublicKey::ec(Algorithm::ES256, point).ok()
}

/// A 200 must carry a token whose signature verifies with the published key.
fn verify(jwks: &Value, token: &str) -> Result<(), String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("not a JWS: {token}"));
    }
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[0])
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let kid = header["kid"].as_str().unwrap_or("");
    let key = jwks_key(jwks, kid).ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let sig = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| e.to_string())?;
    if verify_signature(
        &key,
        Algorithm::ES256,
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &sig,
    ) {
        Ok(())
    } else {
        Err("a 200 whose signature does not verify".into())
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<Mutex<String>>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts one looping client per operation: custom-token issuance and signing on
    /// `ring` (each over a fresh TLS connection when `https`, so every request is also a
    /// handshake signed by the identity key).
    fn start(s: &Server, ring: &str, jwks: Value) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(Mutex::new("before".to_string()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut tasks = Vec::new();
        for what in ["issue", "sign"] {
            let (stop, phase, seen, jwks) =
                (stop.clone(), phase.clone(), seen.clone(), jwks.clone());
            let base = s.url("");
            let key = s.admin_key.clone();
            let ring = ring.to_string();
            let pem = std::fs::read(s.data_dir().join("tls").join("cert.pem")).ok();
            tasks.push(tokio::spawn(async move {
                let mut b = reqwest::Client::builder()
                    .timeout(HANG)
                    .pool_max_idle_per_host(0);
                if let Some(pem) = &pem {
                    b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
                }
                let http = b.build().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let req = match what {
                        "issue" => http
                            .post(format!("{base}/api/v1/auth/token"))
                            .header("x-api-key", &key)
                            .form(&[
                                ("grant_type", "custom_token"),
                                ("subject", "svc"),
                                ("expires_in", "60"),
                            ]),
                        _ => http
                            .post(format!("{base}/api/v1/keys/{ring}/sign"))
                            .header("x-api-key", &key)
                            .json(
                                &json!({"claims": {"sub": "d"}, "audience": "https://gw.example"}),
                            ),
                    };
                    let at = phase.lock().unwrap().clone();
                    let r = match req.send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let retry_after = resp.headers().contains_key("retry-after");
                            Ok((status, retry_after, futures_body(resp).await))
                        }
                        Err(e) => Err(e),
                    };
                    {
                        let mut seen = seen.lock().unwrap();
                        match r {
                            Err(e) if e.is_timeout() => seen
                                .problems
                                .push(format!("{at} {what}: hung past {HANG:?}")),
                            // A TLS handshake refused while the identity key is unreachable is
                            // a fast, clean failure (the client cannot receive a 503).
                            Err(e) => {
                                *seen
                                    .counts
                                    .entry((at.clone(), format!("{what} (connection)"), 0))
                                    .or_default() += 1;
                                if pem.is_none() {
                                    seen.problems.push(format!("{at} {what}: {e}"));
                                }
                            }
                            Ok((status, retry_after, body)) => {
                                *seen
                                    .counts
                                    .entry((at.clone(), what.to_string(), status))
                                    .or_default() += 1;
                                match status {
                                    200 => {
                                        let field = if what == "issue" {
                                            "access_token"
                                        } else {
                                            "token"
                                        };
                                        if let Err(e) =
                                            verify(&jwks, body[field].as_str().unwrap_or(""))
                                        {
                                            seen.problems.push(format!("{at} {what}: {e}"));
                                        }
                                    }
                                    503 if retry_after => {}
                                    503 => seen
                                        .problems
                                        .push(format!("{at} {what}: 503 without Retry-After")),
                                    other => {
                                        seen.problems.push(format!("{at} {what}: {other} {body}"))
                                    }
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        Load {
            stop,
            phase,
            seen,
            tasks,
        }
    }

    fn phase(&self, p: &str) {
        *self.phase.lock().unwrap() = p.to_string();
    }

    fn count(&self, phase: &str, status: u16) -> usize {
        self.seen
            .lock()
            .unwrap()
            .counts
            .iter()
            .filter(|((p, _, s), _)| p == phase && *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

async fn futures_body(r: reqwest::Response) -> Value {
    r.json::<Value>().await.unwrap_or(Value::Null)
}

/// Polls until every operation succeeds again; panics past `deadline` (liveness).
async fn recovers(s: &Server, http: &reqwest::Client, ring: &str, deadline: Duration) {
    let start = Instant::now();
    loop {
        let issue = http
            .post(s.url("/api/v1/auth/token"))
            .header("x-api-key", &s.admin_key)
            .form(&[
                ("grant_type", "custom_token"),
                ("subject", "svc"),
                ("expires_in", "60"),
            ])
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let sign = http
            .post(s.url(&format!("/api/v1/keys/{ring}/sign")))
            .header("x-api-key", &s.admin_key)
            .json(&json!({"claims": {"sub": "d"}, "audience": "https://gw.example"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if issue == 200 && sign == 200 {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "not recovered {deadline:?} after the hardware came back (issue {issue}, sign {sign})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `name{labels...} value` lines of /metrics whose name and labels contain all `parts`.
fn metric_sum(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn jwks(s: &Server) -> Value {
    s.http
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_vanishing_for_five_seconds_under_load_gives_fast_503s_and_recovers_without_a_restart(
) {
    let s = Server::start_with(Options {
        https: true,
        ..Options::default()
    });
    // The signing service signs with rings made for it, never the access-token ring.
    s.create_ring("gateway-hsm", "ES256").await;
    let keys = jwks(&s).await;
    let load = Load::start(&s, "gateway-hsm", keys);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A second process logs in and closes its sessions on the same token, again and again.
    // PKCS#11 sessions belong to the process that opened them: closing its own must not
    // end keygate's. SoftHSM keeps the token in files that the second process rewrites as
    // it logs in, and keygate can briefly fail to read them (docs/operations.md,
    // "Recovering from a vanished token"): such a request is a 503 with Retry-After (the
    // load checks that), never another error, and keygate recovers without a restart.
    load.phase("second-process");
    let pin = std::fs::read_to_string(s.data_dir().join("pin")).unwrap();
    let conf = s.data_dir().join("softhsm").join("softhsm2.conf");
    for _ in 0..5 {
        let out = std::process::Command::new("pkcs11-tool")
            .args([
                "--module",
                "/usr/lib/softhsm/libsofthsm2.so",
                "--token-label",
                "keygate",
            ])
            .args(["--login", "--pin", pin.trim(), "--list-objects"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    load.phase("after-second-process");
    recovers(&s, &s.http, "gateway-hsm", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The token directory disappears for 5 seconds.
    load.phase("outage");
    let tokens = s.data_dir().join("softhsm/tokens");
    let gone = s.data_dir().join("softhsm/tokens.gone");
    std::fs::rename(&tokens, &gone).unwrap();
    // Readiness reports it; the health watch opens the circuit.
    let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::rename(&gone, &tokens).unwrap();
    load.phase("after");
    let http = s.http.clone();
    recovers(&s, &http, "gateway-hsm", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outage_503 = load.count("outage", 503);
    let second_ok = load.count("second-process", 200) + load.count("after-second-process", 200);
    let seen = load.finish().await;
    assert!(seen.problems.is_empty(), "{:#?}", seen.problems);
    assert_eq!(
        seen.counts
            .iter()
            .filter(|((p, _, st), _)| p.contains("second-process") && ![200, 503].contains(st))
            .count(),
        0,
        "another process's logins and session closes cost at most a 503: {:?}",
        seen.counts
    );
    assert!(second_ok > 0, "{:?}", seen.counts);
    assert!(
        outage_503 > 0,
        "the outage was visible as 503s: {:?}",
        seen.counts
    );

    let metrics = s.metrics().await;
    assert_eq!(
        metric_sum(&metrics, &["keygate_http_requests_total", "status=\"500\""]),
        0.0,
        "no 500"
    );
    assert!(
        metric_sum(&metrics, &["keygate_http_requests_total", "status=\"503\""])
            >= outage_503 as f64
    );
    assert!(
        metric_sum(
            &metrics,
            &[
                "keygate_hardware_call_duration_seconds_count",
                "outcome=\"unavailable\"",
                "backend=\"hsm\""
            ]
        ) > 0.0,
        "hardware errors are counted by kind: {}",
        metrics
            .lines()
            .filter(|l| l.contains("outcome="))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("token outage: {:?}", seen.counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swtpm_killed_and_restarted_under_load_gives_fast_503s_and_recovers_without_a_restart() {
    let mut tpm = Swtpm::start();
    let s = Server::start_with(Options {
        env: vec![
            ("KEYGATE__BACKENDS__TPM__TYPE".into(), "tpm".into()),
            ("KEYGATE__BACKENDS__TPM__TCTI".into(), tpm.tcti()),
        ],
        ..Options::default()
    });
    let r = s
        .post_json(
            "/api/v1/keys",
            &s.admin_key,
            json!({"ring": "edge", "algorithm": "ES256", "backend": "tpm"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let keys = jwks(&s).await;
    let load = Load::start(&s, "edge", keys);
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.phase("outage");
    tpm.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    tpm.restart();
    load.phase("after");
    let http = s.http.clone();
    recovers(&s, &http, "edge", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outage_503 = load.count("outage", 503);
    let seen = load.finish().await;
    assert!(seen.problems.is_empty(), "{:#?}", seen.problems);
    assert!(
        outage_503 > 0,
        "signing on the TPM ring answered 503: {:?}",
        seen.counts
    );
    // Issuance on the HSM never noticed.
    assert_eq!(
        seen.counts
            .iter()
            .filter(|((_, w, st), _)| w == "issue" && *st != 200)
            .count(),
        0,
        "{:?}",
        seen.counts
    );
    let metrics = s.metrics().await;
    assert_eq!(
        metric_sum(&metrics, &["keygate_http_requests_total", "status=\"500\""]),
        0.0,
        "no 500"
    );
    assert!(
        metric_sum(
            &metrics,
            &[
                "keygate_hardware_call_duration_seconds_count",
                "outcome=\"unavailable\"",
                "backend=\"tpm\""
            ]
        ) > 0.0,
        "TPM errors are counted by kind"
    );
    eprintln!("swtpm outage: {:?}", seen.counts);
}

/// A size-limited tmpfs, unmounted on drop. Mounting needs root (CI runs as root); a
/// machine where it is refused fails the test with the reason, it never skips.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the disk-full test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    /// Fills what is left with a file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_store_disk_refuses_writes_with_503_store_full_keeps_reads_and_resumes_when_freed() {
    let disk = SmallDisk::mount("4m");
    let db = disk.dir.path().join("keygate.db");
    let s = Server::start_with(Options {
        env: vec![(
            "KEYGATE__STORE__URL".into(),
            format!("sqlite://{}", db.display()),
        )],
        ..Options::default()
    });
    let (id, secret) = s.create_key("read-only").await;
    let filler = disk.fill();

    // Writes: 503 with a problem type that says what is wrong, and nothing applied.
    let mut refused = 0;
    for i in 0..5 {
        let r = s
            .post_json(
                "/api/v1/api-keys",
                &s.admin_key,
                json!({"name": format!("full-{i}"), "role": "read-only"}),
            )
            .await;
        assert_eq!(r.status(), 503, "a write on a full disk");
        assert!(r.headers().contains_key("retry-after"));
        let p: Value = r.json().await.unwrap();
        // SQLite reports the full disk as SQLITE_FULL (store-full). Under a loaded machine
        // the same condition has also surfaced as a busy or timed-out store
        // (store-unavailable); both are clean, retryable refusals.
        assert!(
            p["type"] == "urn:keygate:problem:store-full"
                || p["type"] == "urn:keygate:problem:store-unavailable",
            "{p}"
        );
        refused += 1;
    }
    // Reads keep working, including authentication with an existing key.
    let r = s.get(&format!("/api/v1/api-keys/{id}"), &s.admin_key).await;
    assert_eq!(r.status(), 200);
    let r = s.get("/api/v1/keys", &secret).await;
    assert_eq!(r.status(), 200, "an existing API key authenticates");
    let listed: Vec<Value> = s.get_json("/api/v1/api-keys", &s.admin_key).await;
    assert!(
        !listed
            .iter()
            .any(|k| k["name"].as_str().unwrap_or("").starts_with("full-")),
        "no refused write was applied: {listed:?}"
    );

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(filler).unwrap();
    // A write that was already under way when the space came back may still see the full
    // disk and answer 503 (a clean refusal); within a few tries a write must succeed. On a
    // loaded machine the store has answered 503 for a little over 2 s after the space came
    // back, so the tries span 10 s (a liveness bound, not a timing claim).
    let mut status = 0;
    for attempt in 0..50 {
        let r = s
            .post_json(
                "/api/v1/api-keys",
                &s.admin_key,
                json!({"name": format!("after-{attempt}"), "role": "read-only"}),
            )
            .await;
        status = r.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 201, "writes resume once space is freed");

    // Nothing is corrupted: SQLite's own check and the audit chain.
    let metrics = s.metrics().await;
    assert!(
        metric_sum(&metrics, &["keygate_http_requests_total", "status=\"503\""]) >= refused as f64
    );
    assert_eq!(
        metric_sum(&metrics, &["keygate_http_requests_total", "status=\"500\""]),
        0.0
    );
    let dir = s.stop();
    let check = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA integrity_check;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
    let out = std::process::Command::new(crate::common::server::keygate_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["audit", "verify"])
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE__STORE__URL", format!("sqlite://{}", db.display()))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
