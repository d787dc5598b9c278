//! Generating, finding, reading and destroying token objects.
//!
//! Every private or secret key is created with `CKA_TOKEN`, `CKA_PRIVATE`,
//! `CKA_SENSITIVE=true` and `CKA_EXTRACTABLE=false`: the device will never hand its value
//! out, wrapped or not. Public halves are plain token objects sharing the same `CKA_ID`.

use super::error::is_stale_handle;
use super::{class_slot, Pkcs11Backend};
use crate::hardware::{Algorithm, HardwareError, KeySpec, PublicKey};
use cryptoki::error::Error;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

/// DER OIDs for `CKA_EC_PARAMS`.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Attributes every private or secret key gets.
fn protected(id: &[u8], label: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.to_vec()),
    ]
}

fn public_half(id: &[u8], label: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.to_vec()),
    ]
}

/// Unwraps a DER OCTET STRING around an EC point if present (PKCS#11 2.40 says
/// `CKA_EC_POINT` is DER-encoded; some devices return the raw point).
fn unwrap_octet_string(v: &[u8], raw_len: usize) -> Vec<u8> {
    if v.len() == raw_len {
        return v.to_vec();
    }
    match v {
        [0x04, len, rest @ ..] if *len as usize == rest.len() && rest.len() == raw_len => {
            rest.to_vec()
        }
        [0x04, 0x81, len, rest @ ..] if *len as usize == rest.len() && rest.len() == raw_len => {
            rest.to_vec()
        }
        _ => v.to_vec(),
    }
}

impl Pkcs11Backend {
    pub(super) fn generate_key(&self, spec: &KeySpec) -> Result<Vec<u8>, HardwareError> {
        let mut id = vec![0u8; 16];
        self.pool.with_session("generating a key id", &mut |s| {
            s.generate_random_slice(&mut id)
        })?;
        let label = if self.profile.quirks.unique_labels {
            format!("{}-{}", spec.label, super::encode_hex(&id[..4]))
        } else {
            spec.label.clone()
        };
        let label = label.as_bytes();
        let alg = spec.algorithm;
        self.pool.with_session("generating a key", &mut |s| {
            // Taken with the session already in hand: a thread holding the guard must
            // never wait for a session that a searching thread holds.
            let _guard = self.change_guard();
            match alg {
                Algorithm::HS256 => {
                    let mut t = protected(&id, label);
                    t.extend([
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(32.into()),
                        Attribute::Sign(true),
                        Attribute::Verify(true),
                    ]);
                    s.generate_key(&Mechanism::GenericSecretKeyGen, &t)?;
                }
                Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => {
                    let (mech, params) = match alg {
                        Algorithm::ES256 => (Mechanism::EccKeyPairGen, P256_PARAMS),
                        Algorithm::ES384 => (Mechanism::EccKeyPairGen, P384_PARAMS),
                        _ => (Mechanism::EccEdwardsKeyPairGen, ED25519_PARAMS),
                    };
                    let mut public = public_half(&id, label);
                    public.push(Attribute::EcParams(params.to_vec()));
                    let mut private = protected(&id, label);
                    private.push(Attribute::Sign(true));
                    s.generate_key_pair(&mech, &public, &private)?;
                }
                rsa => {
                    let bits = rsa.rsa_bits().unwrap_or(2048);
                    let mut public = public_half(&id, label);
                    public.extend([
                        Attribute::ModulusBits(u64::from(bits).into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    ]);
                    let mut private = protected(&id, label);
                    private.push(Attribute::Sign(true));
                    s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
                }
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// Finds one object by class and `CKA_ID`, through the handle cache.
    pub(super) fn find(
        &self,
        s: &Session,
        class: ObjectClass,
        id: &[u8],
    ) -> Result<Option<ObjectHandle>, Error> {
        let generation = self.pool.generation();
        let slot = &self.handles[class_slot(class)];
        if let Ok(cache) = slot.read() {
            if let Some((g, h)) = cache.get(id) {
                if *g == generation {
                    return Ok(Some(*h));
                }
            }
        }
        let found = {
            let _guard = self.lookup_guard();
            s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?
        };
        let handle = found.first().copied();
        if let (Some(h), Ok(mut cache)) = (handle, slot.write()) {
            cache.insert(id.to_vec(), (generation, h));
        }
        Ok(handle)
    }

    /// Drops a cached handle after the device said it is stale.
    pub(super) fn forget(&self, class: ObjectClass, id: &[u8]) {
        if let Ok(mut cache) = self.handles[class_slot(class)].write() {
            cache.remove(id);
        }
    }

    /// Runs `op` on the object, re-finding it if the cached handle went stale.
    ///
    /// A find that comes back empty is not yet a missing key: SoftHSM keeps its objects
    /// in files that every process sharing the token directory rewrites (another
    /// replica, `pkcs11-tool` logging in), and a process can lose sight of them until
    /// the module is initialised again. So a miss first logs in again if the token
    /// forgot the login (private objects are invisible without one), then has the pool
    /// re-read the token
    /// ([`SessionPool::recover_after_miss`](super::sessions::SessionPool::recover_after_miss))
    /// and looks once more (docs/operations.md, "Recovering from a vanished token").
    pub(super) fn with_object<T>(
        &self,
        what: &str,
        class: ObjectClass,
        id: &[u8],
        op: &mut dyn FnMut(&Session, ObjectHandle) -> Result<T, Error>,
    ) -> Result<T, HardwareError> {
        self.with_object_recovering(what, class, id, op, true)
    }

    /// [`Self::with_object`] for a lookup where a miss is an answer, not a sign of trouble
    /// (attestation asks for a private key first, then a secret key): it never re-reads
    /// the token, so such lookups cannot make the module re-initialise.
    pub(super) fn with_object_if_present<T>(
        &self,
        what: &str,
        class: ObjectClass,
        id: &[u8],
        op: &mut dyn FnMut(&Session, ObjectHandle) -> Result<T, Error>,
    ) -> Result<T, HardwareError> {
        self.with_object_recovering(what, class, id, op, false)
    }

    fn with_object_recovering<T>(
        &self,
        what: &str,
        class: ObjectClass,
        id: &[u8],
        op: &mut dyn FnMut(&Session, ObjectHandle) -> Result<T, Error>,
        recover_on_miss: bool,
    ) -> Result<T, HardwareError> {
        let missing = || {
            HardwareError::KeyNotFound(format!(
                "{what}: no {class} object with id {}",
                super::encode_hex(id)
            ))
        };
        let mut recovered = !recover_on_miss;
        let mut stale_retried = false;
        loop {
            let generation = self.pool.generation();
            let result = self
                .pool
                .with_session(what, &mut |s| match self.find(s, class, id)? {
                    Some(h) => op(s, h).map(Some),
                    // Private objects are invisible without a login: if the token dropped
                    // it, log in again and look once more.
                    None if self.pool.login_again_if_forgotten(s)? => {
                        match self.find(s, class, id)? {
                            Some(h) => op(s, h).map(Some),
                            None => Ok(None),
                        }
                    }
                    None => Ok(None),
                });
            match result {
                Ok(Some(v)) => return Ok(v),
                Ok(None) if !recovered => {
                    recovered = true;
                    self.pool.recover_after_miss(generation)?;
                }
                Ok(None) => return Err(missing()),
                Err(HardwareError::KeyNotFound(m)) if !stale_retried => {
                    tracing::debug!(message = %m, "stale object handle; finding again");
                    stale_retried = true;
                    self.forget(class, id);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn read_public_key(&self, id: &[u8]) -> Result<PublicKey, HardwareError> {
        let attrs = match self.with_object(
            "reading a public key",
            ObjectClass::PUBLIC_KEY,
            id,
            &mut |s, h| {
                s.get_attributes(
                    h,
                    &[
                        AttributeType::KeyType,
                        AttributeType::EcParams,
                        AttributeType::EcPoint,
                        AttributeType::Modulus,
                        AttributeType::PublicExponent,
                    ],
                )
            },
        ) {
            Ok(a) => a,
            Err(HardwareError::KeyNotFound(m)) => {
                // A secret key has no public half: say so instead of "not found".
                let secret = self.with_object(
                    "checking for a secret key",
                    ObjectClass::SECRET_KEY,
                    id,
                    &mut |_, _| Ok(()),
                );
                return Err(match secret {
                    Ok(()) => HardwareError::NotSupported("a secret key has no public key".into()),
                    Err(_) => HardwareError::KeyNotFound(m),
                });
            }
            Err(e) => return Err(e),
        };
        let mut key_type = None;
        let (mut params, mut point, mut n, mut e) = (None, None, None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(k) => key_type = Some(k),
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        let missing = |what: &str| HardwareError::Failure(format!("public key lacks {what}"));
        match key_type {
            Some(KeyType::EC) => {
                let params = params.ok_or_else(|| missing("CKA_EC_PARAMS"))?;
                let point = point.ok_or_else(|| missing("CKA_EC_POINT"))?;
                let (alg, len) = if params == P256_PARAMS {
                    (Algorithm::ES256, 65)
                } else if params == P384_PARAMS {
                    (Algorithm::ES384, 97)
                } else {
                    return Err(HardwareError::NotSupported("unknown EC curve".into()));
                };
                PublicKey::ec(alg, unwrap_octet_string(&point, len))
            }
            Some(KeyType::EC_EDWARDS) => {
                let point = point.ok_or_else(|| missing("CKA_EC_POINT"))?;
                PublicKey::ed25519(unwrap_octet_string(&point, 32))
            }
            Some(KeyType::RSA) => {
                let n = n.ok_or_else(|| missing("CKA_MODULUS"))?;
                let e = e.ok_or_else(|| missing("CKA_PUBLIC_EXPONENT"))?;
                let bits = (n.iter().skip_while(|b| **b == 0).count() * 8) as u32;
                // The signing scheme (RS vs PS) is not a key property; callers that care
                // re-tag it with their ring's algorithm.
                let alg = if bits > 2048 {
                    Algorithm::RS256_3072
                } else {
                    Algorithm::RS256
                };
                Ok(PublicKey::rsa(alg, &n, &e))
            }
            _ => Err(HardwareError::NotSupported(
                "unsupported public key type".into(),
            )),
        }
    }

    pub(super) fn destroy_objects(&self, id: &[u8]) -> Result<(), HardwareError> {
        let mut destroyed = 0;
        for class in [
            ObjectClass::PRIVATE_KEY,
            ObjectClass::PUBLIC_KEY,
            ObjectClass::SECRET_KEY,
        ] {
            self.forget(class, id);
            let n = self.pool.with_session("destroying a key", &mut |s| {
                let _guard = self.change_guard();
                let found =
                    s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
                for h in &found {
                    match s.destroy_object(*h) {
                        Ok(()) => {}
                        Err(e) if is_stale_handle(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(found.len())
            })?;
            destroyed += n;
        }
        if destroyed == 0 {
            return Err(HardwareError::KeyNotFound(format!(
                "no object with id {}",
                super::encode_hex(id)
            )));
        }
        Ok(())
    }
}
