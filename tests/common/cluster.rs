//! Several `keygate serve` replicas on ONE store and ONE SoftHSM token directory
//! (docs/deployment.md, "Replicas and the change feed").
//!
//! The store is a SQLite file in WAL mode shared by the processes; with
//! `KEYGATE_TEST_PG_URL` set (the PostgreSQL pass of `ci/test.sh`), a fresh PostgreSQL
//! database; `KEYGATE_TEST_CLUSTER_STORE_URL` names any other empty store. The tests speak only HTTP and the CLI, so they run unchanged on
//! any store keygate supports. The token is made once by `softhsm-test/make-token.sh`;
//! every replica logs in to it. All replicas share `tokens.issuer`, as a deployment behind
//! one load balancer must.

use super::server::{Options, Server};
use std::path::{Path, PathBuf};

/// The issuer every replica puts in its tokens (no replica's own address).
pub const ISSUER: &str = "http://keygate.cluster.test";
const LABEL: &str = "keygate";
const USER_PIN: &str = "1234";
const SO_PIN: &str = "12345678";

/// The store, token and configuration replicas share; removed on drop.
pub struct Shared {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub softhsm_conf: String,
    pub store_url: String,
}

impl Shared {
    /// A fresh token and configuration; the store is created by the first replica.
    pub fn new(extra_config: &str) -> Shared {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/softhsm-test/make-token.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(dir.path().join("hsm"))
            .args([LABEL, USER_PIN, SO_PIN])
            .env_remove("SOFTHSM2_CONF")
            .output()
            .expect("run softhsm-test/make-token.sh");
        assert!(
            out.status.success(),
            "make-token.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let softhsm_conf = String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("export SOFTHSM2_CONF=")
            .expect("make-token.sh prints the SOFTHSM2_CONF to use")
            .to_string();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, USER_PIN).expect("pin file");
        // On the PostgreSQL pass (`ci/pg.sh`), every cluster gets a fresh, empty database.
        let store_url = std::env::var("KEYGATE_TEST_CLUSTER_STORE_URL")
            .ok()
            .or_else(|| super::server::pg_store_url(dir.path()))
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("keygate.db").display()));
        let config = dir.path().join("keygate.toml");
        let toml = format!(
            r#"
[store]
url = {store_url:?}

[tokens]
issuer = {ISSUER:?}

[backends.hsm]
type = "pkcs11"
profile = "softhsm2"
token_label = {LABEL:?}
pin_file = {pin:?}

[rings.api-key-mac]
backend = "hsm"
algorithm = "HS256"

[rings.jwt-default]
backend = "hsm"
algorithm = "ES256"

{extra_config}
"#,
            pin = pin.display().to_string(),
        );
        std::fs::write(&config, toml).expect("config");
        Shared {
            dir,
            config,
            softhsm_conf,
            store_url,
        }
    }

    /// Options for one replica on this store and token; `env` is added to the defaults.
    pub fn options(&self, env: &[(&str, &str)]) -> Options {
        let mut all: Vec<(String, String)> = vec![
            ("SOFTHSM2_CONF".into(), self.softhsm_conf.clone()),
            // Tests drive the replicas at full rate from one address; the limits are
            // specified in tests/abuse.rs.
            ("KEYGATE__LIMITS__ENABLED".into(), "false".into()),
            // Every replica on the one shared store (the PostgreSQL pass would otherwise
            // give each replica's data directory a database of its own).
            ("KEYGATE__STORE__URL".into(), self.store_url.clone()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Options {
            env: all,
            config: Some(self.config.clone()),
            dev: false,
            ..Options::default()
        }
    }

    /// Starts `n` replicas at the same moment (one thread each) and waits until all listen.
    pub fn start(&self, n: usize, env: &[(&str, &str)]) -> Vec<Server> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let opts = self.options(env);
                    s.spawn(move || Server::start_in(tempfile::tempdir().expect("tempdir"), opts))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("replica start"))
                .collect()
        })
    }

    /// One more replica (a restart after a crash, say).
    pub fn start_one(&self, env: &[(&str, &str)]) -> Server {
        Server::start_in(tempfile::tempdir().expect("tempdir"), self.options(env))
    }

    /// Runs the `keygate` CLI on the shared store and token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(super::server::keygate_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("KEYGATE_CONFIG")
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .env("RUST_LOG", "error")
            .output()
            .expect("run keygate")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The bootstrap super-admin key: exactly one replica of a fresh cluster prints it.
pub fn admin_key(replicas: &[Server]) -> String {
    let printed: Vec<&str> = replicas
        .iter()
        .map(|s| s.admin_key.as_str())
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(
        printed.len(),
        1,
        "exactly one replica issues the bootstrap key"
    );
    printed[0].to_string()
}

/// Polls `check` every 50 ms until it holds or `limit` passed; whether it held.
/// A bounded wait, not a timing assertion: callers state what `limit` stands for.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One wall clock for every replica, moved by the test: libfaketime preloaded into each
/// replica process reads its offset from one file, re-read at most once a second. Only the
/// wall clock moves; the monotonic clock (timers, the feed's staleness) runs on.
pub struct DrivenClock {
    file: PathBuf,
}

impl DrivenClock {
    /// A clock at the real time, whose file lives in `dir`.
    pub fn new(dir: &Path) -> DrivenClock {
        let clock = DrivenClock {
            file: dir.join("faketime"),
        };
        clock.set("+0");
        clock
    }

    /// Moves every replica's wall clock to real time plus `offset`, in libfaketime's
    /// syntax (`"+91d"`). Written by rename, so no replica reads a half-written file.
    pub fn set(&self, offset: &str) {
        let tmp = self.file.with_extension("new");
        std::fs::write(&tmp, format!("{offset}\n")).expect("write the faketime file");
        std::fs::rename(&tmp, &self.file).expect("replace the faketime file");
    }

    /// The environment that puts a replica on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), libfaketime().display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }
}

/// libfaketime's library for multi-threaded processes (Debian `libfaketime`, installed by
/// ci/setup.sh).
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file())
        .expect("libfaketime is not installed (run ci/setup.sh)")
}
