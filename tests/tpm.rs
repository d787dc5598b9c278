//! The TPM 2.0 backend against swtpm: protection attributes, reset, leaks, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::swtpm::Swtpm;
use keygate::hardware::tpm::{TpmBackend, TpmSettings, DEFAULT_MAX_LOADED};
use keygate::hardware::{Algorithm, Backend, KeySpec};
use keygate::keys::verify::verify_signature;

const MESSAGE: &[u8] = b"keygate: the key never leaves the TPM";

pub fn backend_on(tpm: &Swtpm) -> TpmBackend {
    TpmBackend::new(TpmSettings {
        tcti: tpm.tcti(),
        owner_auth: None,
        max_loaded: DEFAULT_MAX_LOADED,
    })
}

#[test]
fn smoke() {
    let tpm = Swtpm::start();
    let b = backend_on(&tpm);
    b.connect().unwrap();
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        let loc = b
            .generate(&KeySpec {
                algorithm: alg,
                label: "t".into(),
            })
            .unwrap();
        let pk = b.public_key(&loc).unwrap();
        let sig = b.sign(&loc, alg, MESSAGE).unwrap();
        assert!(verify_signature(&pk, alg, MESSAGE, &sig.0), "{alg}");
    }
    let loc = b
        .generate(&KeySpec {
            algorithm: Algorithm::HS256,
            label: "m".into(),
        })
        .unwrap();
    let m = b.mac(&loc, b"x").unwrap();
    assert_eq!(m.0.len(), 32);
}
