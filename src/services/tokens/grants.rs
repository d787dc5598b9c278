//! The grants of `POST /api/v1/auth/token`: password (opens a session), refresh_token
//! (rotates it, with reuse detection) and custom_token (a caller-chosen subject and
//! lifetime). Refusals are RFC 6749 §5.2 error codes, kept apart from problem+json.

use super::{AccessSpec, Issued, TokenService};
use crate::services::authz::{Permission, Role};
use crate::services::{AuthMethod, Principal, ServiceError};
use crate::store::sessions::{Exchange, NewSession};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

/// An RFC 6749 §5.2 refusal, or a service failure (hardware or store down).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A `custom_token` request.
#[derive(Debug, Clone, Default)]
pub struct CustomRequest {
    pub subject: String,
    pub expires_in: i64,
    pub audience: Vec<String>,
    pub claims: Map<String, Value>,
    pub role: Option<Role>,
}

/// An authenticated local user, as the password check hands it over.
#[derive(Debug, Clone)]
pub struct LoginUser {
    pub username: String,
    pub role: Role,
}

impl TokenService {
    /// An access token of login session `sid`.
    async fn session_access(
        &self,
        username: &str,
        role: Role,
        sid: &str,
        now: i64,
    ) -> Result<String, ServiceError> {
        self.issue_access(
            AccessSpec {
                sub: username,
                role,
                ttl: self.settings.access_ttl,
                extra_aud: Vec::new(),
                sid: Some(sid),
                key_binding: None,
                minted: false,
                extra: Map::new(),
            },
            now,
        )
        .await
    }

    /// Opens a session for a user whose password was just verified, evicting the oldest
    /// of their live sessions beyond `sessions.max_per_user` in the same transaction.
    pub async fn password_login(&self, user: &LoginUser, now: i64) -> Result<Issued, GrantError> {
        let sid = uuid::Uuid::new_v4().to_string();
        let refresh = self.fresh_refresh().await?;
        // Signed before the session is recorded: if signing fails, nothing was evicted.
        let access = self
            .session_access(&user.username, user.role, &sid, now)
            .await?;
        let session = NewSession {
            id: sid.clone(),
            username: user.username.clone(),
            expires_at: now.saturating_add(self.settings.refresh_ttl),
            refresh: refresh.digest,
            max_per_user: self.settings.max_sessions,
            now,
        };
        let evicted = self
            .store
            .open_session(&session)
            .await
            .map_err(ServiceError::from)?;
        self.sessions_ended(&evicted, now);
        super::count_issued("password");
        tracing::info!(user = %user.username, session = %sid, evicted = evicted.len(), "session opened");
        Ok(Issued {
            access_token: access,
            expires_in: self.settings.access_ttl,
            refresh_token: Some(refresh.secret),
            refresh_expires_in: Some(self.settings.refresh_ttl),
        })
    }

    /// Exchanges a refresh token for a new access token and a new refresh token.
    pub async fn refresh(&self, presented: &str, now: i64) -> Result<Issued, GrantError> {
        let invalid =
            || GrantError::InvalidGrant("invalid, expired or revoked refresh token".into());
        // Garbage, a bad checksum or an unknown id ends here with no hardware call.
        let Some(mac) = self.presented_refresh_mac(presented, now).await? else {
            return Err(invalid());
        };
        let info = self
            .store
            .refresh_info(&mac, now)
            .await
            .map_err(ServiceError::from)?;
        if info.is_none() {
            return Err(invalid());
        }
        let next = self.fresh_refresh().await?;
        // Sign before spending the token: if the hardware fails here, nothing has changed
        // and the client's retry with the same refresh token still works. The exchange
        // below re-checks everything atomically; a role that changed in between is
        // signed again.
        let presigned = match info {
            Some(info) if info.active => match info.role.as_deref().map(str::parse::<Role>) {
                Some(Ok(role)) => Some((
                    info.session_id.clone(),
                    role,
                    self.session_access(&info.username, role, &info.session_id, now)
                        .await?,
                )),
                _ => None,
            },
            _ => None,
        };
        let outcome = self
            .store
            .exchange_refresh(&mac, &next.digest, now)
            .await
            .map_err(ServiceError::from)?;
        match outcome {
            Exchange::Rotated {
                session_id,
                username,
                role,
                expires_at,
            } => {
                let role: Role = role
                    .parse()
                    .map_err(|e: String| ServiceError::Internal(format!("user {username}: {e}")))?;
                let access = match presigned {
                    Some((sid, r, token)) if sid == session_id && r == role => token,
                    _ => {
                        self.session_access(&username, role, &session_id, now)
                            .await?
                    }
                };
                Ok(Issued {
                    access_token: access,
                    expires_in: self.settings.access_ttl,
                    refresh_token: Some(next.secret),
                    refresh_expires_in: Some(expires_at.saturating_sub(now)),
                })
            }
            Exchange::Reused { session_id } => {
                self.sessions_ended(std::slice::from_ref(&session_id), now);
                metrics::counter!("keygate_refresh_token_reuse_total").increment(1);
                tracing::warn!(session = %session_id,
                    "a used refresh token was presented again; the session is revoked (RFC 9700)");
                Err(invalid())
            }
            Exchange::Invalid => Err(invalid()),
        }
    }

    /// `client_credentials` with a key-file assertion (RFC 7523 §2.2): `client` is the
    /// principal the verified, spent assertion names. The token's subject is the
    /// accessID, its role the file's, and it is bound to the file's generation, so
    /// deleting or regenerating the file ends it. No refresh token: the client signs a
    /// new assertion instead.
    pub async fn client_credentials(
        &self,
        client: &Principal,
        now: i64,
    ) -> Result<Issued, GrantError> {
        let AuthMethod::KeyFile { binding, .. } = &client.method else {
            return Err(GrantError::InvalidClient(
                "client_credentials takes a key-file assertion".into(),
            ));
        };
        let access = self
            .issue_access(
                AccessSpec {
                    sub: &client.name,
                    role: client.role,
                    ttl: self.settings.access_ttl,
                    extra_aud: Vec::new(),
                    sid: None,
                    key_binding: Some(binding.clone()),
                    minted: false,
                    extra: Map::new(),
                },
                now,
            )
            .await?;
        super::count_issued("client_credentials");
        tracing::info!(key_file = %client.name, role = %client.role, "client_credentials token issued");
        Ok(Issued {
            access_token: access,
            expires_in: self.settings.access_ttl,
            refresh_token: None,
            refresh_expires_in: None,
        })
    }

    /// Issues a token for a chosen subject. `subject_role` is the subject's role when it
    /// is an existing user.
    pub async fn custom(
        &self,
        caller: &Principal,
        req: CustomRequest,
        subject_role: Option<Role>,
        now: i64,
    ) -> Result<Issued, GrantError> {
        if !caller.role.has(Permission::TokensCustom) {
            return Err(GrantError::UnauthorizedClient(format!(
                "role {} lacks tokens:custom",
                caller.role
            )));
        }
        let subject = req.subject.trim();
        if subject.is_empty()
            || subject.chars().count() > 256
            || subject.chars().any(char::is_control)
        {
            return Err(GrantError::InvalidRequest(
                "subject must be 1-256 characters without control characters".into(),
            ));
        }
        if req.expires_in <= 0 || req.expires_in > self.settings.max_custom_ttl {
            return Err(GrantError::InvalidRequest(format!(
                "expires_in must be between 1 and {} seconds (tokens.max_custom_ttl)",
                self.settings.max_custom_ttl
            )));
        }
        super::claims::check_audiences(&req.audience).map_err(GrantError::InvalidRequest)?;
        if let Some(k) = req
            .claims
            .keys()
            .find(|k| super::claims::RESERVED.contains(&k.as_str()))
        {
            return Err(GrantError::InvalidRequest(format!(
                "claims may not set {k:?}; the server sets it"
            )));
        }
        // A subject that is a local user is an identity: speaking for it needs a role
        // covering theirs, whatever role the token will carry.
        if let Some(r) = subject_role {
            if !caller.role.manages(r) {
                return Err(GrantError::UnauthorizedClient(format!(
                    "role {} may not issue tokens for a {r} user",
                    caller.role
                )));
            }
        }
        // A minted token stays inside the credential that minted it, so credentials
        // cannot be laundered into longer-lived ones: with an access token, the same
        // session (it ends with that session) and no later expiry; with an API key, the
        // key's binding (deleting or regenerating the key ends the token) and no expiry
        // after the key's.
        let (sid, key_binding, parent_exp, parent) = match &caller.method {
            AuthMethod::AccessToken {
                sid,
                exp,
                key_binding,
                ..
            } => (sid.clone(), key_binding.clone(), Some(*exp), "access token"),
            AuthMethod::ApiKey { id, .. } => {
                let key = self
                    .api_keys
                    .record_live(id)
                    .ok_or_else(|| GrantError::InvalidClient("the API key is gone".into()))?;
                (None, Some(key.0), Some(key.1), "API key")
            }
            // A key file does not expire; its binding ends the token with the file.
            AuthMethod::KeyFile { binding, .. } => (None, Some(binding.clone()), None, ""),
            // An IdP token: what it mints carries the server's binding (deleting or
            // re-keying the server ends it) and may not outlive the IdP token.
            AuthMethod::IdpToken { exp, binding, .. } => {
                (None, Some(binding.clone()), Some(*exp), "IdP token")
            }
            AuthMethod::Cli => (None, None, None, ""),
        };
        if let Some(exp) = parent_exp {
            if now.saturating_add(req.expires_in) > exp {
                return Err(GrantError::InvalidRequest(format!(
                    "expires_in exceeds the calling {parent}'s remaining lifetime ({} s)",
                    exp.saturating_sub(now).max(0)
                )));
            }
        }
        let role = req.role.or(subject_role).unwrap_or(Role::ReadOnly);
        if !caller.role.covers(role) {
            return Err(GrantError::UnauthorizedClient(format!(
                "role {} may not issue tokens with role {role}",
                caller.role
            )));
        }
        let access = self
            .issue_access(
                AccessSpec {
                    sub: subject,
                    role,
                    ttl: req.expires_in,
                    extra_aud: req.audience,
                    sid: sid.as_deref(),
                    key_binding,
                    minted: true,
                    extra: req.claims,
                },
                now,
            )
            .await
            .map_err(|e| match e {
                ServiceError::Invalid(m) => GrantError::InvalidRequest(m),
                other => other.into(),
            })?;
        super::count_issued("custom_token");
        tracing::info!(subject = %subject, role = %role, ttl = req.expires_in, by = %caller.name,
            "custom token issued");
        Ok(Issued {
            access_token: access,
            expires_in: req.expires_in,
            refresh_token: None,
            refresh_expires_in: None,
        })
    }
}

/// The refresh token's text, for the response body only.
pub fn expose(issued: &Issued) -> Option<&str> {
    issued.refresh_token.as_ref().map(|s| s.expose_secret())
}
