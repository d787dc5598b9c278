//! The client's address as the limits see it, and the key it is limited under.
//!
//! The address comes from the socket. `X-Forwarded-For` is believed only when the
//! socket peer is a configured trusted proxy; then the header is read from the right,
//! skipping trusted proxies, and the first address that is not one is the client. A
//! client cannot spoof its address by sending the header itself: from an untrusted peer
//! the header is ignored, and through a trusted proxy the client's own entries sit left
//! of the address the proxy appended.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The key a source is limited under: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    SourceKey(IpAddr::V6(Ipv6Addr::from(bits)))
                }
            },
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// One CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("limits.trusted_proxies: {s:?} is not an address or CIDR range");
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(bad());
        }
        Ok(Cidr { net: ip, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.net.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                self.len,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(len));
    a & mask == b & mask
}

/// `limits.trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        list.iter()
            .map(|s| Cidr::parse(s))
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client address of a request from socket peer `peer` carrying the given
/// `X-Forwarded-For` header values (in order).
pub fn client_addr<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    // All values joined in order form one list; walk it from the right.
    let mut hops: Vec<&[u8]> = Vec::new();
    for v in forwarded_for {
        hops.extend(v.split(|b| *b == b','));
    }
    for hop in hops.iter().rev() {
        let Ok(text) = std::str::from_utf8(hop) else {
            return peer;
        };
        let Ok(ip) = text.trim().parse::<IpAddr>() else {
            // Garbage where an address should be: believe nothing further left.
            return peer;
        };
        if !trusted.contains(ip) {
            return ip;
        }
    }
    // Only proxies in the chain: the leftmost one is the nearest thing to a client.
    hops.first()
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(peer)
}

/// The unspecified address, for requests that came with no socket address (in-process).
pub const UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(l: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn ipv6_sources_are_limited_per_64_and_mapped_v4_as_v4() {
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2:aaaa::1")),
            SourceKey::of(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            SourceKey::of(ip("::ffff:10.0.0.1")),
            SourceKey::of(ip("10.0.0.1"))
        );
        assert_eq!(
            SourceKey::of(ip("2001:db8::1")).to_string(),
            "2001:db8::/64"
        );
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let t = trusted(&["10.0.0.0/8", "::1"]);
        let xff: &[&[u8]] = &[b"1.2.3.4"];
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_addr(ip("192.0.2.7"), xff.iter().copied(), &t),
            ip("192.0.2.7")
        );
        // Trusted peer: the client is the rightmost untrusted hop.
        let chain: &[&[u8]] = &[b"6.6.6.6, 1.2.3.4", b"10.1.1.1"];
        assert_eq!(
            client_addr(ip("10.0.0.2"), chain.iter().copied(), &t),
            ip("1.2.3.4")
        );
        // Garbage in the chain stops the walk at the proxy.
        let junk: &[&[u8]] = &[b"1.2.3.4, nonsense"];
        assert_eq!(client_addr(ip("::1"), junk.iter().copied(), &t), ip("::1"));
        // No proxies configured: never believed.
        assert_eq!(
            client_addr(
                ip("10.0.0.2"),
                xff.iter().copied(),
                &TrustedProxies::default()
            ),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn cidr_parsing() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
        let t = trusted(&["192.168.0.0/16", "2001:db8::/32"]);
        assert!(t.contains(ip("192.168.44.1")));
        assert!(t.contains(ip("::ffff:192.168.1.1")));
        assert!(!t.contains(ip("192.169.0.1")));
        assert!(t.contains(ip("2001:db8:ffff::1")));
        assert!(!t.contains(ip("2001:db9::1")));
    }
}
