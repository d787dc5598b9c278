//! A test PKI made in the test with rcgen: roots, intermediates, client certificates and
//! CRLs, written to files a keygate configuration can name.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

/// A certificate authority (root or intermediate) with its key, and the PEM of the
/// intermediates between it and its root.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    pub serial: SerialNumber,
    /// Intermediates above and including this CA (empty for a root), leaf side first.
    pub chain: Vec<String>,
}

/// A client certificate and key.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    pub serial: SerialNumber,
    pub chain: Vec<String>,
}

/// What a client certificate should look like.
pub struct LeafSpec<'a> {
    pub cn: &'a str,
    pub expired: bool,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    pub emails: Vec<&'a str>,
}

impl<'a> LeafSpec<'a> {
    pub fn client(cn: &'a str) -> Self {
        LeafSpec {
            cn,
            expired: false,
            ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
            emails: Vec::new(),
        }
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(30);
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    p
}

impl Ca {
    pub fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = ca_params(cn);
        let serial = serial();
        p.serial_number = Some(serial.clone());
        p.use_authority_key_identifier_extension = false;
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
            serial,
            chain: Vec::new(),
        }
    }

    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = ca_params(cn);
        let serial = serial();
        p.serial_number = Some(serial.clone());
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ca {
            cert,
            key,
            serial,
            chain,
        }
    }

    pub fn leaf(&self, spec: LeafSpec<'_>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, spec.cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = spec.ekus;
        p.subject_alt_names = spec
            .emails
            .iter()
            .map(|e| rcgen::SanType::Rfc822Name(e.to_string().try_into().unwrap()))
            .collect();
        let now = OffsetDateTime::now_utc();
        if spec.expired {
            p.not_before = now - Duration::days(10);
            p.not_after = now - Duration::days(1);
        } else {
            p.not_before = now - Duration::days(1);
            p.not_after = now + Duration::days(10);
        }
        p.use_authority_key_identifier_extension = true;
        let serial = serial();
        p.serial_number = Some(serial.clone());
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert,
            key,
            serial,
            chain: self.chain.clone(),
        }
    }

    /// A CRL revoking `revoked`, valid until `next_update` (in the past for a stale one).
    pub fn crl(&self, revoked: &[&SerialNumber], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        let this_update = (next_update - Duration::days(2)).min(now - Duration::minutes(5));
        CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: (*s).clone(),
                    revocation_time: now - Duration::minutes(10),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// A fresh CRL (next update tomorrow).
    pub fn fresh_crl(&self, revoked: &[&SerialNumber]) -> String {
        self.crl(revoked, OffsetDateTime::now_utc() + Duration::days(1))
    }

    /// A CRL whose nextUpdate passed an hour ago.
    pub fn stale_crl(&self) -> String {
        self.crl(&[], OffsetDateTime::now_utc() - Duration::hours(1))
    }
}

impl Leaf {
    /// Certificate, intermediates and PKCS#8 key in one PEM, as `reqwest::Identity` takes.
    pub fn identity_pem(&self) -> String {
        let mut s = self.cert.pem();
        for c in &self.chain {
            s.push_str(c);
        }
        s.push_str(&self.key.serialize_pem());
        s
    }

    pub fn serial_hex(&self) -> String {
        self.serial
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
