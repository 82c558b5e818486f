//! SSRF guard: outbound requests reach only global addresses unless a CIDR allow-list says
//! otherwise. Enforced after DNS resolution (a resolver that drops refused addresses, so the
//! connection uses exactly the checked addresses and DNS rebinding cannot slip through) and on
//! literal IP hosts before a request is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    /// The address is refused by policy.
    #[error("blocked by the SSRF guard: {0}")]
    Blocked(String),
    /// The name could not be resolved at all.
    #[error("DNS: {0}")]
    Dns(String),
}

use GuardError::Blocked;

/// Which addresses one kind of outbound request may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: Vec<IpNet>,
}

impl Policy {
    pub fn new(allow: Vec<IpNet>) -> Policy {
        Policy { allow }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_global(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Refuses a URL whose host is a literal address the policy does not permit. Host names are
    /// checked by [`GuardedResolver`] when the connection is made.
    pub fn check_literal(&self, url: &Url) -> Result<(), GuardError> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Blocked("URL has no host".into())),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Blocked(format!("{ip} is not a global address")))
        }
    }

    /// Resolves `host` and keeps the permitted addresses; an error when none is left.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| GuardError::Dns(format!("cannot resolve {host}: {e}")))?
            .collect();
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.permits(a.ip()))
            .collect();
        if allowed.is_empty() {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            return Err(Blocked(format!(
                "{host} resolves only to refused addresses ({})",
                list.join(", ")
            )));
        }
        Ok(allowed)
    }

    /// Checks a URL the way a request to it would be checked: literal hosts directly, names
    /// through DNS. Used before a verification GET to tell "refused by policy" from "unreachable".
    pub async fn check_url(&self, url: &Url) -> Result<(), GuardError> {
        match url.host() {
            Some(url::Host::Domain(d)) => {
                let port = url.port_or_known_default().unwrap_or(80);
                self.resolve(d, port).await.map(|_| ())
            }
            _ => self.check_literal(url),
        }
    }
}

/// A reqwest resolver that drops every address its policy refuses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
}

impl GuardedResolver {
    pub fn new(policy: Policy) -> GuardedResolver {
        GuardedResolver {
            policy: Arc::new(policy),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

pub fn is_global(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => is_global_v4(a),
        IpAddr::V6(a) => is_global_v6(a),
    }
}

fn in_v4(a: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(a) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn is_global_v4(a: Ipv4Addr) -> bool {
    const REFUSED: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network"
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // CGNAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
    ];
    !REFUSED.iter().any(|(net, p)| in_v4(a, *net, *p))
}

fn is_global_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    // Only 2000::/3 is global unicast; inside it, carve out the special ranges.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    let refused = [
        s[0] == 0x2001 && s[1] < 0x0200, // 2001::/23 IETF protocol assignments (Teredo, ORCHID…)
        s[0] == 0x2001 && s[1] == 0x0db8, // documentation
        s[0] == 0x2002,                  // 6to4: embeds an IPv4 address we cannot vouch for
        s[0] == 0x3fff && s[1] < 0x1000, // 3fff::/20 documentation
    ];
    !refused.iter().any(|r| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_non_global() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            assert!(!is_global(ip(a)), "{a} must be refused");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_global(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn allow_list_opens_ranges() {
        let p = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.permits(ip("127.0.0.5")));
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("10.0.0.1")));
        assert!(!Policy::default().permits(ip("127.0.0.1")));
    }

    #[test]
    fn literal_hosts_checked() {
        let p = Policy::default();
        assert!(
            p.check_literal(&Url::parse("http://127.0.0.1/").unwrap())
                .is_err()
        );
        // The url crate reads odd IPv4 spellings, so they are caught too.
        assert!(
            p.check_literal(&Url::parse("http://2130706433/").unwrap())
                .is_err()
        );
        assert!(
            p.check_literal(&Url::parse("http://[::1]/").unwrap())
                .is_err()
        );
        assert!(
            p.check_literal(&Url::parse("http://example.com/").unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let p = Policy::default();
        let err = p.resolve("localhost", 80).await.unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        let open = Policy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(!open.resolve("localhost", 80).await.unwrap().is_empty());
    }
}
