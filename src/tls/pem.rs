//! Reading certificates and CRLs from PEM (or DER) text, with the checks every source
//! needs: a CA bundle must hold at least one certificate, every certificate must parse,
//! and a file meant to hold certificates must never hold a private key.

use super::TlsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use spki::der::Decode;

/// Certificates from PEM text, in order. `what` names the source in errors.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    refuse_private_keys(pem, what)?;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| TlsError::Invalid(format!("{what}: not valid PEM: {e}")))?;
        x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| {
            TlsError::Invalid(format!(
                "{what}: certificate {} does not parse: {e}",
                out.len() + 1
            ))
        })?;
        out.push(der);
    }
    if out.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{what}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
        )));
    }
    Ok(out)
}

/// Refuses text that carries a private key of any kind (PKCS#8, encrypted PKCS#8, PKCS#1,
/// SEC1): a CA bundle or a certificate chain is public, and a key in it is a mistake that
/// must not be stored or served.
pub fn refuse_private_keys(pem: &[u8], what: &str) -> Result<(), TlsError> {
    let text = String::from_utf8_lossy(pem);
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("-----BEGIN") && l.contains("PRIVATE KEY"))
    {
        return Err(TlsError::Invalid(format!(
            "{what} contains a private key; give only certificates (and keep that key secret)"
        )));
    }
    Ok(())
}

/// A parsed CRL: its DER and its nextUpdate (seconds since the epoch), if it has one.
#[derive(Debug, Clone)]
pub struct Crl {
    pub der: CertificateRevocationListDer<'static>,
    pub next_update: Option<i64>,
    pub issuer: String,
}

/// One CRL from PEM (`-----BEGIN X509 CRL-----`) or DER bytes.
pub fn crl(bytes: &[u8], what: &str) -> Result<Crl, TlsError> {
    let der = if bytes.starts_with(b"-----") || bytes.trim_ascii_start().starts_with(b"-----") {
        CertificateRevocationListDer::from_pem_slice(bytes)
            .map_err(|e| TlsError::Invalid(format!("{what}: not a PEM X509 CRL: {e}")))?
    } else {
        CertificateRevocationListDer::from(bytes.to_vec())
    };
    let list = x509_cert::crl::CertificateList::from_der(der.as_ref())
        .map_err(|e| TlsError::Invalid(format!("{what}: CRL does not parse: {e}")))?;
    let next_update = list
        .tbs_cert_list
        .next_update
        .map(|t| i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX));
    Ok(Crl {
        der,
        next_update,
        issuer: list.tbs_cert_list.issuer.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_with_any_kind_of_private_key_is_refused() {
        for label in [
            "PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
        ] {
            let pem = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
            let e = certificates(pem.as_bytes(), "ca").unwrap_err().to_string();
            assert!(e.contains("private key"), "{label}: {e}");
        }
    }

    #[test]
    fn text_without_certificates_or_with_a_broken_one_is_refused() {
        assert!(certificates(b"hello", "ca").is_err());
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = certificates(broken, "ca").unwrap_err().to_string();
        assert!(e.contains("does not parse"), "{e}");
        assert!(crl(b"garbage", "crl").is_err());
    }
}
