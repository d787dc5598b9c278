//! Operations for regulated sites: one CLI whose every command takes the arguments that
//! started a server, `config check`, backup and restore while the server runs, and
//! upgrades from a store the previous release wrote (`docs/deployment.md`,
//! `docs/backup.md`, `docs/upgrading.md`).

use crate::common::server::{keygate_bin, Options, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Runs `keygate <args>` with the environment the test servers get.
fn keygate(args: &[&str]) -> Output {
    keygate_with(args, &[])
}

/// [`keygate`] with `env` added. On the PostgreSQL pass, a command given the
/// `--data-dir` of a server that ran there gets that server's store (its database,
/// tests/common/server.rs), as an operator's configuration gives `serve` and the CLI the
/// same `store.url`.
fn keygate_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(keygate_bin());
    cmd.args(args)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "warn");
    if let Some(url) = pg_store_of(args) {
        cmd.env("KEYGATE__STORE__URL", url);
    }
    cmd.envs(env.iter().copied()).output().expect("run keygate")
}

/// The PostgreSQL store of the server whose `--data-dir` `args` names, if it had one.
fn pg_store_of(args: &[&str]) -> Option<String> {
    let dir = args.windows(2).find(|w| w[0] == "--data-dir")?[1];
    let url = std::fs::read_to_string(Path::new(dir).join("pg-store-url")).ok()?;
    Some(url.trim().to_string())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn d(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn config_check_names_every_unknown_key_and_bad_value_by_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("keygate.toml");
    std::fs::write(
        &f,
        "[server]\nlisten = \"127.0.0.1:8443\"\nlisn = \"x\"\n[tokens]\naccess_ttl = \"soon\"\n\
         [backends.hsm]\ntype = \"pkcs11\"\ntoken_label = \"k\"\npin_file = \"p\"\ntoken_lable = \"k\"\n",
    )
    .unwrap();
    let out = keygate(&["--config", d(&f), "config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for expected in [
        "server.lisn: unknown key",
        "backends.hsm.token_lable: unknown key",
        "tokens.access_ttl: ",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    // `serve` refuses the same file the same way, before touching anything.
    let out = keygate(&["--config", d(&f), "serve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("server.lisn: unknown key"));
}

#[tokio::test]
async fn config_check_probes_the_token_and_every_key_and_names_what_is_missing() {
    let dir = Server::start().stop();
    let out = keygate(&["--data-dir", d(dir.path()), "config", "check"]);
    let stdout = ok(&out, "config check");
    assert!(
        stdout.contains(
            "backend hsm (pkcs11, token \"keygate\"): module loaded, token found, logged in"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("live key versions present"), "{stdout}");
    assert!(stdout.contains("schema version"), "{stdout}");
    assert!(stdout.contains("config check: OK"), "{stdout}");
    // Secrets are not in the effective settings: the PIN is read from its file.
    let pin = std::fs::read_to_string(dir.path().join("pin")).unwrap();
    assert!(!stdout.contains(pin.trim()), "the PIN is never printed");

    // A wrong PIN is named by backend, and the command fails.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("pin"), "not-the-pin\n").unwrap();
    let f = other.path().join("keygate.toml");
    std::fs::write(
        &f,
        format!(
            "[backends.hsm]\ntype = \"pkcs11\"\ntoken_label = \"keygate\"\npin_file = \"{}\"\n",
            d(&other.path().join("pin"))
        ),
    )
    .unwrap();
    let out = keygate(&[
        "--data-dir",
        d(dir.path()),
        "--config",
        d(&f),
        "config",
        "check",
    ]);
    assert!(!out.status.success());
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("PROBLEM  backends.hsm"), "{all}");
}

/// The subcommands `keygate --help` lists (the hidden `manpage` too).
fn subcommands() -> Vec<String> {
    let help = text(&keygate(&["--help"]).stdout);
    let mut names: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect();
    names.push("manpage".into());
    names
}

#[tokio::test]
async fn every_subcommand_works_with_the_arguments_that_started_a_dev_server() {
    // The dev server of docs/tls.md: `serve --config keygate.toml --dev`.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("keygate.toml");
    std::fs::write(&cfg, "[log]\nlevel = \"warn\"\n").unwrap();
    let s = Server::start_with(Options {
        config: Some(cfg.clone()),
        https: true,
        ..Options::default()
    });
    let dir = s.stop();
    let data = d(dir.path()).to_string();
    // On the PostgreSQL pass every command below runs on the server's database
    // ([`keygate_with`]).
    let pg_url = pg_store_of(&["--data-dir", &data]);
    let same = |rest: &[&str]| -> Output {
        let mut args = vec!["--config", d(&cfg), "--data-dir", &data, "--dev"];
        args.extend_from_slice(rest);
        keygate(&args)
    };
    let backup = cfg_dir.path().join("b.tar");
    let cert = dir.path().join("tls").join("cert.pem");
    let mut ran: Vec<&str> = Vec::new();

    let secret = ok(
        &same(&["admin-key-create", "--name", "ops"]),
        "admin-key-create",
    );
    ran.push("admin-key-create");
    let listing = ok(&same(&["admin-keys-list"]), "admin-keys-list");
    ran.push("admin-keys-list");
    assert!(listing.contains(&secret.trim()[secret.trim().len() - 4..]));
    let id = listing
        .lines()
        .find(|l| l.ends_with("ops"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    ok(&same(&["admin-key-delete", &id]), "admin-key-delete");
    ran.push("admin-key-delete");
    ok(&same(&["keys", "create", "cli-ring"]), "keys create");
    assert!(ok(&same(&["keys", "list"]), "keys list").contains("cli-ring"));
    ran.push("keys");
    ok(&same(&["audit", "verify"]), "audit verify");
    ok(&same(&["audit", "export"]), "audit export");
    ran.push("audit");
    ok(
        &same(&[
            "tls",
            "init",
            "--subject",
            "CN=localhost",
            "--san",
            "DNS:localhost,IP:127.0.0.1",
        ]),
        "tls init",
    );
    ok(
        &same(&["tls", "install-cert", d(&cert)]),
        "tls install-cert",
    );
    ran.push("tls");
    assert!(ok(&same(&["config", "check"]), "config check").contains("config check: OK"));
    ran.push("config");
    if pg_url.is_none() {
        ok(&same(&["backup", "--out", d(&backup)]), "backup");
        ok(
            &same(&["restore", "--from", d(&backup), "--force"]),
            "restore",
        );
    } else {
        // Backup and restore copy the SQLite file: on PostgreSQL they refuse, and say what
        // to use instead (docs/backup.md#postgresql).
        for (cmd, tool) in [
            (vec!["backup", "--out", d(&backup)], "pg_dump"),
            (
                vec!["restore", "--from", d(&backup), "--force"],
                "pg_restore",
            ),
        ] {
            let out = same(&cmd);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
            assert!(
                err.contains(tool) && err.contains("docs/backup.md"),
                "{cmd:?}: {err}"
            );
            assert!(!backup.exists(), "nothing written");
        }
    }
    ran.push("backup");
    ran.push("restore");
    assert!(ok(&same(&["openapi"]), "openapi").contains("\"openapi\""));
    ran.push("openapi");
    assert!(ok(&same(&["manpage"]), "manpage").contains(".TH keygate"));
    ran.push("manpage");
    let out = same(&["client", "assertion", "--key-file", "/nonexistent"]);
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent"),
        "{}",
        text(&out.stderr)
    );
    ran.push("client");
    ok(
        &same(&[
            "bench",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--concurrency",
            "1",
        ]),
        "bench",
    );
    ran.push("bench");
    // And `serve` with the same arguments serves what the commands made (the CLI and
    // a server do not share a token at once: docs/cli.md).
    let admin = ok(
        &same(&["admin-key-create", "--name", "after"]),
        "admin-key-create",
    )
    .trim()
    .to_string();
    let s = Server::start_in(
        dir,
        Options {
            config: Some(cfg.clone()),
            https: true,
            ..Options::default()
        },
    );
    ran.push("serve");
    let keys: Value = s.get_json("/api/v1/keys", &admin).await;
    assert!(keys.to_string().contains("cli-ring"), "{keys}");
    for c in subcommands() {
        assert!(
            ran.contains(&c.as_str()),
            "subcommand {c} is not exercised here"
        );
    }
}

#[tokio::test]
async fn an_error_names_only_flags_the_command_accepts() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("keygate.toml");
    std::fs::write(
        &cfg,
        format!("[store]\nurl = \"sqlite://{}/k.db\"\n", d(cfg_dir.path())),
    )
    .unwrap();
    // Without --dev, a config with no backend: the advice names --dev, which every
    // command accepts.
    let out = keygate(&["--config", d(&cfg), "admin-keys-list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("use --dev"), "{err}");
    let out = keygate(&[
        "--config",
        d(&cfg),
        "admin-keys-list",
        "--dev",
        "--data-dir",
        d(cfg_dir.path()),
    ]);
    ok(&out, "admin-keys-list --dev");
}

/// Every file of the dev layout except its store.
fn wipe_store(dir: &Path) {
    for f in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

/// The issuer must not change with the port a restarted test server gets.
fn fixed_issuer() -> Options {
    Options {
        env: vec![(
            "KEYGATE__TOKENS__ISSUER".into(),
            "https://keygate.test".into(),
        )],
        ..Options::default()
    }
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_tokens_rings_key_files_and_the_audit_log() {
    let s = Server::start_with(fixed_issuer());
    s.create_ring("backup-ring", "ES256").await;
    let (_, admin) = s.create_key("admin").await;
    let r = s
        .post_form(
            "/api/v1/auth/token",
            Some(("x-api-key", &s.admin_key)),
            &[
                ("grant_type", "custom_token"),
                ("subject", "svc-1"),
                ("expires_in", "3600"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .post_json(
            "/api/v1/key-files",
            &s.admin_key,
            json!({"description": "backup test", "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let key_file = r.json::<Value>().await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let key_file_path = files.path().join("file.json");
    std::fs::write(&key_file_path, key_file.to_string()).unwrap();
    let backup = files.path().join("keygate-backup.tar");

    // Load: signatures and audited writes until the backup is done.
    let s = Arc::new(s);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let (s, stop, done) = (s.clone(), stop.clone(), done.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2000 {
                let r = if i % 2 == 0 {
                    s.post_json(
                        "/api/v1/keys/backup-ring/sign",
                        &s.admin_key,
                        json!({"claims": {"sub": "load"}, "audience": "https://gateway.example"}),
                    )
                    .await
                } else {
                    s.post_json(
                        "/api/v1/api-keys",
                        &s.admin_key,
                        json!({"name": format!("load {n}"), "role": "read-only"}),
                    )
                    .await
                };
                assert!(
                    r.status().is_success() || r.status() == 409,
                    "{}",
                    r.status()
                );
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    while done.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let data = s.data_dir();
    let before = done.load(Ordering::Relaxed);
    let out = {
        let (data, backup) = (data.clone(), backup.clone());
        tokio::task::spawn_blocking(move || {
            keygate(&["--data-dir", d(&data), "backup", "--out", d(&backup)])
        })
        .await
        .unwrap()
    };
    let during = done.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let summary = ok(&out, "backup");
    assert!(summary.contains("sha256"), "{summary}");
    println!("requests served while the backup ran: {during}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "a backup holds password hashes and MACs"
    );

    let s = Arc::into_inner(s).unwrap();
    let dir = s.stop();
    wipe_store(dir.path());
    let restored = keygate(&["--data-dir", d(dir.path()), "restore", "--from", d(&backup)]);
    ok(&restored, "restore");
    // A live store is not overwritten without --force.
    let again = keygate(&["--data-dir", d(dir.path()), "restore", "--from", d(&backup)]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    ok(
        &keygate(&["--data-dir", d(dir.path()), "audit", "verify"]),
        "audit verify",
    );

    let s = Server::start_in(dir, fixed_issuer());
    assert!(
        s.admin_key.is_empty(),
        "no second bootstrap key after a restore"
    );
    let r = s
        .post_form(
            "/api/v1/auth/introspect",
            Some(("x-api-key", &admin)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["active"],
        true,
        "a token from before the backup verifies"
    );
    assert_eq!(s.get_bearer("/api/v1/keys", &token).await.status(), 200);
    let r = s
        .post_json(
            "/api/v1/keys/backup-ring/sign",
            &admin,
            json!({"claims": {"sub": "after"}, "audience": "https://gateway.example"}),
        )
        .await;
    assert_eq!(r.status(), 200, "the restored ring signs");
    let assertion = ok(
        &keygate(&["client", "assertion", "--key-file", d(&key_file_path)]),
        "client assertion",
    );
    assert_eq!(
        s.get_bearer("/api/v1/key-files", assertion.trim())
            .await
            .status(),
        200,
        "the key file still authenticates"
    );
    drop(s);

    // Into another installation whose token lacks the keys: refused, naming them, and its
    // own store is left as it was.
    let other = Server::start().stop();
    let out = keygate(&[
        "--data-dir",
        d(other.path()),
        "restore",
        "--from",
        d(&backup),
        "--force",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("backup-ring v1"), "{err}");
    ok(
        &keygate(&["--data-dir", d(other.path()), "audit", "verify"]),
        "the other store is intact",
    );

    // A damaged backup is refused by its checksum.
    let mut bytes = std::fs::read(&backup).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let damaged = files.path().join("damaged.tar");
    std::fs::write(&damaged, bytes).unwrap();
    let out = keygate(&[
        "--data-dir",
        d(other.path()),
        "restore",
        "--from",
        d(&damaged),
        "--force",
    ]);
    assert!(!out.status.success());
}

/// `tests/fixtures/store-0.1.0`: a dev layout (store, SoftHSM token, PINs) made by keygate
/// 0.1.0 with its migrations 0001..0007, holding a ring, an API key and audit history.
fn fixture_copy() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-0.1.0");
    let dst = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst.path())
        .status()
        .unwrap();
    assert!(status.success());
    dst
}

#[tokio::test]
async fn a_store_from_the_previous_release_is_migrated_and_served() {
    let dir = fixture_copy();
    let admin = std::fs::read_to_string(dir.path().join("admin-key"))
        .unwrap()
        .trim()
        .to_string();
    let s = Server::start_in(dir, Options::default());
    assert!(s.admin_key.is_empty());
    let keys: Value = s.get_json("/api/v1/keys", &admin).await;
    assert!(keys.to_string().contains("fixture-ring"), "{keys}");
    let r = s
        .post_json(
            "/api/v1/keys/fixture-ring/sign",
            &admin,
            json!({"claims": {"sub": "x"}, "audience": "https://gateway.example"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let dir = s.stop();
    ok(
        &keygate(&["--data-dir", d(dir.path()), "audit", "verify"]),
        "audit verify",
    );
    let check = ok(
        &keygate(&["--data-dir", d(dir.path()), "config", "check"]),
        "config check",
    );
    assert!(
        check.contains(&format!(
            "last written by keygate {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{check}"
    );
}

#[tokio::test]
async fn a_store_with_a_newer_schema_is_refused_with_both_versions_named() {
    let dir = Server::start().stop();
    let db = dir.path().join("keygate.db");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (9999, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 0); \
             UPDATE meta SET value = '99.0.0' WHERE key = 'keygate_version';",
        )
        .status()
        .unwrap();
    assert!(status.success());
    for args in [
        vec!["serve", "--insecure-http", "--listen", "127.0.0.1:0"],
        vec!["config", "check"],
    ] {
        let mut all = vec!["--data-dir", d(dir.path())];
        all.extend(args);
        let out = keygate(&all);
        assert!(!out.status.success());
        let msg = text(&out.stderr) + &text(&out.stdout);
        assert!(msg.contains("schema version 9999"), "{msg}");
        assert!(msg.contains("keygate 99.0.0"), "{msg}");
    }
}

#[tokio::test]
async fn serve_tells_systemd_it_is_ready_once_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    // A guard against a hung test, not a performance assertion.
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let s = Server::start_with(Options {
        env: vec![("NOTIFY_SOCKET".into(), d(&path).to_string())],
        ..Options::default()
    });
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification from keygate");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert_eq!(s.get("/healthz", "").await.status(), 200);
}

/// The repository stands alone: comments and strings in `src/` cite `docs/` pages, never
/// a contract file that lives outside the repository.
#[test]
fn source_cites_docs_pages_never_files_outside_the_repository() {
    fn walk(dir: &std::path::Path, hits: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, hits);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                for (n, line) in text.lines().enumerate() {
                    if line.contains("API.md") || line.contains("ARCHITECTURE.md") {
                        hits.push(format!("{}:{}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    let mut hits = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut hits,
    );
    assert!(hits.is_empty(), "{hits:#?}");
}

/// `keygate restore --force` over a store a server still runs on is refused; once the
/// server stopped, what the replaced store revoked after the backup stays revoked (a
/// revoked token, a deleted API key, a changed password), and the restored chain records
/// the restore (`docs/operations.md`, "Restoring over a newer store").
#[tokio::test]
async fn a_restore_is_refused_under_a_running_server_and_keeps_later_revocations() {
    use crate::common::server::PASSWORD;
    let s = Server::start_with(fixed_issuer());
    let (gone_id, gone) = s.create_key("read-only").await;
    let (_, kept) = s.create_key("read-only").await;
    let r = s
        .post_json(
            "/api/v1/users",
            &s.admin_key,
            json!({"username": "alice", "password": PASSWORD, "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = s
        .post_form(
            "/api/v1/auth/token",
            Some(("x-api-key", &s.admin_key)),
            &[
                ("grant_type", "custom_token"),
                ("subject", "svc-1"),
                ("expires_in", "3600"),
            ],
        )
        .await;
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let files = tempfile::tempdir().unwrap();
    let backup = files.path().join("b.tar");
    let data = s.data_dir();
    ok(
        &keygate(&["--data-dir", d(&data), "backup", "--out", d(&backup)]),
        "backup",
    );

    // After the backup: a token revoked, a key deleted, a password changed.
    let r = s
        .post_form("/api/v1/auth/revoke", None, &[("token", &token)])
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .delete(&format!("/api/v1/api-keys/{gone_id}"), &s.admin_key)
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let r = s
        .patch_json(
            "/api/v1/users/alice",
            &s.admin_key,
            json!({"password": "a brand new passphrase"}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());

    // Not under a running server.
    let out = keygate(&[
        "--data-dir",
        d(&data),
        "restore",
        "--from",
        d(&backup),
        "--force",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("server is running"), "{err}");
    assert_eq!(
        s.get("/api/v1/keys", &kept).await.status(),
        200,
        "untouched"
    );

    let admin = s.admin_key.clone();
    let dir = s.stop();
    let out = ok(
        &keygate(&[
            "--data-dir",
            d(dir.path()),
            "restore",
            "--from",
            d(&backup),
            "--force",
        ]),
        "restore",
    );
    assert!(out.contains("1 denylisted tokens"), "{out}");
    assert!(out.contains("1 API keys dropped"), "{out}");
    assert!(out.contains("1 passwords"), "{out}");
    ok(
        &keygate(&["--data-dir", d(dir.path()), "audit", "verify"]),
        "audit verify",
    );

    let s = Server::start_in(dir, fixed_issuer());
    let r = s
        .post_form(
            "/api/v1/auth/introspect",
            Some(("x-api-key", &admin)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["active"],
        false,
        "a token revoked after the backup stays revoked"
    );
    assert_eq!(
        s.get("/api/v1/keys", &gone).await.status(),
        401,
        "a key deleted after the backup stays deleted"
    );
    assert_eq!(s.get("/api/v1/keys", &kept).await.status(), 200);
    let r = s
        .post_form(
            "/api/v1/auth/token",
            None,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 400, "the password replaced after the backup");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    s.login("alice", "a brand new passphrase").await;
    let log: Vec<Value> = s.get_json("/api/v1/audit?limit=1000", &admin).await;
    let e = log
        .iter()
        .find(|e| e["action"] == "store.restore")
        .expect("a store.restore entry in the restored chain");
    assert_eq!(e["actor"], "root", "{e}");
    assert!(
        e["outcome"]
            .as_str()
            .unwrap()
            .contains("1 API keys dropped"),
        "{e}"
    );
}

/// `keygate bench --load` (docs/performance.md "Latency at a fixed offered load") sends
/// exactly the offered requests to a running server and counts every answer that is not
/// 2xx as an error, exiting non-zero: a latency figure is never quoted over failures.
#[tokio::test]
async fn open_loop_load_counts_every_request_and_fails_on_refusals() {
    let s = Server::start();
    let data = s.data_dir();
    let url = s.url("/api/v1/keys");
    let load = |key: &str| {
        keygate(&[
            "--data-dir",
            d(&data),
            "bench",
            "--load",
            &url,
            "--rate",
            "40",
            "--seconds",
            "1",
            "--concurrency",
            "2",
            "--header",
            &format!("x-api-key: {key}"),
        ])
    };
    let good = ok(&load(&s.admin_key), "bench --load");
    assert!(good.contains("40 requests, 0 errors"), "{good}");
    assert!(good.contains(" p99 ") && good.contains(" ms"), "{good}");
    // A wrong secret for a well-formed key: every answer is 401.
    let bad = load("kg_wrong");
    assert!(!bad.status.success(), "{}", text(&bad.stdout));
    assert!(
        text(&bad.stdout).contains("40 errors"),
        "{}",
        text(&bad.stdout)
    );
}
