//! `GET /api/v1/keys/{ring}/versions/{version}/attestation` (docs/attestation.md).

use crate::app::key_attestation;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiPath, Caller};
use crate::http::{detached, AppState};
use crate::keys::attestation::{Attestation, AttestationEvidence};
use crate::runtime::now;
use axum::extract::{Query, State};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Query of the attestation endpoint.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttestationQuery {
    /// The relying party's freshness value, base64url without padding, at most 64
    /// bytes. A TPM signs it into `extraData`; a PKCS#11 statement carries it.
    pub nonce: Option<String>,
}

/// A TPM2_Certify of the key by the TPM's attestation key. Binary fields are base64
/// (standard alphabet, padded), in TPM wire format.
#[derive(Serialize, ToSchema)]
pub struct TpmAttestationView {
    /// `TPMS_ATTEST` of type `TPM_ST_ATTEST_CERTIFY`: the bytes the AK signed.
    pub certify_info: String,
    /// `TPMT_SIGNATURE` over `certify_info`.
    pub signature: String,
    /// The same signature as DER ECDSA-Sig-Value (`openssl dgst -sha256 -verify`).
    pub signature_der: String,
    /// `ecdsa-p256-sha256`.
    pub signature_algorithm: String,
    /// The AK's `TPM2B_PUBLIC`.
    pub ak_public: String,
    /// The AK's public key, PEM SubjectPublicKeyInfo.
    pub ak_public_key_pem: String,
    /// The AK's TPM name, hex.
    pub ak_name: String,
    /// When keygate first recorded this AK (RFC 3339).
    pub ak_recorded_at: String,
    /// The key's `TPM2B_PUBLIC` as the TPM reported it.
    pub key_public: String,
    /// The key's TPM name, hex; `certify_info` certifies exactly this name.
    pub key_name: String,
    /// EK certificates from the TPM's NV, PEM; empty when the TPM has none.
    pub ek_certificates: Vec<String>,
}

/// A PKCS#11 key's attributes read back from the token, signed by the audit ring.
#[derive(Serialize, ToSchema)]
pub struct Pkcs11AttestationView {
    /// The attributes as the token reported them.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// The exact JSON statement the audit ring signed, base64.
    pub statement: String,
    /// Compact JWS of `statement` (its payload) by the audit ring.
    pub jws: String,
    pub audit_kid: String,
    pub audit_algorithm: String,
    /// The audit ring's public key, PEM; also at `/api/v1/audit/keys`.
    pub audit_public_key_pem: String,
}

/// Evidence that a key version was generated in hardware and cannot leave it.
#[derive(Serialize, ToSchema)]
pub struct AttestationView {
    pub ring: String,
    pub version: i64,
    pub kid: String,
    pub algorithm: String,
    pub state: String,
    pub backend: String,
    /// `tpm` or `pkcs11`.
    pub backend_kind: String,
    /// `tpm2-certify` or `pkcs11-attributes`.
    pub format: String,
    /// The version's public key, PEM SubjectPublicKeyInfo (absent for MAC keys).
    pub public_key_pem: Option<String>,
    /// The nonce, base64url without padding.
    pub nonce: String,
    pub tpm: Option<TpmAttestationView>,
    pub pkcs11: Option<Pkcs11AttestationView>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl From<Attestation> for AttestationView {
    fn from(a: Attestation) -> Self {
        let (format, tpm, pkcs11) = match a.evidence {
            AttestationEvidence::Tpm {
                certification: c,
                ak_recorded_at,
            } => (
                "tpm2-certify",
                Some(TpmAttestationView {
                    certify_info: STANDARD.encode(&c.certify_info),
                    signature: STANDARD.encode(&c.signature),
                    signature_der: STANDARD.encode(&c.signature_der),
                    signature_algorithm: "ecdsa-p256-sha256".into(),
                    ak_public: STANDARD.encode(&c.ak_public),
                    ak_public_key_pem: pem("PUBLIC KEY", &c.ak_spki),
                    ak_name: hex(&c.ak_name),
                    ak_recorded_at: crate::http::time_fmt::rfc3339(ak_recorded_at),
                    key_public: STANDARD.encode(&c.key_public),
                    key_name: hex(&c.key_name),
                    ek_certificates: c
                        .ek_certificates
                        .iter()
                        .map(|d| pem("CERTIFICATE", d))
                        .collect(),
                }),
                None,
            ),
            AttestationEvidence::Pkcs11 {
                attributes,
                statement,
                jws,
                audit_kid,
                audit_algorithm,
                audit_public_key_spki,
            } => (
                "pkcs11-attributes",
                None,
                Some(Pkcs11AttestationView {
                    attributes: serde_json::to_value(&attributes).unwrap_or_default(),
                    statement: STANDARD.encode(&statement),
                    jws,
                    audit_kid,
                    audit_algorithm,
                    audit_public_key_pem: pem("PUBLIC KEY", &audit_public_key_spki),
                }),
            ),
        };
        AttestationView {
            ring: a.ring,
            version: a.version,
            kid: a.kid,
            algorithm: a.algorithm,
            state: a.state,
            backend: a.backend,
            backend_kind: a.backend_kind,
            format: format.into(),
            public_key_pem: a.public_key_spki.as_deref().map(|d| pem("PUBLIC KEY", d)),
            nonce: URL_SAFE_NO_PAD.encode(&a.nonce),
            tpm,
            pkcs11,
        }
    }
}

/// Parses the `nonce` query value.
pub fn parse_nonce(nonce: Option<&str>) -> Result<Vec<u8>, String> {
    match nonce {
        None => Ok(Vec::new()),
        Some(n) => {
            let bytes = URL_SAFE_NO_PAD
                .decode(n.trim_end_matches('='))
                .map_err(|e| format!("nonce must be base64url: {e}"))?;
            if bytes.len() > crate::hardware::attestation::MAX_NONCE {
                return Err(format!(
                    "nonce is {} bytes; at most {}",
                    bytes.len(),
                    crate::hardware::attestation::MAX_NONCE
                ));
            }
            Ok(bytes)
        }
    }
}

/// Hardware evidence about one key version: a TPM2_Certify by the TPM's attestation key,
/// or a PKCS#11 key's attributes signed by the audit ring. Needs `view` on the ring. 409
/// for a destroyed version; 400 for a backend without attestation.
#[utoipa::path(get, path = "/api/v1/keys/{ring}/versions/{version}/attestation", tag = "keys",
    params(("ring" = String, Path), ("version" = i64, Path), AttestationQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = AttestationView),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 503, body = Problem)))]
pub async fn attest(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((ring, version)): ApiPath<(String, i64)>,
    query: Result<Query<AttestationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AttestationView>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let nonce = parse_nonce(q.nonce.as_deref()).map_err(ApiError::bad_request)?;
    let rt = state.rt.clone();
    let a = detached(async move {
        key_attestation::attest(&rt, &caller, &ring, version, nonce, now()).await
    })
    .await?;
    Ok(Json(AttestationView::from(a)))
}
