//! keygate's integration tests: one binary, one module per concern.
//!
//! Hardware tests run in-process against a fresh SoftHSM token (`common::hsm`). HTTP tests
//! spawn the real `keygate` binary on port 0 with its own data directory, SQLite file and
//! SoftHSM token (`common::server`).

mod common;
mod hardware;
mod wycheproof;
