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
            let tokens = dir.path().join("tokens");
            std::fs::create_dir_all(&tokens).expect("token dir");
            let conf = dir.path().join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                    tokens.display()
                ),
            )
            .expect("softhsm2.conf");
            // Set before any PKCS#11 call in this process; nothing else reads it.
            std::env::set_var("SOFTHSM2_CONF", &conf);
            token_init::ensure_token(
                &module(),
                LABEL,
                &SecretString::from(SO_PIN),
                &SecretString::from(USER_PIN),
            )
            .expect("create test token");
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
    match s.login(cryptoki::session::UserType::User, Some(&SecretString::from(USER_PIN))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    s
}
