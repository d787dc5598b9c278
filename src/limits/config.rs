//! `[limits]` (docs/configuration.md "[limits]").

use crate::dur::Dur;
use serde::Deserialize;
use std::time::Duration;

/// A GCRA rate: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// `[limits]`: rate limits, hardware lanes and HTTP connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `false` turns every rate limit off (the HTTP timeouts and connection caps stay).
    pub enabled: bool,
    /// Addresses or CIDR ranges of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Requests without credentials, per source address (IPv6: per /64).
    pub unauthenticated: Rate,
    /// Failed requests (401, refused token grants), per source address.
    pub failed: Rate,
    /// Requests per authenticated credential (API key, key file, user, IdP subject).
    pub per_credential: Rate,
    /// Signing-service requests per ring.
    pub per_ring: Rate,
    /// Wrong secrets per known API-key id, refresh-token id or key-file accessID.
    pub credential_failures: Rate,
    /// Sessions (pool threads) per backend that may run hardware calls for credentials
    /// not yet authenticated; 0 picks half the backend's sessions (at least 1, and always
    /// leaving one session to the other lanes when there are two or more).
    pub unauthenticated_lane: usize,
    /// Such calls that may wait for one of those sessions, per backend; one more is
    /// answered 503 at once.
    pub unauthenticated_queue: usize,
    /// Longest a client may take to send a request's headers; on HTTP/1.1 this also
    /// bounds the wait for the next request on a keep-alive connection.
    pub header_read_timeout: Dur,
    /// A connection that moves no byte for this long is closed.
    pub idle_timeout: Dur,
    /// Longest a request may take, body included, before it is answered 503.
    pub request_timeout: Dur,
    /// Open connections at most, all sources together.
    pub max_connections: usize,
    /// Open connections at most from one source address (IPv6: per /64). Trusted
    /// proxies are exempt.
    pub max_connections_per_source: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            enabled: true,
            trusted_proxies: Vec::new(),
            unauthenticated: Rate {
                per_minute: 1200,
                burst: 200,
            },
            failed: Rate {
                per_minute: 120,
                burst: 100,
            },
            per_credential: Rate {
                per_minute: 600_000,
                burst: 10_000,
            },
            per_ring: Rate {
                per_minute: 600_000,
                burst: 10_000,
            },
            credential_failures: Rate {
                per_minute: 6,
                burst: 10,
            },
            unauthenticated_lane: 0,
            unauthenticated_queue: 32,
            header_read_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(120)),
            request_timeout: Dur(Duration::from_secs(60)),
            max_connections: 4096,
            max_connections_per_source: 256,
        }
    }
}

impl LimitsConfig {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("unauthenticated", self.unauthenticated),
            ("failed", self.failed),
            ("per_credential", self.per_credential),
            ("per_ring", self.per_ring),
            ("credential_failures", self.credential_failures),
        ] {
            if r.per_minute == 0 || r.burst == 0 {
                return Err(format!(
                    "limits.{name}: per_minute and burst must be at least 1"
                ));
            }
        }
        if self.header_read_timeout.0.is_zero()
            || self.idle_timeout.0.is_zero()
            || self.request_timeout.0.is_zero()
        {
            return Err(
                "limits.header_read_timeout, idle_timeout and request_timeout must be positive"
                    .into(),
            );
        }
        if self.idle_timeout <= self.request_timeout {
            return Err(
                "limits.idle_timeout must be longer than limits.request_timeout, so a request in progress is never cut as idle".into(),
            );
        }
        if self.unauthenticated_queue == 0 {
            return Err("limits.unauthenticated_queue must be at least 1".into());
        }
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            return Err(
                "limits.max_connections and max_connections_per_source must be at least 1".into(),
            );
        }
        super::TrustedProxies::parse(&self.trusted_proxies).map(|_| ())
    }

    /// The unauthenticated lane of a backend with `sessions` sessions.
    pub fn lane_for(&self, sessions: usize) -> usize {
        let sessions = sessions.max(1);
        let auto = (sessions / 2).max(1);
        let n = if self.unauthenticated_lane == 0 {
            auto
        } else {
            self.unauthenticated_lane
        };
        if sessions >= 2 {
            n.clamp(1, sessions - 1)
        } else {
            1
        }
    }
}
