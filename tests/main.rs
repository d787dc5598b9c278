//! keygate's integration tests: one binary, one module per concern.
//!
//! Hardware tests run in-process against a fresh SoftHSM token (`common::hsm`). HTTP and
//! CLI tests spawn the real `keygate` binary on port 0 with its own data directory, SQLite
//! file and SoftHSM token (`common::server`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod api_keys;
mod audit;
mod audit_verify;
mod bad_input;
mod cli;
mod cluster;
mod common;
mod conformance;
mod console;
mod crash;
mod custody;
mod custom_roles;
mod fuzz_corpus;
mod groups;
mod hardware;
mod interop;
mod key_files;
mod keys;
mod layering;
mod lifecycle;
mod oauth_servers;
mod operations;
mod ops;
mod outage;
mod restore;
mod roles;
mod sessions;
mod store_cluster;
mod tls;
mod token_rules;
mod tokens;
mod tpm;
mod tpm_server;
mod trust_core;
mod users;
mod wycheproof;
