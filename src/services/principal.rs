//! Who is calling: the authenticated principal attached to a request.

use crate::services::authz::Role;

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// An API key, by record id (never the secret).
    ApiKey { id: String },
    /// A keygate access token, by `jti`, and its login session when it has one.
    AccessToken {
        jti: String,
        sid: Option<String>,
        /// The token's `exp`: what it mints may not outlive it.
        exp: i64,
        /// The API-key binding it carries, if it was minted with a key.
        key_binding: Option<String>,
        /// A custom token: the caller chose its subject, so it proves no identity.
        minted: bool,
    },
    /// A key-file assertion, by accessID; `binding` is what tokens minted with it carry.
    KeyFile { access_id: String, binding: String },
    /// An external IdP's token: the server, the token's `jti` if it has one, and its
    /// `exp` (what it mints may not outlive it).
    IdpToken {
        oauth_id: String,
        jti: Option<String>,
        exp: i64,
    },
    /// The local CLI acting directly on the store and hardware.
    Cli,
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
    /// Whether the credential proves the principal's identity, so that what belongs to
    /// the name (group grants, ring ownership, `signers` entries) applies. A custom token
    /// names a subject its minter chose: it acts with its role only.
    pub fn proves_identity(&self) -> bool {
        !matches!(self.method, AuthMethod::AccessToken { minted: true, .. })
    }
}
