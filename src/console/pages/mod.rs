//! One module per console page.

pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod groups;
pub mod key_files;
pub mod keys;
pub mod oauth_servers;
pub mod roles;
pub mod sessions;
pub mod sign_in;
pub mod tls;
pub mod users;
