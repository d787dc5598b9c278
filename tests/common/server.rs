//! Spawns the real `keygate` binary: `serve --dev` on 127.0.0.1:0 with a fresh data
//! directory, so each server has its own SQLite file and its own SoftHSM token. Servers
//! speak plain HTTP (`--insecure-http`) unless `Options::https` asks for the dev HTTPS
//! identity.
//!
//! With `KEYGATE_TEST_PG_URL` set (`ci/pg.sh` sets it), each data directory gets its own
//! fresh PostgreSQL database instead of the SQLite file ([`pg_store_url`]).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The password [`Server::principal`] gives the users it creates.
pub const PASSWORD: &str = "correct horse battery";

pub fn keygate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keygate")
}

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    /// The ops listener (`server.ops_listen`, plain HTTP): `/metrics` lives only there.
    pub ops: String,
    /// The bootstrap super-admin secret printed at first start.
    pub admin_key: String,
    pub dir: tempfile::TempDir,
    /// Everything the server wrote to stderr (its log), for secret-leak checks.
    pub log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
    /// Keys of the people [`Server::principal`] enrolled, with their roles: they approve
    /// the enrolment of later ones once an approver set holds its quorum.
    enrolled: Mutex<Vec<(String, String)>>,
}

pub struct Options {
    pub env: Vec<(String, String)>,
    pub log_level: String,
    /// Serve HTTPS with the dev identity instead of `--insecure-http`; `http` then trusts
    /// the dev certificate.
    pub https: bool,
    /// Extra arguments after `serve` (e.g. `--config F`, which goes before it).
    pub config: Option<PathBuf>,
    /// `serve --dev` (its own SQLite file and SoftHSM token under the data directory).
    /// Off for replicas sharing a store and a token (`common::cluster`): the
    /// configuration file says where both are.
    pub dev: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Vec::new(),
            log_level: std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            https: false,
            config: None,
            dev: true,
        }
    }
}

/// Installs the process-wide rustls provider the test clients (reqwest) use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, opts)
    }

    /// Starts (or restarts) a server on an existing data directory.
    pub fn start_in(dir: tempfile::TempDir, opts: Options) -> Server {
        install_crypto_provider();
        let (child, (base, ops), admin_key, log) = spawn(dir.path(), &opts);
        let http = if opts.https {
            let pem = std::fs::read(dir.path().join("tls").join("cert.pem")).expect("dev cert");
            reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("cert"))
                .build()
                .expect("https client")
        } else {
            reqwest::Client::new()
        };
        Server {
            child,
            base,
            ops,
            admin_key: admin_key.unwrap_or_default(),
            dir,
            log,
            http,
            enrolled: Mutex::new(Vec::new()),
        }
    }

    /// Starts a replica: `serve --dev` on the data directory `data_dir`, which other
    /// replicas share (one SoftHSM token), with the store at `store_url` (one PostgreSQL
    /// database). The caller keeps `data_dir` alive.
    pub fn start_replica(data_dir: &Path, store_url: &str, mut opts: Options) -> Server {
        install_crypto_provider();
        opts.env
            .push(("KEYGATE__STORE__URL".into(), store_url.to_string()));
        let (child, (base, ops), admin_key, log) = spawn(data_dir, &opts);
        Server {
            child,
            base,
            ops,
            admin_key: admin_key.unwrap_or_default(),
            dir: tempfile::tempdir().expect("tempdir"),
            log,
            http: reqwest::Client::new(),
            enrolled: Mutex::new(Vec::new()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The Prometheus text of `/metrics`, from the ops listener.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.ops))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Stops the server and hands back its data directory (for CLI tests and restarts).
    pub fn stop(mut self) -> tempfile::TempDir {
        terminate(&mut self.child);
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Kills the server with SIGKILL (no shutdown of any kind, as a power cut would) and
    /// hands back its data directory.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// The log once it holds `needle` (the server writes it from another thread), waiting
    /// at most 5 s; the log as it is then otherwise, for the caller's assertion message.
    pub async fn log_containing(&self, needle: &str) -> String {
        for _ in 0..50 {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.log_text()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, key, body).await
    }

    pub async fn patch_json(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.send_json(reqwest::Method::PATCH, path, key, body)
            .await
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str, key: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .expect("request")
    }

    /// POSTs a form body, with an optional `Authorization`-style header `(name, value)`.
    pub async fn post_form(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        pairs: &[(&str, &str)],
    ) -> reqwest::Response {
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        req.send().await.expect("request")
    }

    /// GET with `Authorization: Bearer <token>`.
    pub async fn get_bearer(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Creates key ring `ring` with `algorithm` as the bootstrap admin; returns its first
    /// version.
    pub async fn create_ring(&self, ring: &str, algorithm: &str) -> serde_json::Value {
        let r = self
            .post_json(
                "/api/v1/keys",
                &self.admin_key,
                serde_json::json!({"ring": ring, "algorithm": algorithm}),
            )
            .await;
        assert_eq!(r.status(), 201, "create ring {ring}");
        r.json().await.expect("json")
    }

    /// GETs `path` with `key` and parses the JSON body.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str, key: &str) -> T {
        self.get(path, key).await.json().await.expect("json body")
    }

    /// Creates an API key as the bootstrap admin and returns (id, secret).
    pub async fn create_key(&self, role: &str) -> (String, String) {
        let r = self
            .post_json(
                "/api/v1/api-keys",
                &self.admin_key,
                serde_json::json!({"name": format!("{role} key"), "role": role}),
            )
            .await;
        assert_eq!(r.status(), 201, "create {role} key");
        let v: serde_json::Value = r.json().await.expect("json");
        (
            v["id"].as_str().expect("id").to_string(),
            v["api_key"].as_str().expect("api_key").to_string(),
        )
    }

    /// Creates user `name` with `role` and a password, as the bootstrap admin; the user
    /// then logs in and creates their own API key, so the key proves them (it can vote on
    /// approvals). Returns the key's secret. When `role` approves operations and its set
    /// already holds its quorum, the user is created read-only and the role is asked for
    /// with `PATCH`, approved by the people enrolled before (docs/lifecycle.md).
    pub async fn principal(&self, name: &str, role: &str) -> String {
        let r = self
            .post_json(
                "/api/v1/users",
                &self.admin_key,
                serde_json::json!({"username": name, "password": PASSWORD, "role": role}),
            )
            .await;
        if r.status() == 403 {
            let r = self
                .post_json(
                    "/api/v1/users",
                    &self.admin_key,
                    serde_json::json!({"username": name, "password": PASSWORD, "role": "read-only"}),
                )
                .await;
            assert_eq!(r.status(), 201, "create user {name}");
            let r = self
                .patch_json(
                    &format!("/api/v1/users/{name}"),
                    &self.admin_key,
                    serde_json::json!({"role": role}),
                )
                .await;
            assert_eq!(r.status(), 202, "role {role} for {name} needs approvals");
            let a: serde_json::Value = r.json().await.expect("json");
            let id = a["approval_id"].as_str().expect("approval_id").to_string();
            let voters: Vec<String> = self
                .enrolled
                .lock()
                .map(|e| {
                    e.iter()
                        .filter(|(r, _)| r == role)
                        .map(|(_, k)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            let mut state = String::new();
            for key in voters {
                let r = self
                    .post_json(
                        &format!("/api/v1/approvals/{id}/approve"),
                        &key,
                        serde_json::json!({}),
                    )
                    .await;
                let a: serde_json::Value = r.json().await.expect("json");
                state = a["state"].as_str().unwrap_or_default().to_string();
                if state == "executed" {
                    break;
                }
            }
            assert_eq!(state, "executed", "enrolling {name} as {role}");
        } else {
            assert_eq!(r.status(), 201, "create user {name}");
        }
        let key = match self.try_own_key(name, role).await {
            Some(k) => k,
            // A role without api-keys:write cannot make its own key: the admin makes one
            // for the user (it acts as them, but never votes).
            None => {
                let r = self
                    .post_json(
                        "/api/v1/api-keys",
                        &self.admin_key,
                        serde_json::json!({"name": format!("{name}'s key"), "role": role, "owner": name}),
                    )
                    .await;
                assert_eq!(r.status(), 201, "create key for {name}");
                let v: serde_json::Value = r.json().await.expect("json");
                v["api_key"].as_str().expect("api_key").to_string()
            }
        };
        if let Ok(mut e) = self.enrolled.lock() {
            e.push((role.to_string(), key.clone()));
        }
        key
    }

    /// Logs `name` in with the password grant; returns the access token.
    pub async fn login(&self, name: &str, password: &str) -> String {
        let r = self
            .post_form(
                "/api/v1/auth/token",
                None,
                &[
                    ("grant_type", "password"),
                    ("username", name),
                    ("password", password),
                ],
            )
            .await;
        assert_eq!(r.status(), 200, "login {name}");
        let v: serde_json::Value = r.json().await.expect("json");
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// `name` (password [`PASSWORD`]) logs in and creates an API key of their own with
    /// `role`; returns its secret.
    pub async fn own_key(&self, name: &str, role: &str) -> String {
        self.try_own_key(name, role)
            .await
            .expect("the role may create API keys")
    }

    /// [`Self::own_key`], or `None` when the role may not create API keys.
    pub async fn try_own_key(&self, name: &str, role: &str) -> Option<String> {
        let token = self.login(name, PASSWORD).await;
        let r = self
            .send_bearer(
                reqwest::Method::POST,
                "/api/v1/api-keys",
                &token,
                serde_json::json!({"name": format!("{name}'s key"), "role": role}),
            )
            .await;
        if r.status() == 403 {
            return None;
        }
        assert_eq!(r.status(), 201, "{name} creates their own key");
        let v: serde_json::Value = r.json().await.expect("json");
        Some(v["api_key"].as_str().expect("api_key").to_string())
    }

    /// Sends a JSON body with `Authorization: Bearer <token>`.
    pub async fn send_bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Number of API keys, as the admin sees them.
    pub async fn key_count(&self) -> usize {
        let r = self.get("/api/v1/api-keys", &self.admin_key).await;
        assert_eq!(r.status(), 200);
        r.json::<Vec<serde_json::Value>>()
            .await
            .expect("json")
            .len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SIGTERM first so the server shuts down cleanly; then make sure it is gone.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

type Spawned = (Child, (String, String), Option<String>, Arc<Mutex<String>>);

fn spawn(dir: &Path, opts: &Options) -> Spawned {
    let mut cmd = Command::new(keygate_bin());
    cmd.arg("--data-dir").arg(dir);
    if let Some(c) = &opts.config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("serve");
    if opts.dev {
        cmd.arg("--dev");
    }
    cmd.args(["--listen", "127.0.0.1:0"]);
    if !opts.https {
        cmd.arg("--insecure-http");
    }
    cmd.env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", &opts.log_level)
        // Cheap argon2 parameters keep password tests fast; the hasher's own tests use
        // the production defaults.
        .env("KEYGATE__USERS__ARGON2_MEMORY_KIB", "64")
        .env("KEYGATE__USERS__ARGON2_ITERATIONS", "1")
        // `/metrics` is served only here.
        .env("KEYGATE__SERVER__OPS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !opts.env.iter().any(|(k, _)| k == "KEYGATE__STORE__URL") {
        if let Some(url) = pg_store_url(dir) {
            cmd.env("KEYGATE__STORE__URL", url);
        }
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn keygate");
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr");
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut l) = log2.lock() {
                l.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut admin = None;
        let mut ops = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("bootstrap super-admin API key") {
                admin = line.split_whitespace().last().map(str::to_string);
            }
            if let Some(addr) = line.strip_prefix("keygate ops listening on ") {
                ops = addr.to_string();
            }
            if let Some(addr) = line.strip_prefix("keygate listening on ") {
                let _ = tx.send(Some(((addr.to_string(), ops.clone()), admin.clone())));
            }
        }
        let _ = tx.send(None);
    });
    // A guard against a hung start, not a performance assertion.
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Some((addr, admin))) => (child, addr, admin, log),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "keygate did not start; its log:\n{}",
                log.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
    }
}

/// The PostgreSQL cluster the tests run against (`ci/pg.sh`), if any.
pub fn pg_admin_url() -> Option<String> {
    std::env::var("KEYGATE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Creates a fresh, empty database `kg_<random>` on the test cluster; its URL.
pub fn fresh_pg_database(admin: &str) -> String {
    let name = format!("kg_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .args([admin, "-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "CREATE DATABASE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{name}")
}

/// With `KEYGATE_TEST_PG_URL` set, the store URL of the data directory `dir`: a fresh
/// database the first time, the same one when a server restarts on `dir` (remembered in
/// `dir/pg-store-url`). `None` runs on the dev layout's SQLite file.
pub fn pg_store_url(dir: &Path) -> Option<String> {
    let admin = pg_admin_url()?;
    let file = dir.join("pg-store-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url.trim().to_string());
    }
    let url = fresh_pg_database(&admin);
    std::fs::write(&file, &url).expect("remember the store url");
    Some(url)
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
