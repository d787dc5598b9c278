//! `[cluster]` (docs/configuration.md "[cluster]").

use crate::dur::Dur;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// A replica whose last successful apply of the change feed is older than this answers
    /// `/readyz` with 503 and refuses every request but `/healthz`, `/readyz` and
    /// `/metrics` (its caches and denylist may be missing changes made elsewhere).
    pub max_staleness: Dur,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            max_staleness: Dur(Duration::from_secs(5)),
        }
    }
}

impl ClusterConfig {
    /// `poll` is how often the feed is polled (`api_keys.refresh_interval`).
    pub fn validate(&self, poll: Duration) -> Result<(), String> {
        if self.max_staleness.0 <= poll {
            return Err(format!(
                "cluster.max_staleness ({:?}) must be longer than api_keys.refresh_interval \
                 ({poll:?}), the change feed's poll interval",
                self.max_staleness.0
            ));
        }
        Ok(())
    }
}
