//! A duration as written in configuration: `"90s"`, `"15m"`, `"24h"` or `"90d"`. Its own
//! module so that [`crate::config`] and the `[tls]` settings it embeds both use it
//! without importing each other.

use serde::Deserialize;
use std::time::Duration;

/// A duration written as `"90s"`, `"15m"`, `"24h"` or `"90d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("duration {s:?}: {e}")))
    }
}

impl Dur {
    pub fn secs(self) -> i64 {
        i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX)
    }
}
