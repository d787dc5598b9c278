//! The dev layout: everything `keygate serve --dev` needs under one data directory.
//!
//! ```text
//! DIR/keygate.db               SQLite store
//! DIR/softhsm/softhsm2.conf    SoftHSM configuration (SOFTHSM2_CONF)
//! DIR/softhsm/tokens/          the SoftHSM token labelled `keygate`
//! DIR/pin                      the user PIN, mode 0600
//! DIR/so-pin                   the security-officer PIN, mode 0600
//! DIR/tls/cert.pem             the dev HTTPS certificate (self-signed by the tls-identity
//!                              key in the dev token)
//! ```
//!
//! Admin commands use the same layout (without creating anything) when no `--config` is
//! given, so `keygate admin-key-create --data-dir DIR` works with no server running.

use crate::hardware::pkcs11::token_init;
use secrecy::SecretString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEV_TOKEN_LABEL: &str = "keygate";
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Paths of the dev layout under one directory.
#[derive(Debug, Clone)]
pub struct DevLayout {
    pub dir: PathBuf,
    pub db: PathBuf,
    pub softhsm_conf: PathBuf,
    pub tokens: PathBuf,
    pub pin_file: PathBuf,
    pub so_pin_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("dev layout {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("creating the dev token: {0}")]
    Token(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> DevError {
    DevError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl DevLayout {
    pub fn new(dir: &Path) -> DevLayout {
        // Absolute paths, so SOFTHSM2_CONF and the store URL survive a `cd`.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        DevLayout {
            db: dir.join("keygate.db"),
            softhsm_conf: dir.join("softhsm").join("softhsm2.conf"),
            tokens: dir.join("softhsm").join("tokens"),
            pin_file: dir.join("pin"),
            so_pin_file: dir.join("so-pin"),
            dir,
        }
    }

    /// The configuration this layout implies; a config file given with `--dev` is merged
    /// over it.
    pub fn base_config(&self) -> toml::Table {
        // Built as values, not as TOML text: a data directory may contain quotes or
        // backslashes.
        fn table(entries: &[(&str, toml::Value)]) -> toml::Value {
            toml::Value::Table(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        }
        let s = |v: &str| toml::Value::String(v.to_string());
        let ring = |alg: &str| table(&[("backend", s("hsm")), ("algorithm", s(alg))]);
        let mut t = toml::Table::new();
        t.insert(
            "tls".into(),
            table(&[(
                "cert_file",
                s(&self.dir.join("tls").join("cert.pem").display().to_string()),
            )]),
        );
        t.insert(
            "store".into(),
            table(&[("url", s(&format!("sqlite://{}", self.db.display())))]),
        );
        t.insert(
            "backends".into(),
            table(&[(
                "hsm",
                table(&[
                    ("type", s("pkcs11")),
                    ("profile", s("softhsm2")),
                    ("token_label", s(DEV_TOKEN_LABEL)),
                    ("pin_file", s(&self.pin_file.display().to_string())),
                ]),
            )]),
        );
        t.insert(
            "rings".into(),
            table(&[
                ("api-key-mac", ring("HS256")),
                ("jwt-default", ring("ES256")),
            ]),
        );
        t
    }

    /// Points SoftHSM at this layout's configuration. Must run before the first PKCS#11
    /// call and before any other thread starts (it sets a process environment variable).
    pub fn use_softhsm_conf(&self) {
        std::env::set_var("SOFTHSM2_CONF", &self.softhsm_conf);
    }

    /// Creates whatever is missing: directories, SoftHSM config, PINs, token. Returns the
    /// list of things created, for the startup message.
    pub fn create(&self) -> Result<Vec<String>, DevError> {
        let mut created = Vec::new();
        for d in [&self.dir, &self.tokens] {
            if !d.exists() {
                std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
                created.push(format!("directory {}", d.display()));
            }
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        if !self.softhsm_conf.exists() {
            let conf = format!(
                "# SoftHSM token store for keygate's dev layout.\n\
                 directories.tokendir = {}\nobjectstore.backend = file\n\
                 log.level = ERROR\nslots.removable = false\n",
                self.tokens.display()
            );
            write_new(&self.softhsm_conf, conf.as_bytes(), 0o600)?;
            created.push(format!("SoftHSM config {}", self.softhsm_conf.display()));
        }
        for f in [&self.pin_file, &self.so_pin_file] {
            if !f.exists() {
                let pin = random_pin()?;
                write_new(f, pin.as_bytes(), 0o600)?;
                created.push(format!("PIN file {}", f.display()));
            }
        }
        self.use_softhsm_conf();
        let pin = read_pin_file(&self.pin_file).map_err(|e| io(&self.pin_file, e))?;
        let so_pin = read_pin_file(&self.so_pin_file).map_err(|e| io(&self.so_pin_file, e))?;
        let made =
            token_init::ensure_token(Path::new(SOFTHSM_MODULE), DEV_TOKEN_LABEL, &so_pin, &pin)
                .map_err(|e| DevError::Token(e.to_string()))?;
        if made {
            created.push(format!("SoftHSM token {DEV_TOKEN_LABEL:?}"));
        }
        Ok(created)
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DevError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// 24 random base64url characters from the OS RNG (the token does not exist yet).
fn random_pin() -> Result<zeroize::Zeroizing<String>, DevError> {
    use base64::Engine;
    let mut b = zeroize::Zeroizing::new([0u8; 18]);
    aws_lc_rs::rand::fill(&mut *b).map_err(|_| DevError::Token("OS RNG failed".into()))?;
    Ok(zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*b),
    ))
}

/// Reads a PIN file, trimming one trailing newline. Warns when others can read it.
pub fn read_pin_file(path: &Path) -> Result<SecretString, std::io::Error> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "PIN file is readable by group or others; chmod 600 it");
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
    let pin = text.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "PIN file is empty",
        ));
    }
    Ok(SecretString::from(pin.to_string()))
}
