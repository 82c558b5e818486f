//! Values written as strings in the config: durations, sizes, addresses, CIDRs, URLs.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::{ConfigError, invalid};

pub(super) fn parse_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v.trim()).map_err(|_| {
        invalid(
            key,
            format!(
                "{v:?} is not a duration: write a number and a unit, e.g. \"500ms\", \"10s\", \
                 \"5m\", \"2h\" or \"7days\""
            ),
        )
    })
}

/// Sizes: a number of bytes with an optional unit (B, KiB, MiB, GiB, KB, MB, GB).
pub(super) fn parse_size(key: &str, v: &str) -> Result<u64, ConfigError> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| invalid(key, format!("{v:?} is not a size; write e.g. \"4MiB\"")))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(invalid(key, format!("unknown size unit {other:?}"))),
    };
    n.checked_mul(mult)
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(key, format!("{v:?} is out of range")))
}

pub(super) fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("{v:?} is not an address like 127.0.0.1:8080")))
}

pub(super) fn parse_cidr(key: &str, v: &str) -> Result<IpNet, ConfigError> {
    v.parse::<IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| invalid(key, format!("{v:?} is not a CIDR like 10.0.0.0/8")))
}

pub(super) fn parse_public_url(key: &str, v: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(v).map_err(|e| invalid(key, format!("{v:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(key, "must be an http(s) URL with a host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("k", "4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("k", "100").unwrap(), 100);
        assert!(parse_size("k", "lots").is_err());
        assert!(parse_size("k", "0").is_err());
    }
}
