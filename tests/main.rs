//! keygate's integration tests: one binary, one module per concern.
//!
//! Hardware tests run in-process against a fresh SoftHSM token (`common::hsm`). HTTP and
//! CLI tests spawn the real `keygate` binary on port 0 with its own data directory, SQLite
//! file and SoftHSM token (`common::server`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api_keys;
mod bad_input;
mod cli;
mod common;
mod hardware;
mod interop;
mod keys;
mod operations;
mod roles;
mod sessions;
mod tls;
mod token_rules;
mod tokens;
mod users;
mod wycheproof;
