//! keygate: a hardware-backed key and token service.
//!
//! Layers, top to bottom: [`http`] → [`services`] → [`keys`] → [`hardware`], with [`store`]
//! beside the hardware for metadata. See `docs/architecture.md`.

pub mod app;
pub mod approval_rules;
pub mod background;
pub mod bench;
pub mod bench_load;
pub mod bench_tpm;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod console;
pub mod dev;
pub mod dur;
#[doc(hidden)]
pub mod fuzzing;
pub mod hardware;
pub mod http;
pub mod key_file_client;
pub mod key_state;
pub mod keys;
pub mod limits;
pub mod names;
pub mod ops;
pub mod outbound;
pub mod runtime;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod tls;
