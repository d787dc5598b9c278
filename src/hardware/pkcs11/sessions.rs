//! The session pool: one login, a fixed set of sessions, reconnect on loss.
//!
//! A cryptoki `Session` is `Send` but not `Sync`, and PKCS#11 allows one operation per
//! session at a time, so a session is checked out for exactly one call and returned.
//! Sessions are opened lazily and kept. When a call fails with a code that means the
//! sessions or the login are gone (`CKR_SESSION_HANDLE_INVALID`, `CKR_USER_NOT_LOGGED_IN`,
//! `CKR_DEVICE_REMOVED`, `CKR_CRYPTOKI_NOT_INITIALIZED`, ...), the pool re-initialises the
//! module if needed, finds the token again by label, logs in again and retries once. If
//! that fails too, a short circuit breaker makes further calls fail fast instead of piling
//! up behind a dead device.

use super::error::{is_reconnectable, translate};
use super::module::{find_token, initialize, pick_token, shared_context, token_labels};
use crate::hardware::HardwareError;
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long calls fail fast after the device was found down.
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);
/// How long re-initialisation waits for in-flight calls to return their sessions.
const REINIT_WAIT: Duration = Duration::from_secs(10);
/// How long [`SessionPool::probe`] waits before confirming a failed probe.
const PROBE_CONFIRM_PAUSE: Duration = Duration::from_millis(100);
/// A find that misses an object re-initialises the module at most this often.
const MISS_REINIT_EVERY: Duration = Duration::from_secs(5);
/// Reads of the token list at start, and the pause between them (10 s in all); see
/// [`find_token_at_start`].
const START_READ_ATTEMPTS: u32 = 100;
const START_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Reads at start while the token's label is not listed (0.5 s): SoftHSM leaves out a
/// token whose files it cannot read at that moment.
const START_LABEL_ATTEMPTS: u32 = 5;
/// The pause between `C_Initialize` attempts when re-initialising.
const INIT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// `C_Initialize` attempts when a probe re-initialises: the token may really be gone, and
/// every call waits while the pool is re-initialising.
const PROBE_INIT_ATTEMPTS: u32 = 5;
/// `C_Initialize` attempts when a missed object re-initialises (about 0.5 s): the token
/// was there a moment ago, and another process's use of it is what fails the attempts,
/// so the calls waiting meanwhile are better served a little late than answered 503.
const MISS_INIT_ATTEMPTS: u32 = 10;

struct Connection {
    ctx: Pkcs11,
    slot: Slot,
    generation: u64,
    logged_in: bool,
}

struct Pooled {
    session: Session,
    generation: u64,
}

/// `keygate_pkcs11_sessions_open`: sessions keygate holds open on its tokens now (the
/// soak watches it stay flat; docs/performance.md).
const SESSIONS_GAUGE: &str = "keygate_pkcs11_sessions_open";

impl Drop for Pooled {
    fn drop(&mut self) {
        metrics::gauge!(SESSIONS_GAUGE).decrement(1.0);
    }
}

/// A fixed-size pool of logged-in sessions on one token.
pub struct SessionPool {
    module: PathBuf,
    token_label: String,
    pin: AuthPin,
    login_per_session: bool,
    conn: Mutex<Connection>,
    free_tx: flume::Sender<Option<Pooled>>,
    free_rx: flume::Receiver<Option<Pooled>>,
    size: usize,
    /// While the device is down: when calls may try again, as nanoseconds after `epoch`
    /// (0 = closed). Atomic, because every call reads it.
    breaker_until: AtomicU64,
    epoch: Instant,
    /// Mirror of `conn.generation`, written only under the `conn` lock.
    generation: AtomicU64,
    /// Set when the token refused the PIN: further logins would only count towards the
    /// device's lockout, so keygate stops trying until it is restarted.
    pin_refused: AtomicBool,
    /// When (nanoseconds since `epoch`) a missing object last re-initialised the module;
    /// see [`Self::recover_after_miss`].
    last_miss_reinit: AtomicU64,
}

/// Returns a checked-out slot to the pool when dropped, even on early return.
struct Checkout<'a> {
    pool: &'a SessionPool,
    slot: Option<Option<Pooled>>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // The receiver lives as long as the pool, so this cannot fail while we hold &pool.
            let _ = self.pool.free_tx.send(slot);
        }
    }
}

impl SessionPool {
    /// Connects: loads the module, finds the token, opens one session and logs in, so a
    /// wrong PIN or a missing token is reported at start rather than on the first request.
    pub fn connect(
        module: PathBuf,
        token_label: String,
        pin: AuthPin,
        size: usize,
        login_per_session: bool,
    ) -> Result<SessionPool, HardwareError> {
        let ctx = shared_context(&module)?;
        let slot = find_token_at_start(&ctx, &token_label)?;
        let (free_tx, free_rx) = flume::bounded(size);
        for _ in 0..size {
            free_tx
                .send(None)
                .map_err(|_| HardwareError::Failure("session pool channel closed".into()))?;
        }
        let pool = SessionPool {
            module,
            token_label,
            pin,
            login_per_session,
            conn: Mutex::new(Connection {
                ctx,
                slot,
                generation: 0,
                logged_in: false,
            }),
            free_tx,
            free_rx,
            size,
            breaker_until: AtomicU64::new(0),
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            pin_refused: AtomicBool::new(false),
            last_miss_reinit: AtomicU64::new(0),
        };
        pool.with_session_unguarded("connecting", &mut |_s| Ok(()))?;
        Ok(pool)
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The connection generation; object handles cached under an older one are stale.
    pub fn generation(&self) -> u64 {
        // Read on every call; an atomic copy keeps the connection lock off the hot path.
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `f` on a pooled session, reconnecting and retrying once on session loss.
    pub fn with_session<T>(
        &self,
        what: &str,
        f: &mut dyn FnMut(&Session) -> Result<T, Error>,
    ) -> Result<T, HardwareError> {
        let until = self.breaker_until.load(Ordering::Relaxed);
        if until != 0 && self.nanos_now() < until {
            return Err(HardwareError::Unavailable(format!(
                "{what}: token {:?} is unreachable (retrying shortly)",
                self.token_label
            )));
        }
        self.with_session_unguarded(what, f)
    }

    /// Like [`with_session`](Self::with_session) but ignores the circuit breaker; used by
    /// health probes, which are what close it again.
    pub fn with_session_unguarded<T>(
        &self,
        what: &str,
        f: &mut dyn FnMut(&Session) -> Result<T, Error>,
    ) -> Result<T, HardwareError> {
        let slot = self
            .free_rx
            .recv()
            .map_err(|_| HardwareError::Failure("session pool channel closed".into()))?;
        let mut checkout = Checkout {
            pool: self,
            slot: Some(slot),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .ensure_session(&mut checkout)
                .and_then(|(session, generation)| {
                    f(session).map_err(|e| Failed::Call(e, generation))
                });
            match result {
                Ok(v) => {
                    self.close_breaker();
                    return Ok(v);
                }
                Err(Failed::Call(e, generation)) if is_reconnectable(&e) => {
                    // Drop the dead session and reconnect, then retry once.
                    if let Some(slot) = checkout.slot.as_mut() {
                        *slot = None;
                    }
                    let reconnect = self.reconnect(generation);
                    if attempt >= 2 || reconnect.is_err() {
                        self.open_breaker();
                        tracing::warn!(token = %self.token_label, error = %translate(what, e), "PKCS#11 token unreachable");
                        return Err(match reconnect {
                            Err(re) => re,
                            Ok(()) => HardwareError::Unavailable(format!(
                                "{what}: token {:?} unreachable after reconnect",
                                self.token_label
                            )),
                        });
                    }
                }
                Err(Failed::Call(e, _)) => return Err(translate(what, e)),
                Err(Failed::Open(e)) => {
                    if let HardwareError::Unavailable(_) = e {
                        self.open_breaker();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Health probe, with recovery: if the token cannot be reached, re-initialise the
    /// module once and probe again.
    ///
    /// One failed probe is confirmed by a second one [`PROBE_CONFIRM_PAUSE`] later before
    /// the module is re-initialised: re-initialising closes every session, so the calls
    /// in flight answer 503. SoftHSM keeps token state in files that every process
    /// sharing the token directory rewrites (another replica, `pkcs11-tool` logging in),
    /// and a read racing such a rewrite fails once with `CKR_GENERAL_ERROR`; that is not
    /// an outage.
    pub fn probe(&self) -> Result<(), HardwareError> {
        let recoverable = |e: &HardwareError| {
            matches!(e, HardwareError::Unavailable(_) | HardwareError::Failure(_))
                && !self.pin_refused.load(Ordering::Relaxed)
        };
        match self.probe_once() {
            Ok(()) => Ok(()),
            Err(e) if recoverable(&e) => {
                std::thread::sleep(PROBE_CONFIRM_PAUSE);
                match self.probe_once() {
                    Ok(()) => {
                        tracing::debug!(token = %self.token_label, error = %e, "one health probe failed; the next passed");
                        Ok(())
                    }
                    Err(e) if recoverable(&e) => {
                        self.reinitialize(PROBE_INIT_ATTEMPTS)?;
                        self.probe_once()
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Re-initialises the module: `C_Finalize` and `C_Initialize`, then finds the token by
    /// label again. Needed when the token itself went away and came back (SoftHSM only
    /// re-reads its token store at initialisation). It first takes every session slot,
    /// so no call of this pool is inside the module meanwhile, and it is never called by
    /// a thread that holds a slot. `C_Initialize` is tried up to `attempts` times,
    /// [`INIT_RETRY_PAUSE`] apart.
    pub fn reinitialize(&self, attempts: u32) -> Result<(), HardwareError> {
        let mut held = Vec::with_capacity(self.size);
        for _ in 0..self.size {
            // A call hung inside the device keeps its slot; give up rather than wait with it.
            match self.free_rx.recv_timeout(REINIT_WAIT) {
                Ok(slot) => held.push(slot),
                Err(_) => {
                    for slot in held {
                        let _ = self.free_tx.send(slot);
                    }
                    return Err(HardwareError::Unavailable(format!(
                        "token {:?}: a call did not return within {}s; not re-initialising",
                        self.token_label,
                        REINIT_WAIT.as_secs()
                    )));
                }
            }
        }
        let result = (|| {
            let mut conn = self
                .conn
                .lock()
                .map_err(|_| HardwareError::Failure("connection state poisoned".into()))?;
            // Close our sessions while the module still knows them.
            held.clear();
            tracing::warn!(token = %self.token_label, "re-initialising the PKCS#11 module");
            let mut attempt = 1;
            conn.slot = loop {
                let _ = conn.ctx.clone().finalize();
                // SoftHSM's C_Initialize reads every token file and fails with
                // CKR_GENERAL_ERROR while another process is rewriting one: try again
                // shortly rather than stay down until the next probe.
                match initialize(&conn.ctx).and_then(|()| find_token(&conn.ctx, &self.token_label))
                {
                    Ok(slot) => break slot,
                    Err(e) if attempt >= attempts => return Err(e),
                    Err(e) => {
                        tracing::debug!(token = %self.token_label, error = %e, attempt, "re-initialising failed; trying again");
                        attempt += 1;
                        std::thread::sleep(INIT_RETRY_PAUSE);
                    }
                }
            };
            conn.generation += 1;
            conn.logged_in = false;
            self.generation.store(conn.generation, Ordering::Release);
            Ok(())
        })();
        for _ in 0..self.size {
            let _ = self.free_tx.send(None);
        }
        result
    }

    /// Called when a find missed an object the store lists, with the generation the find
    /// ran under. Re-initialises the module (at most once per [`MISS_REINIT_EVERY`], and
    /// not if another thread already did since), so the caller's next find sees the
    /// token as it is. SoftHSM can lose sight of a token's objects in a process when
    /// another process sharing the token directory rewrites its files at the moment it
    /// reads them, and then only re-reads them at `C_Initialize`. A key that is really
    /// gone costs one re-initialisation per interval, not one per request. Never called
    /// by a thread that holds a slot.
    pub fn recover_after_miss(&self, seen_generation: u64) -> Result<(), HardwareError> {
        if self.generation() != seen_generation {
            return Ok(());
        }
        let now = self.nanos_now().max(1);
        let last = self.last_miss_reinit.load(Ordering::Relaxed);
        let every = u64::try_from(MISS_REINIT_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            return Ok(());
        }
        if self
            .last_miss_reinit
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Another thread claimed it; its re-initialisation holds every slot, so the
            // caller's next find waits for it.
            return Ok(());
        }
        tracing::warn!(token = %self.token_label, "a listed object was not found; re-reading the token");
        self.reinitialize(MISS_INIT_ATTEMPTS)
    }

    /// The token's label, manufacturer and model from `C_GetTokenInfo` (attestation).
    pub fn token_description(&self) -> Result<(String, String, String), HardwareError> {
        let ctx = self
            .conn
            .lock()
            .map_err(|_| HardwareError::Failure("connection state poisoned".into()))?
            .ctx
            .clone();
        let slot = find_token(&ctx, &self.token_label)?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| translate("reading the token information", e))?;
        Ok((
            info.label().trim().to_string(),
            info.manufacturer_id().trim().to_string(),
            info.model().trim().to_string(),
        ))
    }

    fn probe_once(&self) -> Result<(), HardwareError> {
        self.with_session_unguarded("health probe", &mut |s| s.get_session_info().map(|_| ()))?;
        let ctx = self
            .conn
            .lock()
            .map_err(|_| HardwareError::Failure("connection state poisoned".into()))?
            .ctx
            .clone();
        let slot = find_token(&ctx, &self.token_label)?;
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| translate("health probe", e))?;
        if !info.user_pin_initialized() {
            return Err(HardwareError::Unavailable(format!(
                "token {:?} has no user PIN",
                self.token_label
            )));
        }
        Ok(())
    }

    fn nanos_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn open_breaker(&self) {
        let until = self
            .nanos_now()
            .saturating_add(u64::try_from(BREAKER_OPEN_FOR.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.breaker_until.store(until, Ordering::Relaxed);
    }

    fn close_breaker(&self) {
        // Read first: a store on every successful call would bounce the cache line.
        if self.breaker_until.load(Ordering::Relaxed) != 0 {
            self.breaker_until.store(0, Ordering::Relaxed);
        }
    }

    /// Makes sure the checked-out slot holds a live, logged-in session of the current
    /// generation.
    fn ensure_session<'c>(
        &self,
        checkout: &'c mut Checkout<'_>,
    ) -> Result<(&'c Session, u64), Failed> {
        let current = self.generation();
        let slot = checkout
            .slot
            .as_mut()
            .ok_or_else(|| Failed::Open(HardwareError::Failure("empty checkout".into())))?;
        let stale = match slot {
            Some(p) => p.generation != current,
            None => true,
        };
        if stale {
            *slot = None;
            let pooled = self.open_session().map_err(Failed::Open)?;
            *slot = Some(pooled);
        }
        match slot {
            Some(p) => Ok((&p.session, p.generation)),
            None => Err(Failed::Open(HardwareError::Failure("no session".into()))),
        }
    }

    fn open_session(&self) -> Result<Pooled, HardwareError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| HardwareError::Failure("connection state poisoned".into()))?;
        let session = match conn.ctx.open_rw_session(conn.slot) {
            Ok(s) => s,
            Err(e)
                if is_reconnectable(&e)
                    || matches!(e, Error::Pkcs11(RvError::SlotIdInvalid, _)) =>
            {
                Self::reconnect_locked(&mut conn, &self.module, &self.token_label)?;
                self.generation.store(conn.generation, Ordering::Release);
                conn.ctx
                    .open_rw_session(conn.slot)
                    .map_err(|e| translate("opening session", e))?
            }
            Err(e) => return Err(translate("opening session", e)),
        };
        if self.login_per_session || !conn.logged_in {
            if self.pin_refused.load(Ordering::Relaxed) {
                return Err(HardwareError::Unavailable(format!(
                    "token {:?} refused the PIN earlier; fix the PIN and restart keygate",
                    self.token_label
                )));
            }
            match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                    conn.logged_in = true;
                }
                Err(
                    e @ Error::Pkcs11(
                        RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired,
                        _,
                    ),
                ) => {
                    self.pin_refused.store(true, Ordering::Relaxed);
                    let msg = translate("logging in", e).into_message();
                    tracing::error!(token = %self.token_label, error = %msg, "the token refused the PIN; no further login attempts until restart");
                    return Err(HardwareError::Unavailable(msg));
                }
                Err(e) => return Err(translate("logging in", e)),
            }
        }
        metrics::gauge!(SESSIONS_GAUGE).increment(1.0);
        Ok(Pooled {
            session,
            generation: conn.generation,
        })
    }

    /// Re-initialises and finds the token again, unless another thread already did so
    /// since `seen_generation`.
    /// Logs keygate in again on `s` if the token no longer counts it as logged in, and
    /// says whether it did. A token that forgot the login (one restarted behind keygate,
    /// say) hides its private objects from finds while every session still looks open,
    /// which would look like a missing key. Checked only after a find missed; never tries
    /// a PIN the token has refused.
    pub(super) fn login_again_if_forgotten(&self, s: &Session) -> Result<bool, Error> {
        match s.get_session_info()?.session_state() {
            SessionState::RoUser | SessionState::RwUser => return Ok(false),
            SessionState::RoPublic | SessionState::RwPublic | SessionState::RwSecurityOfficer => {}
        }
        if self.pin_refused.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::warn!(token = %self.token_label, "the token had dropped keygate's login; logged in again");
                Ok(true)
            }
            Err(
                e @ Error::Pkcs11(
                    RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired,
                    _,
                ),
            ) => {
                self.pin_refused.store(true, Ordering::Relaxed);
                tracing::error!(token = %self.token_label, error = %translate("logging in", e).into_message(), "the token refused the PIN; no further login attempts until restart");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn reconnect(&self, seen_generation: u64) -> Result<(), HardwareError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| HardwareError::Failure("connection state poisoned".into()))?;
        if conn.generation != seen_generation {
            return Ok(());
        }
        Self::reconnect_locked(&mut conn, &self.module, &self.token_label)?;
        self.generation.store(conn.generation, Ordering::Release);
        Ok(())
    }

    fn reconnect_locked(
        conn: &mut Connection,
        module: &std::path::Path,
        label: &str,
    ) -> Result<(), HardwareError> {
        tracing::info!(token = %label, "reconnecting to PKCS#11 token");
        initialize(&conn.ctx)?;
        let ctx = shared_context(module)?;
        conn.slot = find_token(&ctx, label)?;
        conn.ctx = ctx;
        conn.generation += 1;
        conn.logged_in = false;
        Ok(())
    }
}

enum Failed {
    Open(HardwareError),
    Call(Error, u64),
}

/// Finds the token at start. When several processes start at once on one SoftHSM token
/// directory (replicas of one deployment), reading a token's files can fail with
/// `CKR_GENERAL_ERROR` while another process rewrites them, and SoftHSM reads them again
/// only at `C_Initialize`. Such a failure re-initialises the module and reads again, for
/// up to [`START_READ_ATTEMPTS`] × [`START_RETRY_PAUSE`]; a label not listed (SoftHSM
/// leaves out a token it could not read) does the same for [`START_LABEL_ATTEMPTS`]
/// reads, then is reported, as is any other error.
fn find_token_at_start(ctx: &Pkcs11, label: &str) -> Result<Slot, HardwareError> {
    let mut attempt = 1;
    loop {
        match token_labels(ctx) {
            // SoftHSM leaves out a token whose files it could not read: look again after
            // re-initialising, briefly (a label that is really missing is an error the
            // operator must see soon).
            Ok(tokens) => match pick_token(&tokens, label) {
                Err(e @ HardwareError::Unavailable(_)) if attempt < START_LABEL_ATTEMPTS => {
                    tracing::debug!(token = %label, error = %e, attempt, "token not listed at start; re-initialising");
                }
                found => return found,
            },
            Err(e @ Error::Pkcs11(RvError::GeneralError | RvError::DeviceError, _))
                if attempt < START_READ_ATTEMPTS =>
            {
                tracing::debug!(token = %label, error = %translate("reading token info", e), attempt, "reading the token failed at start; re-initialising");
            }
            Err(e) => return Err(translate("reading token info", e)),
        }
        loop {
            attempt += 1;
            std::thread::sleep(START_RETRY_PAUSE);
            let _ = ctx.clone().finalize();
            match initialize(ctx) {
                Ok(()) => break,
                Err(e) if attempt < START_READ_ATTEMPTS => {
                    tracing::debug!(token = %label, error = %e, attempt, "initialising failed at start; trying again");
                }
                Err(e) => return Err(e),
            }
        }
    }
}
