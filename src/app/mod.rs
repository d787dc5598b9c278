//! The use-case layer: one module per workflow, each operation one function that takes
//! the authenticated caller and its input, authorizes once, and runs (in the style of
//! kanidm's server actors). The HTTP handlers (`http::routes`) parse, call one of these,
//! and render; the CLI calls the same functions with the `root` caller.
//!
//! Layers, top to bottom (docs/architecture.md):
//!
//! ```text
//! http, cli  ->  app  ->  services  ->  keys / store  ->  hardware
//! ```
//!
//! `app` is the only layer that sees [`crate::runtime::Runtime`] (the assembled set of
//! services); services hold their own dependencies and never import `app`, `http` or
//! `runtime`. Authorization rules live in services (one place each: ring access and
//! acting as another principal in [`crate::services::groups`], approver sets in
//! [`crate::services::approvers`], what a credential proves in
//! [`crate::services::principal`]); `app` decides which of them an operation needs and
//! in what order, so no handler carries an authorization rule of its own.

pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod ca_profiles;
pub mod groups;
pub mod key_attestation;
pub mod key_files;
pub mod keys;
pub mod oauth_servers;
pub mod roles;
pub mod tokens;
pub mod users;
