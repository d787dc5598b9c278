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
    },
    /// The local CLI acting directly on the store and hardware.
    Cli,
}

/// An authenticated caller. `name` is the principal per API.md: a user name (or a custom
/// token's subject), or an API key's owner.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub method: AuthMethod,
}
