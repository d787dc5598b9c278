//! Client-certificate verification across every CA profile: a certificate is accepted
//! when it validates against any one profile (each profile is a rustls-webpki verifier
//! with its own CAs and CRLs; no path validation is written here).

use super::profiles::LoadedProfile;
use super::settings::MtlsMode;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// The profiles in force, as one rustls client verifier.
#[derive(Debug)]
pub struct ProfileSet {
    profiles: Vec<LoadedProfile>,
    hints: Vec<DistinguishedName>,
    mandatory: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ProfileSet {
    pub fn new(
        profiles: Vec<LoadedProfile>,
        mode: MtlsMode,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Self {
        let hints = profiles.iter().flat_map(|p| p.hints.clone()).collect();
        ProfileSet {
            profiles,
            hints,
            mandatory: mode == MtlsMode::Required,
            provider,
        }
    }

    pub fn profiles(&self) -> &[LoadedProfile] {
        &self.profiles
    }

    /// The first profile that accepts this chain now: which profile admitted a connection.
    pub fn identify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<&LoadedProfile> {
        let now = UnixTime::now();
        self.profiles.iter().find(|p| {
            p.verifier
                .verify_client_cert(end_entity, intermediates, now)
                .is_ok()
        })
    }
}

impl ClientCertVerifier for ProfileSet {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut refusals = Vec::with_capacity(self.profiles.len());
        for p in &self.profiles {
            match p
                .verifier
                .verify_client_cert(end_entity, intermediates, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => refusals.push((p.name.as_str(), e)),
            }
        }
        let subject = super::client_identity::names(end_entity.as_ref())
            .map(|n| format!("{} (serial {})", n.subject, n.serial))
            .unwrap_or_else(|| "an unparseable certificate".into());
        let why = if refusals.is_empty() {
            "no CA profile is configured".to_string()
        } else {
            refusals
                .iter()
                .map(|(n, e)| format!("profile {n}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        tracing::warn!(client_cert = %subject, reason = %why, "client certificate refused");
        // The error of the first profile is what the client's alert reflects.
        Err(refusals.into_iter().next().map(|(_, e)| e).unwrap_or(
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
