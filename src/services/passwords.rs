//! Password hashing: argon2id with the `[users]` parameters, off the async workers.
//!
//! Why a module of its own: one argon2id hash costs `argon2_memory_kib` of memory (19 MiB
//! by default) and tens of milliseconds of one CPU. Run on a tokio worker it would stall
//! every other request on that worker; run unbounded, a login flood would allocate
//! hundreds of those buffers at once. So every hash and verify runs on
//! `spawn_blocking`, behind a semaphore of `argon2_max_concurrent` permits (0 = one per
//! CPU); further callers queue.
//!
//! - **Salt**: 16 bytes from the system RNG (aws-lc), encoded into the PHC string.
//! - **Stored form**: the PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). It carries
//!   its own parameters, so hashes made under older settings still verify after the
//!   configuration changes.
//! - **No user enumeration by timing**: a dummy hash is made once at construction with
//!   the current parameters, and [`PasswordHasher::verify`] checks against it when there
//!   is no stored hash (unknown user, user without a password, locked name). Every login
//!   attempt therefore costs one verify, whether or not the account exists.
//! - **Secrets**: passwords arrive as [`SecretString`]; the only copy made (to move it to
//!   the blocking thread) is [`Zeroizing`]. Nothing here logs or formats a password.

use crate::config::UsersConfig;
use crate::services::ServiceError;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Bytes of random salt per hash (the argon2 recommendation).
const SALT_BYTES: usize = 16;
/// Upper bound on permits, whatever the configuration or CPU count says.
const MAX_PERMITS: usize = 1024;

/// Hashes and verifies passwords with argon2id; cheap to share behind an `Arc`.
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// PHC string of a random password nobody knows, for constant-work failures.
    dummy: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.argon2.params();
        f.debug_struct("PasswordHasher")
            .field("memory_kib", &p.m_cost())
            .field("iterations", &p.t_cost())
            .field("parallelism", &p.p_cost())
            .field("available_permits", &self.permits.available_permits())
            .finish()
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("{what}: {e}"))
}

/// A fresh 16-byte salt from the system RNG.
fn new_salt() -> Result<SaltString, ServiceError> {
    let mut bytes = [0u8; SALT_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| internal("password salt", "RNG failed"))?;
    SaltString::encode_b64(&bytes).map_err(|e| internal("password salt", e))
}

fn hash_blocking(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, ServiceError> {
    let salt = new_salt()?;
    argon2
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| internal("hashing a password", e))
}

impl PasswordHasher {
    /// Builds the hasher from `[users]` and computes the dummy hash (one full hash, on a
    /// blocking thread).
    pub async fn new(cfg: &UsersConfig) -> Result<PasswordHasher, ServiceError> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| ServiceError::Invalid(format!("users.argon2_* parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let permits = match cfg.argon2_max_concurrent {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(MAX_PERMITS);
        let permits = Arc::new(Semaphore::new(permits));
        let mut random = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(random.as_mut())
            .map_err(|_| internal("dummy password", "RNG failed"))?;
        let a = argon2.clone();
        let dummy = run_blocking(&permits, move || hash_blocking(&a, random.as_ref())).await?;
        Ok(PasswordHasher {
            argon2,
            permits,
            dummy: dummy.into(),
        })
    }

    /// The PHC string of `password` under the configured parameters and a fresh salt.
    pub async fn hash(&self, password: &SecretString) -> Result<String, ServiceError> {
        let pw = Zeroizing::new(password.expose_secret().as_bytes().to_vec());
        let argon2 = self.argon2.clone();
        run_blocking(&self.permits, move || hash_blocking(&argon2, &pw)).await
    }

    /// Whether `password` matches the PHC string `stored`. With `None` (no account, no
    /// password, or a locked name) it verifies against the dummy hash and answers `false`,
    /// so the work done does not depend on whether an account exists.
    ///
    /// A stored string that does not parse is an error (after the dummy work is done),
    /// so the caller can log it; it never authenticates.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let pw = Zeroizing::new(password.expose_secret().as_bytes().to_vec());
        let argon2 = self.argon2.clone();
        let dummy = self.dummy.clone();
        let stored: Option<String> = stored.map(str::to_owned);
        run_blocking(&self.permits, move || {
            let dummy_work = |argon2: &Argon2<'_>| {
                if let Ok(h) = PasswordHash::new(&dummy) {
                    let _ = argon2.verify_password(&pw, &h);
                }
            };
            let Some(stored) = stored else {
                dummy_work(&argon2);
                return Ok(false);
            };
            let parsed = match PasswordHash::new(&stored) {
                Ok(h) => h,
                Err(e) => {
                    dummy_work(&argon2);
                    return Err(internal("stored password hash is unreadable", e));
                }
            };
            // The PHC string's own algorithm, version and parameters are used, not ours.
            match argon2.verify_password(&pw, &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(e) => Err(internal("verifying a password", e)),
            }
        })
        .await
    }
}

/// Runs `f` on the blocking pool while holding one permit. The permit moves into the
/// blocking task, so it is held until the hash really finishes, even if the awaiting
/// request is cancelled.
async fn run_blocking<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| internal("password hashing queue", e))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| internal("password hashing task", e))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn cheap() -> UsersConfig {
        UsersConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_max_concurrent: 2,
            ..UsersConfig::default()
        }
    }

    #[tokio::test]
    async fn production_parameters_hash_as_argon2id_and_verify_only_the_right_password() {
        let h = PasswordHasher::new(&UsersConfig::default()).await.unwrap();
        let right = SecretString::from("correct horse battery staple");
        let phc = h.hash(&right).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&right, Some(&phc)).await.unwrap());
        let wrong = SecretString::from("correct horse battery stapler");
        assert!(!h.verify(&wrong, Some(&phc)).await.unwrap());
    }

    #[tokio::test]
    async fn two_hashes_of_one_password_differ_by_salt() {
        let h = PasswordHasher::new(&cheap()).await.unwrap();
        let pw = SecretString::from("same password twice");
        let (a, b) = (h.hash(&pw).await.unwrap(), h.hash(&pw).await.unwrap());
        assert_ne!(a, b);
        assert!(h.verify(&pw, Some(&a)).await.unwrap());
        assert!(h.verify(&pw, Some(&b)).await.unwrap());
    }

    #[tokio::test]
    async fn a_hash_made_with_older_parameters_still_verifies() {
        let old = PasswordHasher::new(&cheap()).await.unwrap();
        let pw = SecretString::from("made under the old settings");
        let phc = old.hash(&pw).await.unwrap();
        assert!(phc.contains("m=64,t=1,p=1"), "{phc}");
        let new = PasswordHasher::new(&UsersConfig {
            argon2_memory_kib: 128,
            argon2_iterations: 3,
            ..cheap()
        })
        .await
        .unwrap();
        assert!(new.verify(&pw, Some(&phc)).await.unwrap());
        assert!(!new
            .verify(&SecretString::from("something else"), Some(&phc))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn no_stored_hash_never_verifies_and_a_garbled_one_is_an_error() {
        let h = PasswordHasher::new(&cheap()).await.unwrap();
        let pw = SecretString::from("anything at all");
        assert!(!h.verify(&pw, None).await.unwrap());
        assert!(h.verify(&pw, Some("not a phc string")).await.is_err());
    }

    #[tokio::test]
    async fn debug_output_shows_parameters_only() {
        let h = PasswordHasher::new(&cheap()).await.unwrap();
        let shown = format!("{h:?}");
        assert!(shown.contains("memory_kib: 64"), "{shown}");
        assert!(!shown.contains("argon2id"), "{shown}");
    }
}
