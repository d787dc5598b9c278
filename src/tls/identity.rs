//! keygate's own HTTPS identity: the `tls-identity` key ring in hardware, certificates and
//! CSRs signed by that key (rcgen over [`HardwareSigningKey`]), and the certificate chain
//! file the server presents.
//!
//! The private key is generated in the device and never leaves it. Whatever chain is
//! served or installed, its leaf must carry exactly the hardware key's public key: a
//! chain for another key would make every handshake fail, so it is refused up front.

use super::pem;
use super::signer::HardwareSigningKey;
use super::TlsError;
use crate::clock::now;
use crate::hardware::{Algorithm, PublicKey};
use crate::keys::KeyRegistry;
use crate::keys::KeyVersion;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use serde::Serialize;
use spki::der::{Decode, Encode};
use std::path::Path;
use std::sync::Arc;

/// The key ring holding the HTTPS identity.
pub const TLS_IDENTITY_RING: &str = crate::keys::ReservedRing::TlsIdentity.name();

/// What a certificate says about itself, for logs, the CLI and the reload report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_after: String,
    /// Certificates in the chain, leaf first.
    pub chain_length: usize,
}

/// Parses `CN=...,O=...` into a distinguished name (CN, O, OU, C, ST, L; no escaped
/// commas).
pub fn parse_subject(subject: &str) -> Result<DistinguishedName, TlsError> {
    let mut dn = DistinguishedName::new();
    for part in subject.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| TlsError::Invalid(format!("subject part {part:?} is not KEY=value")))?;
        let ty = match k.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            other => {
                return Err(TlsError::Invalid(format!(
                    "subject attribute {other:?} is not one of CN, O, OU, C, ST, L"
                )))
            }
        };
        dn.push(ty, v.trim());
    }
    if dn.get(&DnType::CommonName).is_none() {
        return Err(TlsError::Invalid("the subject needs a CN=...".into()));
    }
    Ok(dn)
}

/// Parses `DNS:name`, `IP:addr`, `URI:uri` and `EMAIL:addr` entries (comma-separated).
pub fn parse_sans(items: &[String]) -> Result<Vec<SanType>, TlsError> {
    let mut out = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once(':').ok_or_else(|| {
            TlsError::Invalid(format!(
                "SAN {item:?} must be DNS:..., IP:..., URI:... or EMAIL:..."
            ))
        })?;
        let bad = |e: rcgen::Error| TlsError::Invalid(format!("SAN {item:?}: {e}"));
        let san = match k.to_ascii_uppercase().as_str() {
            "DNS" => SanType::DnsName(v.to_string().try_into().map_err(bad)?),
            "IP" => SanType::IpAddress(
                v.parse()
                    .map_err(|e| TlsError::Invalid(format!("SAN {item:?}: {e}")))?,
            ),
            "URI" => SanType::URI(v.to_string().try_into().map_err(bad)?),
            "EMAIL" => SanType::Rfc822Name(v.to_string().try_into().map_err(bad)?),
            other => {
                return Err(TlsError::Invalid(format!(
                    "SAN type {other:?} is not DNS, IP, URI or EMAIL"
                )))
            }
        };
        out.push(san);
    }
    Ok(out)
}

/// Certificate parameters for a TLS server identity valid for `days` from now.
pub fn server_params(
    subject: DistinguishedName,
    sans: Vec<SanType>,
    days: u32,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
    p.distinguished_name = subject;
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p
}

/// The `tls-identity` ring's active version, created in hardware when missing.
/// Returns the version and whether it was created now.
pub async fn ensure_ring(
    keys: &KeyRegistry,
    algorithm: Algorithm,
    backend: Option<&str>,
    by: &str,
) -> Result<(Arc<KeyVersion>, bool), TlsError> {
    if let Ok(v) = keys.active(TLS_IDENTITY_RING) {
        if v.algorithm != algorithm {
            return Err(TlsError::Identity(format!(
                "{TLS_IDENTITY_RING} exists with {} (asked for {algorithm}); the existing key is kept",
                v.algorithm
            )));
        }
        return Ok((v, false));
    }
    if algorithm.is_mac() || algorithm == Algorithm::EdDSA {
        return Err(TlsError::Invalid(format!(
            "{algorithm} cannot be a TLS identity; use ES256, ES384, RS256 or PS256"
        )));
    }
    let backend = match backend {
        Some(b) => b.to_string(),
        None => keys.active(crate::keys::JWT_DEFAULT_RING)?.backend.clone(),
    };
    let v = keys
        .create_ring(TLS_IDENTITY_RING, algorithm, &backend, by, now())
        .await?;
    Ok((v, true))
}

fn public_of(v: &KeyVersion) -> Result<PublicKey, TlsError> {
    v.public_key.clone().ok_or_else(|| {
        TlsError::Identity(format!(
            "{} v{} has no public key on record",
            v.ring, v.version
        ))
    })
}

/// The rustls signing key over the ring's active version.
pub fn signing_key(keys: &KeyRegistry, v: &KeyVersion) -> Result<HardwareSigningKey, TlsError> {
    let exec = keys.backend(&v.backend)?.clone();
    Ok(HardwareSigningKey::new(
        exec,
        v.locator.clone(),
        public_of(v)?,
    )?)
}

/// Runs rcgen (whose signature calls block on the hardware pool) off the async workers.
async fn with_rcgen<T: Send + 'static>(
    key: HardwareSigningKey,
    f: impl FnOnce(&rcgen::KeyPair) -> Result<T, rcgen::Error> + Send + 'static,
) -> Result<T, TlsError> {
    tokio::task::spawn_blocking(move || {
        let kp = key
            .rcgen_key_pair()
            .map_err(|e| TlsError::Invalid(format!("key: {e}")))?;
        f(&kp).map_err(|e| TlsError::Invalid(format!("rcgen: {e}")))
    })
    .await
    .map_err(|e| TlsError::Invalid(format!("certificate task failed: {e}")))?
}

/// A self-signed certificate (PEM) whose signature is made by the hardware key.
pub async fn self_signed(
    key: HardwareSigningKey,
    params: CertificateParams,
) -> Result<String, TlsError> {
    with_rcgen(key, move |kp| params.self_signed(kp).map(|c| c.pem())).await
}

/// A PKCS#10 CSR (PEM) signed by the hardware key. The CA decides the serial number and
/// basic constraints, so the request carries neither.
pub async fn csr(
    key: HardwareSigningKey,
    mut params: CertificateParams,
) -> Result<String, TlsError> {
    params.is_ca = IsCa::NoCa;
    params.serial_number = None;
    with_rcgen(key, move |kp| params.serialize_request(kp)?.pem()).await
}

/// Writes `text` to `path` atomically (temporary file, then rename), creating the
/// directory.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), TlsError> {
    let io = |e: std::io::Error| TlsError::Io(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// SPKI DER of a certificate.
fn spki_of(cert: &CertificateDer<'_>) -> Result<(x509_cert::Certificate, Vec<u8>), TlsError> {
    let c = x509_cert::Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::Invalid(format!("certificate: {e}")))?;
    let spki = c
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| TlsError::Invalid(format!("certificate key: {e}")))?;
    Ok((c, spki))
}

/// Checks that `chain` is leaf first, each certificate issued by the next, and that the
/// leaf's key is `spki`. Returns its summary.
pub fn check_chain(chain: &[CertificateDer<'_>], spki: &[u8]) -> Result<CertSummary, TlsError> {
    let mut parsed = Vec::with_capacity(chain.len());
    for c in chain {
        parsed.push(spki_of(c)?);
    }
    let Some((leaf, leaf_spki)) = parsed.first() else {
        return Err(TlsError::Invalid("the chain holds no certificate".into()));
    };
    if leaf_spki.as_slice() != spki {
        return Err(TlsError::Identity(
            "the certificate's public key is not the hardware key of tls-identity; it was issued for another key".into(),
        ));
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].0.tbs_certificate.issuer != pair[1].0.tbs_certificate.subject {
            return Err(TlsError::Invalid(format!(
                "certificate {} was not issued by certificate {} (the chain must be leaf first, then each issuer)",
                i + 1,
                i + 2
            )));
        }
    }
    Ok(summary(leaf, chain.len()))
}

fn summary(c: &x509_cert::Certificate, chain_length: usize) -> CertSummary {
    let tbs = &c.tbs_certificate;
    let not_after = i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs())
        .map(crate::clock::rfc3339)
        .unwrap_or_default();
    CertSummary {
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        serial: tbs
            .serial_number
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_after,
        chain_length,
    }
}

/// Installs a CA-signed chain for the hardware key: the leaf's public key must equal the
/// key read from the device now (not only the cached copy).
pub async fn install_cert(
    keys: &KeyRegistry,
    chain_pem: &[u8],
    cert_file: &Path,
) -> Result<CertSummary, TlsError> {
    let chain = pem::certificates(chain_pem, "certificate chain")?;
    let v = keys.active(TLS_IDENTITY_RING).map_err(|_| {
        TlsError::Identity("no tls-identity ring; run `keygate tls init` first".into())
    })?;
    let (loc, alg) = (v.locator.clone(), v.algorithm);
    let device = keys
        .backend(&v.backend)?
        .run("public_key", move |b| b.public_key(&loc))
        .await?;
    let device_spki = PublicKey {
        algorithm: alg,
        ..device
    }
    .spki_der()?;
    let summary = check_chain(&chain, &device_spki)?;
    let text = String::from_utf8_lossy(chain_pem).into_owned();
    write_atomically(cert_file, &text)?;
    Ok(summary)
}

/// The served identity: the chain in `cert_file` over the hardware key.
pub fn certified_key(
    keys: &KeyRegistry,
    cert_file: &Path,
) -> Result<(CertifiedKey, CertSummary), TlsError> {
    let v = keys.active(TLS_IDENTITY_RING).map_err(|_| {
        TlsError::Identity(
            "no tls-identity ring; run `keygate tls init` (or `serve --dev`, or pass --insecure-http on loopback)".into(),
        )
    })?;
    let bytes = std::fs::read(cert_file).map_err(|e| {
        TlsError::Identity(format!(
            "cannot read tls.cert_file {}: {e} (run `keygate tls init` or `keygate tls install-cert`)",
            cert_file.display()
        ))
    })?;
    let chain = pem::certificates(&bytes, &format!("tls.cert_file {}", cert_file.display()))?;
    let key = signing_key(keys, &v)?;
    let summary = check_chain(&chain, key.spki())?;
    let ck = CertifiedKey::new(chain, Arc::new(key));
    ck.keys_match()
        .map_err(|e| TlsError::Identity(format!("certificate and hardware key: {e}")))?;
    Ok((ck, summary))
}

/// For `serve --dev`: makes the identity when missing (an ES256 key in the dev token and
/// a self-signed certificate for localhost, 127.0.0.1 and ::1). Returns what it created.
/// An existing key, and a certificate that fits it, are kept.
pub async fn ensure_dev_identity(
    keys: &KeyRegistry,
    cert_file: &Path,
) -> Result<Vec<String>, TlsError> {
    let mut created = Vec::new();
    // An existing key is used whatever its algorithm (`tls init --algorithm PS256`, say).
    let (v, made) = match keys.active(TLS_IDENTITY_RING) {
        Ok(v) => (v, false),
        Err(_) => ensure_ring(keys, Algorithm::ES256, None, crate::names::ROOT_PRINCIPAL).await?,
    };
    if made {
        created.push(format!("{TLS_IDENTITY_RING} key (ES256, in the dev token)"));
    }
    let usable = match certified_key(keys, cert_file) {
        Ok(_) => true,
        Err(e) if cert_file.exists() && !made => {
            // An operator's file that does not fit is reported, never overwritten.
            return Err(e);
        }
        Err(_) => false,
    };
    if !usable {
        let params = server_params(
            parse_subject("CN=keygate dev")?,
            parse_sans(&["DNS:localhost,IP:127.0.0.1,IP:::1".to_string()])?,
            365,
        );
        let pem = self_signed(signing_key(keys, &v)?, params).await?;
        write_atomically(cert_file, &pem)?;
        created.push(format!(
            "self-signed dev certificate {}",
            cert_file.display()
        ));
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_sans_parse_and_bad_ones_are_refused() {
        let dn = parse_subject("CN=kg.example, O=Example,C=DE").unwrap();
        assert!(dn.get(&DnType::CommonName).is_some());
        assert!(parse_subject("O=no common name").is_err());
        assert!(parse_subject("XX=what").is_err());
        assert!(parse_subject("CN").is_err());
        let sans =
            parse_sans(&["DNS:a.example,IP:10.0.0.5".into(), "URI:https://x".into()]).unwrap();
        assert_eq!(sans.len(), 3);
        assert!(parse_sans(&["IP:not-an-ip".into()]).is_err());
        assert!(parse_sans(&["FOO:bar".into()]).is_err());
        assert!(parse_sans(&["justaname".into()]).is_err());
    }
}
