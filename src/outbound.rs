//! Every outbound fetch (an IdP's JWKS, a CA profile's CRLs) goes through [`Outbound`]:
//! one HTTP client setup, one network policy (`docs/configuration.md`, `[outbound]`).
//!
//! Why: JWKS and CRL URLs are given by administrators, and a URL is a request keygate
//! makes from inside the network. Without a policy an admin (or a stolen admin key) can
//! make keygate reach the cloud metadata service, an internal admin port or any host on
//! the private network (blind SSRF). So:
//!
//! - By default the addresses of loopback, link-local, private, shared (CGNAT),
//!   unspecified and multicast ranges are refused, IPv4 and IPv6 alike (an IPv4-mapped
//!   IPv6 address counts as its IPv4 address).
//! - `outbound.allow` lists networks that are allowed even so (an internal IdP at
//!   `10.1.2.3/32`, say); `outbound.deny` lists further networks that are refused, and
//!   wins over `allow`. `oauth.allow_insecure_loopback_jwks` (tests and development)
//!   allows loopback as well.
//! - The check is on the address the connection actually uses: host names are resolved
//!   by this module's resolver, which drops every refused address before the connection
//!   is made, so a name that resolves (or re-resolves, DNS rebinding) to an internal
//!   address gets nowhere. IP-literal URLs are checked before the request.
//! - No proxy from the environment (the proxy would resolve the name instead of us); no
//!   redirects unless the caller asks, and then at most 3, each target checked again.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// One network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Net { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4 and IPv6 never match each other).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Ranges refused unless `outbound.allow` names them.
const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Which addresses outbound connections may use.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: Vec<Net>,
    deny: Vec<Net>,
    defaults: Vec<Net>,
    allow_loopback: bool,
}

impl Policy {
    /// The policy of `[outbound]`, with loopback allowed when `allow_loopback`.
    pub fn new(allow: &[String], deny: &[String], allow_loopback: bool) -> Result<Policy, String> {
        let parse = |list: &[String], key: &str| {
            list.iter()
                .map(|s| Net::parse(s).map_err(|e| format!("outbound.{key}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            allow: parse(allow, "allow")?,
            deny: parse(deny, "deny")?,
            defaults: DEFAULT_DENY
                .iter()
                .map(|s| Net::parse(s))
                .collect::<Result<_, _>>()?,
            allow_loopback,
        })
    }

    /// Why `ip` may not be used, or `Ok`.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        // An IPv4-mapped IPv6 address reaches the IPv4 host.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(ip)) {
            return Err(format!("{ip} is in outbound.deny"));
        }
        if self.allow.iter().any(|n| n.contains(ip)) || (self.allow_loopback && ip.is_loopback()) {
            return Ok(());
        }
        if self.defaults.iter().any(|n| n.contains(ip)) {
            return Err(format!(
                "{ip} is a loopback, link-local, private or reserved address (allow it in outbound.allow)"
            ));
        }
        Ok(())
    }
}

/// Why a fetch failed; logged by the caller, never returned to API clients.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("{0}")]
    Refused(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
}

/// Resolves host names and keeps only the addresses the policy allows.
struct Resolver(Arc<Policy>);

type Resolving = Pin<
    Box<
        dyn Future<Output = Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusals = Vec::new();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refusals.push(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = if refusals.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!(
                        "{host} resolves only to refused addresses: {}",
                        refusals.join("; ")
                    )
                };
                metrics::counter!("keygate_outbound_refusals_total").increment(1);
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What one fetch may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Follow up to 3 redirects (CRL distribution points do); JWKS URIs do not.
    pub follow_redirects: bool,
}

/// The outbound HTTP client (see the module docs).
#[derive(Clone)]
pub struct Outbound {
    direct: reqwest::Client,
    redirecting: reqwest::Client,
    policy: Arc<Policy>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Trust anchors for https fetches: the operating system's store (so an internal CA
/// installed the usual way works) and the Mozilla roots.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "reading the system trust store for outbound fetches");
    }
    roots.add_parsable_certificates(native.certs);
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Outbound {
    /// The client of the `[outbound]` lists, with loopback allowed when
    /// `allow_loopback` (`oauth.allow_insecure_loopback_jwks`) is set.
    pub fn new(settings: &OutboundConfig, allow_loopback: bool) -> Result<Outbound, String> {
        let policy = Arc::new(Policy::new(
            &settings.allow,
            &settings.deny,
            allow_loopback,
        )?);
        let build = |redirect: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls_config()?)
                .dns_resolver(Arc::new(Resolver(policy.clone())))
                .no_proxy()
                .redirect(redirect)
                .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("outbound HTTP client: {e}"))
        };
        let checked = policy.clone();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                return attempt.error("more than 3 redirects");
            }
            match literal_refusal(&checked, attempt.url()) {
                Some(e) => attempt.error(e),
                None => attempt.follow(),
            }
        });
        Ok(Outbound {
            direct: build(reqwest::redirect::Policy::none())?,
            redirecting: build(redirect)?,
            policy,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// GETs `url`: only to allowed addresses, within `limits.timeout` for the whole
    /// request, at most `limits.max_bytes` of body, and only a 200 counts.
    pub async fn get(
        &self,
        url: &str,
        accept: &str,
        limits: Limits,
    ) -> Result<Vec<u8>, OutboundError> {
        let url = reqwest::Url::parse(url).map_err(|e| OutboundError::Refused(format!("{e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Refused("only http and https URLs".into()));
        }
        if let Some(e) = literal_refusal(&self.policy, &url) {
            metrics::counter!("keygate_outbound_refusals_total").increment(1);
            return Err(OutboundError::Refused(e));
        }
        match tokio::time::timeout(limits.timeout, self.get_bounded(url, accept, limits)).await {
            Ok(r) => r,
            Err(_) => Err(OutboundError::Timeout(limits.timeout)),
        }
    }

    async fn get_bounded(
        &self,
        url: reqwest::Url,
        accept: &str,
        limits: Limits,
    ) -> Result<Vec<u8>, OutboundError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                return OutboundError::Timeout(limits.timeout);
            }
            // reqwest's top-level message ("error sending request") hides the cause.
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            OutboundError::Transport(msg)
        };
        let client = if limits.follow_redirects {
            &self.redirecting
        } else {
            &self.direct
        };
        let mut resp = client
            .get(url)
            .header(reqwest::header::ACCEPT, accept)
            .timeout(limits.timeout)
            .send()
            .await
            .map_err(transport)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(OutboundError::Status(resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > limits.max_bytes as u64)
        {
            return Err(OutboundError::TooLarge(limits.max_bytes));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limits.max_bytes {
                return Err(OutboundError::TooLarge(limits.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Why an IP-literal URL is refused (host names are checked when resolved).
fn literal_refusal(policy: &Policy, url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = literal.parse().ok()?;
    policy.check(ip).err()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn by_default_internal_ranges_are_refused_and_public_ones_allowed() {
        let p = Policy::new(&[], &[], false).unwrap();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(p.check(ip(bad)).is_err(), "{bad}");
        }
        for good in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(p.check(ip(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn allow_opens_a_range_deny_closes_one_and_deny_wins() {
        let p = Policy::new(
            &["10.1.0.0/16".into(), "127.0.0.0/8".into()],
            &["10.1.2.0/24".into(), "8.8.8.8".into()],
            false,
        )
        .unwrap();
        assert!(p.check(ip("10.1.9.9")).is_ok());
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("10.1.2.3")).is_err(), "deny wins over allow");
        assert!(p.check(ip("8.8.8.8")).is_err());
        assert!(p.check(ip("10.2.0.1")).is_err(), "still a private range");
        let lo = Policy::new(&[], &["127.0.0.2".into()], true).unwrap();
        assert!(lo.check(ip("127.0.0.1")).is_ok(), "the loopback test flag");
        assert!(lo.check(ip("127.0.0.2")).is_err());
        assert!(lo.check(ip("10.0.0.1")).is_err());
    }

    #[test]
    fn networks_parse_strictly() {
        assert_eq!(
            Net::parse("10.0.0.0/8").unwrap(),
            Net {
                addr: ip("10.0.0.0"),
                prefix: 8
            }
        );
        assert!(Net::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(!Net::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "::/129", ""] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_before_any_request() {
        let p = Policy::new(&[], &[], false).unwrap();
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(literal_refusal(&p, &u("http://169.254.169.254/latest/meta-data")).is_some());
        assert!(literal_refusal(&p, &u("https://[::1]:8443/jwks")).is_some());
        assert!(literal_refusal(&p, &u("https://idp.example/jwks")).is_none());
    }
}

/// `[outbound]`: networks outbound fetches may reach beyond the default (`allow`), and
/// networks they may never reach (`deny`, which wins). See `docs/configuration.md`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// CIDR networks or addresses allowed although loopback, link-local or private.
    pub allow: Vec<String>,
    /// CIDR networks or addresses never reached.
    pub deny: Vec<String>,
}
