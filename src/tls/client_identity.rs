//! The verified client certificate of a connection, as the request handlers see it, and
//! the optional rule that the certificate must name the authenticated principal.
//!
//! The certificate never replaces credentials (`docs/tls.md`): the listener
//! puts a [`ClientCert`] into every request of an mTLS connection, the extractors
//! authenticate the API key or token as always, and then [`check_principal`] applies the
//! profile's `principal_match`, if any.

use super::settings::PrincipalMatch;
use crate::services::{Principal, ServiceError};
use spki::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use spki::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

const OID_CN: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_SAN: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("2.5.29.17");

/// The names a client certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// RFC 4514 form of the subject.
    pub subject: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub cn: Vec<String>,
    pub dns: Vec<String>,
    pub email: Vec<String>,
    pub uri: Vec<String>,
}

/// A client certificate that validated against `profile` during the handshake.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub profile: String,
    pub principal_match: PrincipalMatch,
    pub names: CertNames,
}

fn attr_string(v: &spki::der::Any) -> Option<String> {
    v.decode_as::<Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            v.decode_as::<PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .or_else(|_| {
            v.decode_as::<Ia5StringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .ok()
}

/// Reads the names of a certificate; `None` if it does not parse (it always does once
/// the verifier accepted it).
pub fn names(der: &[u8]) -> Option<CertNames> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = &cert.tbs_certificate;
    let mut out = CertNames {
        subject: tbs.subject.to_string(),
        serial: tbs
            .serial_number
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        ..CertNames::default()
    };
    for rdn in tbs.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == OID_CN {
                if let Some(s) = attr_string(&atv.value) {
                    out.cn.push(s);
                }
            }
        }
    }
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id != OID_SAN {
            continue;
        }
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for n in san.0 {
            match n {
                GeneralName::DnsName(s) => out.dns.push(s.to_string()),
                GeneralName::Rfc822Name(s) => out.email.push(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => out.uri.push(s.to_string()),
                _ => {}
            }
        }
    }
    Some(out)
}

/// Applies the profile's `principal_match` to an authenticated principal: with a rule,
/// the certificate must carry the principal's name in the chosen field, else 403.
pub fn check_principal(
    extensions: &axum::http::Extensions,
    principal: &Principal,
) -> Result<(), ServiceError> {
    let Some(cert) = extensions.get::<ClientCert>() else {
        return Ok(());
    };
    // The handshake accepted the certificate, but no profile accepts it now (a CRL or
    // profile reload in between): refuse rather than skip the profile's name rule.
    if cert.profile.is_empty() {
        tracing::warn!(principal = %principal.name, client_cert.subject = %cert.names.subject,
            client_cert.serial = %cert.names.serial,
            "client certificate no longer validates against any CA profile");
        return Err(ServiceError::Forbidden(
            "the client certificate no longer validates against any CA profile".into(),
        ));
    }
    let (field, values) = match cert.principal_match {
        PrincipalMatch::None => return Ok(()),
        PrincipalMatch::Cn => ("subject CN", &cert.names.cn),
        PrincipalMatch::SanDns => ("DNS SAN", &cert.names.dns),
        PrincipalMatch::SanEmail => ("email SAN", &cert.names.email),
        PrincipalMatch::SanUri => ("URI SAN", &cert.names.uri),
    };
    if values.iter().any(|v| v == &principal.name) {
        return Ok(());
    }
    tracing::warn!(principal = %principal.name, client_cert.subject = %cert.names.subject,
        client_cert.serial = %cert.names.serial, profile = %cert.profile,
        "client certificate does not name the authenticated principal");
    Err(ServiceError::Forbidden(format!(
        "CA profile {:?} requires the client certificate's {field} to equal the authenticated principal",
        cert.profile
    )))
}
