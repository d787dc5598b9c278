//! Business rules, one module per concern. Services speak in meaning ([`ServiceError`]),
//! never in HTTP; the web layer maps errors to status codes.

pub mod api_keys;
pub mod approvals;
pub mod approvers;
pub mod audit;
pub mod audit_buckets;
pub mod authz;
pub mod credential;
pub mod error;
pub mod groups;
pub mod key_files;
pub mod key_rings;
pub mod login_throttle;
pub mod oauth_servers;
pub mod passwords;
pub mod principal;
pub mod roles;
pub mod tokens;
pub mod users;
pub mod verify_cache;

pub use error::ServiceError;
pub use principal::{AuthMethod, Principal, Proof};

/// Free text from a request: at most `max` characters, no control characters, and not
/// blank when `required`.
pub(crate) fn validate_text(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), ServiceError> {
    if required && value.trim().is_empty() {
        return Err(ServiceError::Invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ServiceError::Invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ServiceError::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}
