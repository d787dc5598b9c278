//! In-process token fixtures: a key registry and token service over the shared test
//! token and a temporary SQLite file, so tests can drive the clock (`now` is always a
//! parameter) instead of sleeping.

use super::hsm;
use keygate::hardware::executor::HardwareExecutor;
use keygate::hardware::{Algorithm, Backend};
use keygate::keys::KeyRegistry;
use keygate::services::api_keys::ApiKeyService;
use keygate::services::authz::Role;
use keygate::services::tokens::{TokenService, TokenSettings};
use keygate::services::{AuthMethod, Principal};
use keygate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The clock every fixture starts at.
pub const T0: i64 = 1_800_000_000;

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub store: Store,
    pub keys: Arc<KeyRegistry>,
    pub tokens: TokenService,
    /// The signing ring this fixture's tokens use (unique per fixture).
    pub ring: String,
    /// A ring for the signing service, which never signs with the access-token ring:
    /// `<ring>-sign`.
    pub sign_ring: String,
}

pub fn settings(ring: &str) -> TokenSettings {
    TokenSettings {
        issuer: "https://keygate.test".into(),
        audience: "https://keygate.test".into(),
        ring: ring.into(),
        access_ttl: 900,
        refresh_ttl: 86_400,
        max_custom_ttl: 86_400,
        leeway: 60,
        max_sessions: 5,
        signing_default_ttl: 300,
        signing_max_ttl: 3600,
        signing_allow_caller_times: false,
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A unique ring name, since every fixture shares the one test token.
pub fn ring_name(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub async fn fixture_with(alg: Algorithm, tweak: impl FnOnce(&mut TokenSettings)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}/k.db", dir.path().display()))
        .await
        .unwrap();
    let backend: Arc<dyn Backend> = hsm::backend();
    let exec = HardwareExecutor::new("hsm", backend, 2).unwrap();
    let keys = KeyRegistry::load(store.clone(), HashMap::from([("hsm".to_string(), exec)]))
        .await
        .unwrap();
    keys.ensure_ring("api-key-mac", Algorithm::HS256, "hsm", T0)
        .await
        .unwrap();
    let ring = ring_name("jwt");
    keys.create_ring(&ring, alg, "hsm", "test", T0)
        .await
        .unwrap();
    let sign_ring = format!("{ring}-sign");
    keys.create_ring(&sign_ring, alg, "hsm", "test", T0)
        .await
        .unwrap();
    let keys = Arc::new(keys);
    let api_keys = Arc::new(
        ApiKeyService::new(store.clone(), keys.clone(), 10, 0, 10)
            .await
            .unwrap(),
    );
    let mut s = settings(&ring);
    tweak(&mut s);
    let key_files = key_files(&store, &s).await;
    let tokens = TokenService::new(store.clone(), keys.clone(), api_keys, key_files, s, T0)
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        keys,
        tokens,
        ring,
        sign_ring,
    }
}

/// The key-file service the token service checks `kf:` bindings against.
pub async fn key_files(
    store: &Store,
    s: &keygate::services::tokens::TokenSettings,
) -> Arc<keygate::services::key_files::KeyFileService> {
    Arc::new(
        keygate::services::key_files::KeyFileService::new(store.clone(), 10, &s.issuer, s.leeway)
            .await
            .unwrap(),
    )
}

pub async fn fixture() -> Fixture {
    fixture_with(Algorithm::ES256, |_| {}).await
}

pub fn principal(name: &str, role: Role) -> Principal {
    Principal {
        name: name.into(),
        role,
        method: AuthMethod::Cli,
    }
}

/// The decoded JSON of a compact JWS part (0 = header, 1 = claims), unverified.
fn jws_part(token: &str, i: usize) -> serde_json::Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let part = token.split('.').nth(i).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// A JWT's claims, unverified (for assertions on what the server put there).
pub fn claims_of(token: &str) -> serde_json::Value {
    jws_part(token, 1)
}

/// A JWT's protected header, unverified.
pub fn header_of(token: &str) -> serde_json::Value {
    jws_part(token, 0)
}
