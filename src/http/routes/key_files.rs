//! API key files (`/api/v1/key-files`).
//!
//! Create and regenerate answer with the key file itself. Its `accessKey` (the private
//! key PEM) is serialized into one buffer that is zeroized when the response body is
//! dropped after writing; list and get never carry key material.

use crate::hardware::Algorithm;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::time_fmt::rfc3339;
use crate::http::{detached, AppState};
use crate::runtime::now;
use crate::services::authz::Role;
use crate::services::key_files::{KeyFile, KeyFileDocument, KeyFilePatch, NewKeyFile, Rekey};
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// A key file's metadata; never key material.
#[derive(Serialize, ToSchema)]
pub struct KeyFileView {
    pub access_id: String,
    pub customer_name: String,
    pub description: String,
    pub role: Role,
    pub algorithm: Algorithm,
    /// `generated` (keygate made the pair and returned the private key once) or `client`
    /// (the client sent its public key).
    pub key_source: String,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
}

impl From<KeyFile> for KeyFileView {
    fn from(f: KeyFile) -> Self {
        KeyFileView {
            access_id: f.access_id,
            customer_name: f.customer_name,
            description: f.description,
            role: f.role,
            algorithm: f.algorithm,
            key_source: f.key_source,
            created_by: f.created_by,
            created_at: rfc3339(f.created_at),
            updated_at: rfc3339(f.updated_at),
            last_used_at: f.last_used_at.map(rfc3339),
        }
    }
}

/// The key file as the client stores it (`docs/key-files.md`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyFileJson<'a> {
    pub customer_name: &'a str,
    #[serde(rename = "accessID")]
    pub access_id: &'a str,
    pub description: &'a str,
    /// PKCS#8 PEM private key (encrypted PKCS#8 with a passphrase). Absent for a
    /// bring-your-own-key file. Returned by create and regenerate only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<&'a str>,
    pub admin_rest_api_url: &'a str,
}

/// A response body that is zeroized when hyper drops it after writing.
struct SecretBytes(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Room for an RSA-2048 encrypted PEM plus the longest allowed texts, so serializing
/// never reallocates (which would leave an unzeroized copy behind).
const FILE_BUFFER: usize = 32 * 1024;

pub(crate) fn file_response(
    status: StatusCode,
    doc: KeyFileDocument,
) -> Result<Response, ApiError> {
    let json = KeyFileJson {
        customer_name: &doc.file.customer_name,
        access_id: &doc.file.access_id,
        description: &doc.file.description,
        access_key: doc.access_key.as_ref().map(|k| k.as_str()),
        admin_rest_api_url: &doc.admin_rest_api_url,
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(FILE_BUFFER));
    serde_json::to_writer(&mut *buf, &json).map_err(|e| {
        ApiError::from(crate::services::ServiceError::Internal(format!(
            "serializing the key file: {e}"
        )))
    })?;
    let body = Body::from(bytes::Bytes::from_owner(SecretBytes(buf)));
    Ok((
        status,
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyFile {
    pub description: String,
    pub role: Role,
    pub customer_name: Option<String>,
    /// Encrypts `accessKey` (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC). 12 to 1024
    /// characters.
    #[schema(value_type = Option<String>)]
    pub passphrase: Option<SecretString>,
    /// Bring your own key: an SPKI PEM (P-256 or RSA 2048-4096). No `accessKey` is
    /// returned then.
    pub public_key_pem: Option<String>,
    /// ES256 (default) or RS256.
    pub algorithm: Option<Algorithm>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RegenerateKeyFile {
    #[schema(value_type = Option<String>)]
    pub passphrase: Option<SecretString>,
    pub public_key_pem: Option<String>,
    /// Defaults to the file's current algorithm.
    pub algorithm: Option<Algorithm>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyFile {
    pub description: Option<String>,
    pub role: Option<Role>,
}

/// Creates a key file and returns it once, with its private `accessKey` unless the
/// client sent its own public key.
#[utoipa::path(post, path = "/api/v1/key-files", tag = "key-files", request_body = CreateKeyFile,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = KeyFileJson),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem),
              (status = 409, description = "key_files.max reached", body = Problem),
              (status = 503, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(req): ApiJson<CreateKeyFile>,
) -> Result<Response, ApiError> {
    let rt = state.rt.clone();
    let doc = detached(async move {
        crate::app::key_files::create(
            &rt,
            &caller,
            NewKeyFile {
                description: req.description,
                role: Some(req.role),
                customer_name: req.customer_name,
                passphrase: req.passphrase,
                public_key_pem: req.public_key_pem,
                algorithm: req.algorithm,
            },
            now(),
        )
        .await
    })
    .await?;
    file_response(StatusCode::CREATED, doc)
}

/// Every key file's metadata.
#[utoipa::path(get, path = "/api/v1/key-files", tag = "key-files",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = [KeyFileView]),
              (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<KeyFileView>>, ApiError> {
    let files = crate::app::key_files::list(&state.rt, &caller).await?;
    Ok(Json(files.into_iter().map(KeyFileView::from).collect()))
}

/// One key file's metadata.
#[utoipa::path(get, path = "/api/v1/key-files/{access_id}", tag = "key-files",
    params(("access_id" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = KeyFileView),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(access_id): ApiPath<String>,
) -> Result<Json<KeyFileView>, ApiError> {
    Ok(Json(
        crate::app::key_files::get(&state.rt, &caller, &access_id)
            .await?
            .into(),
    ))
}

/// Changes the description or role; the key stays.
#[utoipa::path(patch, path = "/api/v1/key-files/{access_id}", tag = "key-files",
    params(("access_id" = String, Path)), request_body = UpdateKeyFile,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = KeyFileView),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(access_id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateKeyFile>,
) -> Result<Json<KeyFileView>, ApiError> {
    let rt = state.rt.clone();
    let f = detached(async move {
        crate::app::key_files::update(
            &rt,
            &caller,
            &access_id,
            KeyFilePatch {
                description: req.description,
                role: req.role,
            },
            now(),
        )
        .await
    })
    .await?;
    Ok(Json(f.into()))
}

/// Replaces the file's key and returns the new file. The previous file, and every
/// token minted with it, stop working at once.
#[utoipa::path(post, path = "/api/v1/key-files/{access_id}/regenerate", tag = "key-files",
    params(("access_id" = String, Path)), request_body(content = Option<RegenerateKeyFile>),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = KeyFileJson),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn regenerate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(access_id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: RegenerateKeyFile = if body.is_empty() {
        RegenerateKeyFile::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?
    };
    let rt = state.rt.clone();
    let doc = detached(async move {
        crate::app::key_files::regenerate(
            &rt,
            &caller,
            &access_id,
            Rekey {
                passphrase: req.passphrase,
                public_key_pem: req.public_key_pem,
                algorithm: req.algorithm,
            },
            now(),
        )
        .await
    })
    .await?;
    file_response(StatusCode::OK, doc)
}

/// Deletes the key file: its assertions and tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/key-files/{access_id}", tag = "key-files",
    params(("access_id" = String, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Deleted"),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(access_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let rt = state.rt.clone();
    detached(async move { crate::app::key_files::delete(&rt, &caller, &access_id).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
