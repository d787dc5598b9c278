//! Which counters a failed password login counts against (`docs/users.md`, "Login
//! throttling").
//!
//! Counting only per account name let anyone lock anyone out: six anonymous wrong
//! passwords and the owner's right one was refused. So failures are counted three ways,
//! each in its own `login_failures` row:
//!
//! - per (name, source address): `users.max_failed_logins` lock that name *for that
//!   source* only; the owner logging in from elsewhere is not affected;
//! - per source address: `users.max_failed_logins_per_source` failures, whatever the
//!   names, lock the source out of every name (one address guessing many accounts);
//! - per name, from all sources: `users.max_failed_logins_per_name` lock the name for
//!   everyone, the defence against guessing spread over many addresses.
//!
//! Each lockout lasts `users.lockout`, doubling for each further lockout in a row up to
//! `users.max_lockout`: the right password is refused only for that bounded time (or
//! until an administrator clears it). IPv6 sources count per /64, as one host usually
//! holds a whole /64. A request whose address is unknown (in-process use) counts as the
//! source `-`.

use std::net::IpAddr;

/// Separates the parts of a key. Never part of a username (control characters are
/// refused in names tried), so no name can collide with another key.
pub const SEP: char = '\u{1f}';

/// The source as counted: the IPv4 address, or the /64 of an IPv6 address.
pub fn source_key(source: Option<IpAddr>) -> String {
    match source {
        None => "-".into(),
        Some(IpAddr::V4(a)) => a.to_string(),
        Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The per-source row's key.
pub fn by_source(source: &str) -> String {
    format!("{SEP}src{SEP}{source}")
}

/// The per-(name, source) row's key.
pub fn by_name_and_source(username: &str, source: &str) -> String {
    format!("{username}{SEP}{source}")
}

/// Whether a name tried can be counted under its own keys: no control characters (which
/// would let it forge another row's key) and not empty.
pub fn countable(username: &str) -> bool {
    !username.is_empty() && !username.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn sources_are_addresses_and_ipv6_counts_per_64() {
        assert_eq!(source_key(None), "-");
        assert_eq!(source_key(Some("10.1.2.3".parse().unwrap())), "10.1.2.3");
        assert_eq!(
            source_key(Some("2001:db8:1:2:aaaa::1".parse().unwrap())),
            source_key(Some("2001:db8:1:2:bbbb::9".parse().unwrap()))
        );
        assert_eq!(
            source_key(Some("::ffff:10.1.2.3".parse().unwrap())),
            "10.1.2.3"
        );
        assert!(!countable("alice\u{1f}10.0.0.1"));
        assert!(!countable(""));
        assert_ne!(by_source("1.2.3.4"), by_name_and_source("src", "1.2.3.4"));
    }
}
