//! The wall clock, in one place. Request handling reads it once per request and passes
//! `now` down; services and the TLS state never read it themselves except through here.

/// Seconds since the epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `secs` as RFC 3339 (UTC), or an empty string for a time `time` cannot represent.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
