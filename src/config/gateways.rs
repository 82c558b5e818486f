//! `[hosted]` (topics this hub publishes, with their history) and `[webfinger]` (names).

use std::time::Duration;

use serde::Deserialize;

use super::values::{parse_duration, parse_size};
use super::{ConfigError, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHosted {
    enabled: bool,
    page_size: usize,
    max_entries: u64,
    max_age: String,
    max_entry_bytes: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebfinger {
    enabled: bool,
    domain: String,
    allow_http: bool,
}

/// Topics the hub publishes at `/t/{name}`.
#[derive(Debug, Clone)]
pub struct HostedConfig {
    pub enabled: bool,
    /// Entries in a feed document and in each archive page.
    pub page_size: usize,
    /// History kept by a topic created without its own numbers (0: no limit).
    pub max_entries: u64,
    pub max_age: Duration,
    /// Largest entry taken (title, content and the rest, as posted).
    pub max_entry_bytes: usize,
}

/// `/.well-known/webfinger` and resolving names.
#[derive(Debug, Clone)]
pub struct WebfingerConfig {
    pub enabled: bool,
    /// The host of `acct:` names; `None`: the hub URL's host.
    pub domain: Option<String>,
    /// Names may be looked up over plain HTTP (development and tests only).
    pub allow_http: bool,
}

pub(super) fn validate_hosted(r: RawHosted) -> Result<HostedConfig, ConfigError> {
    if !(1..=500).contains(&r.page_size) {
        return Err(invalid("hosted.page_size", "must be between 1 and 500"));
    }
    let max_entry_bytes = parse_size("hosted.max_entry_bytes", &r.max_entry_bytes)?;
    if !(256..=16 << 20).contains(&max_entry_bytes) {
        return Err(invalid(
            "hosted.max_entry_bytes",
            "must be between 256 bytes and 16MiB",
        ));
    }
    Ok(HostedConfig {
        enabled: r.enabled,
        page_size: r.page_size,
        max_entries: r.max_entries,
        max_age: parse_duration("hosted.max_age", &r.max_age)?,
        max_entry_bytes: max_entry_bytes as usize,
    })
}

pub(super) fn validate_webfinger(r: RawWebfinger) -> Result<WebfingerConfig, ConfigError> {
    let domain = match r.domain.trim() {
        "" => None,
        d if d.len() <= 253
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) =>
        {
            Some(d.to_ascii_lowercase())
        }
        d => {
            return Err(invalid(
                "webfinger.domain",
                format!("{d:?} is not a host name (letters, digits, '.', '-')"),
            ));
        }
    };
    Ok(WebfingerConfig {
        enabled: r.enabled,
        domain,
        allow_http: r.allow_http,
    })
}
