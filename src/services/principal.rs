//! Who is calling: the authenticated principal attached to a request, and how it was
//! proven.
//!
//! A principal's `name` alone proves nothing: anyone who can create a credential carrying
//! a name could otherwise become that name. [`Principal::proof`] says what the credential
//! proves (docs/architecture.md, "Principals"):
//!
//! - [`Proof::Session`], [`Proof::Idp`]: a person's own password login or IdP token;
//! - [`Proof::OwnApiKey`], [`Proof::OwnKeyFile`]: a credential its principal created for
//!   itself;
//! - [`Proof::DelegatedApiKey`], [`Proof::DelegatedKeyFile`]: a credential someone else
//!   created for the principal: it acts as the principal, but never votes as them;
//! - [`Proof::Derived`]: an access token minted from an API key or key file (it speaks for
//!   the name, but is one step removed from the credential that proved it);
//! - [`Proof::Minted`]: a custom token, whose subject the minter chose: it proves nothing
//!   about its subject;
//! - [`Proof::Cli`]: the local operator.

use crate::services::authz::Role;

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// An API key, by record id (never the secret), and who created it (`None`: unknown).
    ApiKey {
        id: String,
        created_by: Option<String>,
    },
    /// A keygate access token, by `jti`, and its login session when it has one.
    AccessToken {
        jti: String,
        sid: Option<String>,
        /// The token's `exp`: what it mints may not outlive it.
        exp: i64,
        /// The credential binding it carries, if it was minted with an API key, a key file
        /// or an IdP token.
        key_binding: Option<String>,
        /// A custom token: the caller chose its subject, so it proves no identity.
        minted: bool,
    },
    /// A key-file assertion, by accessID; `binding` is what tokens minted with it carry,
    /// `created_by` who created (or last re-keyed) the file.
    KeyFile {
        access_id: String,
        binding: String,
        created_by: String,
    },
    /// An external IdP's token: the server, the token's `jti` if it has one, its `exp`
    /// (what it mints may not outlive it), and the server's binding (what it mints
    /// carries: deleting or re-keying the server ends those tokens).
    IdpToken {
        oauth_id: String,
        jti: Option<String>,
        exp: i64,
        binding: String,
    },
    /// The local CLI acting directly on the store and hardware.
    Cli,
}

/// What a credential proves about the principal it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// The user's own password login (an access token of a login session).
    Session { sid: String },
    /// The person's own token from a registered IdP.
    Idp { oauth_id: String },
    /// An API key its owner created.
    OwnApiKey { id: String },
    /// An API key someone else created for the owner (`created_by`, `None` if unknown).
    DelegatedApiKey {
        id: String,
        created_by: Option<String>,
    },
    /// A key file whose last key was made by the file's own principal.
    OwnKeyFile { access_id: String },
    /// A key file made or re-keyed by somebody else for its accessID.
    DelegatedKeyFile {
        access_id: String,
        created_by: String,
    },
    /// An access token minted from an API key or key file (client credentials).
    Derived { jti: String },
    /// A custom token: its subject was chosen by whoever minted it.
    Minted { jti: String },
    /// The local operator (`root`).
    Cli,
}

impl Proof {
    /// The credential as recorded on a vote and in the audit log: `<kind>:<id>`.
    pub fn credential(&self) -> String {
        match self {
            Proof::Session { sid } => format!("session:{sid}"),
            Proof::Idp { oauth_id } => format!("idp:{oauth_id}"),
            Proof::OwnApiKey { id } | Proof::DelegatedApiKey { id, .. } => format!("api-key:{id}"),
            Proof::OwnKeyFile { access_id } | Proof::DelegatedKeyFile { access_id, .. } => {
                format!("key-file:{access_id}")
            }
            Proof::Derived { jti } => format!("access-token:{jti}"),
            Proof::Minted { jti } => format!("custom-token:{jti}"),
            Proof::Cli => "cli".into(),
        }
    }
}

/// An authenticated caller. `name` is the principal per `docs/roles.md`: a user name (or a custom
/// token's subject), an API key's owner, a key file's accessID, or `<oauth_id>:<sub>`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub method: AuthMethod,
}

impl Principal {
    /// The credential a per-credential rate quota is kept for (`docs/operations.md`).
    pub fn quota_key(&self) -> Option<String> {
        let p = self;
        match &p.method {
            AuthMethod::ApiKey { id, .. } => Some(format!("api-key:{id}")),
            AuthMethod::KeyFile { access_id, .. } => Some(format!("key-file:{access_id}")),
            // A custom token minted with an API key counts against that key.
            AuthMethod::AccessToken {
                key_binding: Some(b),
                ..
            } => Some(format!(
                "api-key:{}",
                b.split_once('.').map_or(b.as_str(), |(id, _)| id)
            )),
            AuthMethod::AccessToken { .. } => Some(format!("user:{}", p.name)),
            AuthMethod::IdpToken { .. } => Some(format!("idp:{}", p.name)),
            AuthMethod::Cli => None,
        }
    }

    /// What this caller's credential proves.
    pub fn proof(&self) -> Proof {
        match &self.method {
            AuthMethod::ApiKey { id, created_by } => {
                if created_by.as_deref() == Some(self.name.as_str()) {
                    Proof::OwnApiKey { id: id.clone() }
                } else {
                    Proof::DelegatedApiKey {
                        id: id.clone(),
                        created_by: created_by.clone(),
                    }
                }
            }
            AuthMethod::AccessToken {
                jti, minted: true, ..
            } => Proof::Minted { jti: jti.clone() },
            AuthMethod::AccessToken {
                sid: Some(sid),
                key_binding: None,
                ..
            } => Proof::Session { sid: sid.clone() },
            AuthMethod::AccessToken { jti, .. } => Proof::Derived { jti: jti.clone() },
            AuthMethod::KeyFile {
                access_id,
                created_by,
                ..
            } => {
                if *created_by == *access_id {
                    Proof::OwnKeyFile {
                        access_id: access_id.clone(),
                    }
                } else {
                    Proof::DelegatedKeyFile {
                        access_id: access_id.clone(),
                        created_by: created_by.clone(),
                    }
                }
            }
            AuthMethod::IdpToken { oauth_id, .. } => Proof::Idp {
                oauth_id: oauth_id.clone(),
            },
            AuthMethod::Cli => Proof::Cli,
        }
    }

    /// Whether the credential speaks for the principal's name, so that what belongs to
    /// the name (group grants, ring ownership, `signers` entries, acting on its own
    /// account) applies. A custom token names a subject its minter chose: it acts with
    /// its role only.
    pub fn proves_identity(&self) -> bool {
        !matches!(self.proof(), Proof::Minted { .. })
    }

    /// Who a credential created with this caller's credential counts as made by: the
    /// person when the credential proves them; otherwise whoever stands behind it (the
    /// creator of a delegated key), or a marker that is never a principal's name. So a
    /// key someone else created for a person cannot launder itself into one of "their
    /// own" by creating another key.
    pub fn credential_creator(&self) -> String {
        match self.proof() {
            Proof::Session { .. }
            | Proof::Idp { .. }
            | Proof::OwnApiKey { .. }
            | Proof::OwnKeyFile { .. } => self.name.clone(),
            Proof::DelegatedApiKey { created_by, .. } => {
                created_by.unwrap_or_else(|| "(unknown)".into())
            }
            Proof::DelegatedKeyFile { created_by, .. } => created_by,
            Proof::Derived { .. } => format!("(token of {})", self.name),
            Proof::Minted { .. } => "(custom token)".into(),
            Proof::Cli => crate::services::authz::ROOT_PRINCIPAL.into(),
        }
    }

    /// Whether the credential proves the *person*: their own login session, their own IdP
    /// token, or a key they created for themselves. Only such a credential counts as a
    /// vote on an approval (docs/lifecycle.md): a credential somebody else created for a
    /// person is something that somebody else may also hold.
    pub fn proves_person(&self) -> bool {
        matches!(
            self.proof(),
            Proof::Session { .. }
                | Proof::Idp { .. }
                | Proof::OwnApiKey { .. }
                | Proof::OwnKeyFile { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(owner: &str, created_by: Option<&str>) -> Principal {
        Principal {
            name: owner.into(),
            role: Role::SuperAdmin,
            method: AuthMethod::ApiKey {
                id: "k1".into(),
                created_by: created_by.map(str::to_string),
            },
        }
    }

    #[test]
    fn an_api_key_proves_its_owner_only_when_the_owner_made_it() {
        assert_eq!(
            key("u1", Some("u1")).proof(),
            Proof::OwnApiKey { id: "k1".into() }
        );
        assert!(key("u1", Some("u1")).proves_person());
        let made_by_root = key("u1", Some("root"));
        assert!(matches!(
            made_by_root.proof(),
            Proof::DelegatedApiKey { .. }
        ));
        assert!(made_by_root.proves_identity());
        assert!(!made_by_root.proves_person());
        assert!(!key("u1", None).proves_person());
    }

    #[test]
    fn a_custom_token_proves_neither_its_subject_nor_a_person() {
        let p = Principal {
            name: "gw".into(),
            role: Role::Admin,
            method: AuthMethod::AccessToken {
                jti: "j".into(),
                sid: Some("s".into()),
                exp: 1,
                key_binding: None,
                minted: true,
            },
        };
        assert_eq!(p.proof(), Proof::Minted { jti: "j".into() });
        assert!(!p.proves_identity());
        assert!(!p.proves_person());
    }

    #[test]
    fn a_login_session_proves_the_person_and_a_client_credentials_token_does_not() {
        let session = Principal {
            name: "alice".into(),
            role: Role::SuperAdmin,
            method: AuthMethod::AccessToken {
                jti: "j".into(),
                sid: Some("s1".into()),
                exp: 1,
                key_binding: None,
                minted: false,
            },
        };
        assert!(session.proves_person());
        assert_eq!(session.proof().credential(), "session:s1");
        let derived = Principal {
            method: AuthMethod::AccessToken {
                jti: "j".into(),
                sid: None,
                exp: 1,
                key_binding: Some("k.1".into()),
                minted: false,
            },
            ..session
        };
        assert!(!derived.proves_person());
        assert!(derived.proves_identity());
    }
}
