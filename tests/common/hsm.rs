//! One SoftHSM token for the in-process hardware tests of this test binary.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`, so the whole process shares one
//! token directory: a fresh temporary one, made here before the first PKCS#11 call.
//! Server tests do not use this; each spawned server makes its own token (`serve --dev`).

use keygate::hardware::pkcs11::{token_init, Pkcs11Backend, Pkcs11Settings};
use keygate::hardware::profile::HsmProfile;
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const LABEL: &str = "keygate-test";
pub const USER_PIN: &str = "test-user-pin";
const SO_PIN: &str = "test-so-pin";

pub fn module() -> PathBuf {
    std::env::var_os("TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MODULE))
}

struct Shared {
    _dir: tempfile::TempDir,
    backend: Arc<Pkcs11Backend>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The process-wide test backend on a fresh token (created on first use).
pub fn backend() -> Arc<Pkcs11Backend> {
    SHARED
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            // The same script a person uses by hand, so it is exercised on every run.
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/softhsm-test/make-token.sh");
            let out = std::process::Command::new("bash")
                .arg(script)
                .arg(dir.path())
                .args([LABEL, USER_PIN, SO_PIN])
                .env_remove("SOFTHSM2_CONF")
                .output()
                .expect("run softhsm-test/make-token.sh");
            assert!(
                out.status.success(),
                "make-token.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let conf = stdout
                .trim()
                .strip_prefix("export SOFTHSM2_CONF=")
                .expect("make-token.sh prints the SOFTHSM2_CONF to use")
                .to_string();
            // Set before any PKCS#11 call in this process; nothing else reads it.
            std::env::set_var("SOFTHSM2_CONF", &conf);
            // Present already (made by the script); this checks the Rust path agrees.
            let made = token_init::ensure_token(
                &module(),
                LABEL,
                &SecretString::from(SO_PIN),
                &SecretString::from(USER_PIN),
            )
            .expect("find test token");
            assert!(!made, "make-token.sh should have created the token");
            let profile = HsmProfile::load(None, "softhsm2").expect("softhsm2 profile");
            let backend = Pkcs11Backend::connect(Pkcs11Settings {
                module: module(),
                token_label: LABEL.into(),
                pin: SecretString::from(USER_PIN),
                profile,
            })
            .expect("connect to test token");
            Shared {
                _dir: dir,
                backend: Arc::new(backend),
            }
        })
        .backend
        .clone()
}

/// A raw cryptoki session on the test token, logged in as the user, for tests that read
/// attributes or create objects outside keygate's API.
pub fn raw_session() -> cryptoki::session::Session {
    let _ = backend();
    let ctx = keygate::hardware::pkcs11::module::shared_context(&module()).expect("context");
    let slot = keygate::hardware::pkcs11::module::find_token(&ctx, LABEL).expect("slot");
    let s = ctx.open_rw_session(slot).expect("session");
    // Login is per application and the backend already holds it.
    match s.login(
        cryptoki::session::UserType::User,
        Some(&SecretString::from(USER_PIN)),
    ) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    s
}
