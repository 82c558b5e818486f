//! Rate limits on what anonymous clients can make the hub do (`[limits]`): per client address
//! for subscription requests and light pings, per callback host for verification requests,
//! per topic for fetches. A thin layer over `governor` (GCRA, one state per key), with keys
//! forgotten once they are back to full (so memory follows the clients seen recently).

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

/// A rate as configured: `count` per `per`, in bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    /// Parses `"N/s"`, `"N/min"` or `"N/h"` (`"off"` is `None`).
    pub fn parse(text: &str) -> Result<Option<Rate>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let expected = || format!("{text:?} is not a rate like \"20/s\", \"600/min\" or \"off\"");
        let (n, unit) = text.split_once('/').ok_or_else(expected)?;
        let count = n.trim().parse::<NonZeroU32>().map_err(|_| expected())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(expected()),
        };
        Ok(Some(Rate { count, per }))
    }

    fn quota(&self) -> Quota {
        let period = self.per / self.count.get();
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a period of at least a nanosecond")
            .allow_burst(self.count)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Checks taken between two sweeps of keys back to full.
const SWEEP_EVERY: u64 = 4096;

/// One limit, kept per key; `None` inside when the limit is off.
pub struct Limiter<K: Hash + Eq + Clone> {
    inner: Option<DefaultKeyedRateLimiter<K>>,
    checks: AtomicU64,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Option<Rate>) -> Limiter<K> {
        Limiter {
            inner: rate.map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one from `key`'s allowance: `Err(wait)` when it has none left for that long.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        self.counted(limiter);
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Takes `n` at once (a request naming several topics); `n` beyond the burst waits as if
    /// for a whole period.
    pub fn check_n(&self, key: &K, n: u32) -> Result<(), Duration> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        self.counted(limiter);
        match limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// Counts a check; every [`SWEEP_EVERY`] checks, forgets the keys back to full.
    fn counted(&self, limiter: &DefaultKeyedRateLimiter<K>) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Waits until `key` has an allowance, and takes it.
    pub async fn until_ready(&self, key: &K) {
        while let Err(wait) = self.check(key) {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

/// The key of an anonymous client: its IPv4 address, or the /64 its IPv6 address is in (one
/// host usually has a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// The address a request comes from: the connection's peer, or, when the peer is a trusted
/// reverse proxy (`server.trusted_proxies`), the rightmost address of `X-Forwarded-For` that
/// is not itself a trusted proxy (each proxy appends the address it got the request from, so
/// entries left of that are whatever the client claimed).
pub fn request_client(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for entry in list.rsplit(',') {
        let Some(ip) = parse_forwarded_ip(entry.trim()) else {
            break; // unreadable: trust nothing further left
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Seconds to put in `Retry-After` for a wait: at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r = Rate::parse("20/s").unwrap().unwrap();
        assert_eq!(r.count.get(), 20);
        assert_eq!(r.to_string(), "20/s");
        assert_eq!(
            Rate::parse("600/min").unwrap().unwrap().per,
            Duration::from_secs(60)
        );
        assert_eq!(Rate::parse("off").unwrap(), None);
        for bad in ["20", "0/s", "x/s", "5/fortnight", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_then_refusals_with_a_wait() {
        let l: Limiter<&str> = Limiter::new(Rate::parse("3/min").unwrap());
        for _ in 0..3 {
            assert_eq!(l.check(&"a"), Ok(()));
        }
        let wait = l.check(&"a").unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(l.check(&"b"), Ok(()), "keys are separate");
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        let off: Limiter<&str> = Limiter::new(None);
        assert!((0..10_000).all(|_| off.check(&"a").is_ok()));
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client = |peer: IpAddr, xff: Option<&str>, t: &[IpNet]| request_client(peer, xff, t);
        let c: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(client(proxy, Some("203.0.113.7"), &trusted), c);
        // What the client itself claimed, left of what the proxy saw, does not count.
        assert_eq!(
            client(proxy, Some("198.51.100.1, 203.0.113.7"), &trusted),
            c
        );
        // Chained trusted proxies are skipped.
        assert_eq!(client(proxy, Some("203.0.113.7, 10.0.0.9"), &trusted), c);
        assert_eq!(
            client(proxy, Some("[2001:db8::1]:4711"), &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        // Not behind a trusted proxy: the header is the client's own claim.
        assert_eq!(client(c, Some("198.51.100.1"), &trusted), c);
        assert_eq!(client(proxy, Some("198.51.100.1"), &[]), proxy);
        assert_eq!(client(proxy, Some("garbage"), &trusted), proxy);
        assert_eq!(client(proxy, None, &trusted), proxy);
    }

    #[test]
    fn ipv6_clients_count_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
