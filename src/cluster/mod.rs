//! Several replicas behaving as one service: the change feed and what it keeps current
//! (docs/deployment.md, "Replicas and the change feed").
//!
//! - [`snapshot::Snapshot`] is the one in-memory copy type behind every cache: API-key
//!   index, key-file bindings, IdP keys, custom roles, key versions.
//! - [`feed::Feed`] is this replica's position in the store's `changes` table and the time
//!   of its last successful apply; `/readyz` and the staleness guard read it.
//! - [`applier`] is the one task that reads the feed in order and reloads or patches the
//!   affected caches and the token denylist. It polls the store, which is the source of
//!   truth; [`feed::Feed::wake`] is the hook a notification (PostgreSQL `LISTEN/NOTIFY`)
//!   calls to make it poll at once. A lost notification costs latency, never correctness.

pub mod applier;
pub mod config;
pub mod feed;
pub mod snapshot;
pub mod startup;

pub use config::ClusterConfig;
