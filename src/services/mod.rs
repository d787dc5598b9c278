//! Business rules, one module per concern. Services speak in meaning ([`ServiceError`]),
//! never in HTTP; the web layer maps errors to status codes.

pub mod api_keys;
pub mod authz;
pub mod ca_profiles;
pub mod error;
pub mod key_rings;
pub mod passwords;
pub mod principal;
pub mod tokens;
pub mod users;
pub mod verify_cache;

pub use error::ServiceError;
pub use principal::{AuthMethod, Principal};
