//! One module per console page.

pub mod api_keys;
pub mod audit;
pub mod sessions;
pub mod sign_in;
