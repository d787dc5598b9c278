//! RFC 3339 in JSON bodies, seconds since the epoch everywhere else.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use crate::clock::rfc3339;

pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}
