//! The CLI works on the store and the hardware directly, with no server running, and
//! start-up failures are clear errors with a non-zero exit, never panics.

use crate::common::server::{keygate_bin, Options, Server};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `keygate --data-dir dir <args>`. On the PostgreSQL pass, with the store of the
/// server that ran on `dir` (its database, tests/common/server.rs), as an operator's
/// configuration gives `serve` and the CLI the same `store.url`.
fn keygate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(keygate_bin());
    cmd.arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("SOFTHSM2_CONF")
        .env_remove("KEYGATE_CONFIG")
        .env("RUST_LOG", "warn");
    if let Ok(url) = std::fs::read_to_string(dir.join("pg-store-url")) {
        cmd.env("KEYGATE__STORE__URL", url.trim());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run keygate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn admin_key_commands_work_without_a_server_and_the_server_honours_them() {
    let dir = Server::start().stop();
    let out = keygate(
        dir.path(),
        &["admin-key-create", "--name", "ops", "--role", "admin"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_string();
    assert!(
        secret.starts_with("kg_"),
        "stdout carries only the secret: {secret:?}"
    );
    assert!(
        !text(&out.stderr).contains(&secret),
        "the secret is printed once, on stdout"
    );

    let out = keygate(dir.path(), &["admin-keys-list"], &[]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    assert!(
        listing.contains("ops") && listing.contains(&secret[secret.len() - 4..]),
        "{listing}"
    );
    assert!(!listing.contains(&secret), "list never shows secrets");
    let id = listing
        .lines()
        .find(|l| l.ends_with("ops"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    // The server accepts the CLI-made key and does not print a second bootstrap key.
    let s = Server::start_in(dir, Options::default());
    assert!(
        s.admin_key.is_empty(),
        "bootstrap key shown only on first start"
    );
    assert_eq!(s.get("/api/v1/keys", &secret).await.status(), 200);
    let dir = s.stop();

    let out = keygate(dir.path(), &["admin-key-delete", &id], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = Server::start_in(dir, Options::default());
    assert_eq!(s.get("/api/v1/keys", &secret).await.status(), 401);
}

#[tokio::test]
async fn keys_commands_list_and_create_rings_in_hardware() {
    let dir = Server::start().stop();
    let out = keygate(
        dir.path(),
        &["keys", "create", "edge", "--algorithm", "EdDSA"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = keygate(dir.path(), &["keys", "list"], &[]);
    let listing = text(&out.stdout);
    for ring in ["api-key-mac", "jwt-default", "edge"] {
        assert!(listing.contains(ring), "{listing}");
    }
    assert!(
        listing.contains("pkcs11:token=keygate;id="),
        "locators are shown as RFC 7512 URIs: {listing}"
    );
    assert!(
        listing.contains("(pkcs11:"),
        "backend kind shown: {listing}"
    );
}

#[tokio::test]
async fn start_up_failures_are_clear_errors_with_a_non_zero_exit() {
    let dir = Server::start().stop();
    let wrong_pin = dir.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "not-the-pin\n").unwrap();
    let wrong_pin = wrong_pin.display().to_string();
    let cases: [(&str, &str, &str); 4] = [
        (
            "KEYGATE__BACKENDS__HSM__PIN_FILE",
            &wrong_pin,
            "CKR_PIN_INCORRECT",
        ),
        (
            "KEYGATE__BACKENDS__HSM__TOKEN_LABEL",
            "absent",
            "no token labelled \"absent\"",
        ),
        (
            "KEYGATE__BACKENDS__HSM__MODULE",
            "/nonexistent/libpkcs11.so",
            "does not exist",
        ),
        (
            "KEYGATE__STORE__URL",
            "sqlite:///nonexistent/dir/keygate.db",
            "store",
        ),
    ];
    for (var, value, expected) in cases {
        let out = keygate(
            dir.path(),
            &["serve", "--listen", "127.0.0.1:0"],
            &[(var, value)],
        );
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{var} must fail");
        assert!(
            err.contains(expected),
            "{var}: expected {expected:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{var}: {err}");
    }
    let out = keygate(&dir.path().join("missing"), &["admin-keys-list"], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no keygate data directory"));
}

#[tokio::test]
async fn a_key_whose_secret_the_client_saw_survives_a_hard_kill() {
    let s = Server::start();
    let r = s
        .post_json(
            "/api/v1/api-keys",
            &s.admin_key,
            json!({"name": "durable", "role": "read-only"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let secret = r.json::<serde_json::Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    // SIGKILL: no shutdown, no flush beyond what commit already made durable.
    let pid = s.pid();
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let dir = s.stop();
    let s = Server::start_in(dir, Options::default());
    assert_eq!(s.get("/api/v1/keys", &secret).await.status(), 200);
}

#[tokio::test]
async fn the_dev_layout_holds_the_store_the_softhsm_config_and_a_private_pin() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start();
    let dir = s.data_dir();
    for f in ["keygate.db", "softhsm/softhsm2.conf", "pin"] {
        assert!(dir.join(f).is_file(), "{f} missing from the dev layout");
    }
    let mode = std::fs::metadata(dir.join("pin"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the PIN file is private");
    let conf = std::fs::read_to_string(dir.join("softhsm/softhsm2.conf")).unwrap();
    assert!(
        conf.contains(&dir.join("softhsm/tokens").display().to_string()),
        "{conf}"
    );
    // The token is labelled `keygate`, as `keys list` shows in every locator.
    let dir = s.stop();
    let out = keygate(dir.path(), &["keys", "list"], &[]);
    assert!(text(&out.stdout).contains("pkcs11:token=keygate;"));
}

#[tokio::test]
async fn a_start_that_cannot_bind_its_port_does_not_use_up_the_bootstrap_key() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(
        dir.path(),
        &["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")],
        &[],
    );
    assert!(!out.status.success(), "the port is taken");
    assert!(
        !text(&out.stdout).contains("kg_"),
        "no key shown by a failed start"
    );
    drop(busy);
    let s = Server::start_in(dir, Options::default());
    assert!(
        s.admin_key.starts_with("kg_"),
        "the next start still issues the bootstrap key"
    );
    assert_eq!(s.get("/api/v1/keys", &s.admin_key).await.status(), 200);
}

/// Issue 12, finding 3 through the CLI: `admin-key-create` is the same workflow as the
/// API with a `root` caller, so it makes no key in an approver's name either.
#[tokio::test]
async fn the_cli_makes_no_key_in_an_approvers_name() {
    let s = Server::start();
    s.principal("alice", "super-admin").await;
    let dir = s.stop();
    let out = keygate(
        dir.path(),
        &[
            "admin-key-create",
            "--name",
            "x",
            "--role",
            "super-admin",
            "--owner",
            "alice",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("approver"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}
