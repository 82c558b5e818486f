//! `[hosted]` (topics this hub publishes, with their history), `[webfinger]` (names),
//! `[lmtp]` (mail into hosted topics), `[smtp]` (topics out to mail) and `[nntp]` (topics as
//! newsgroups).

use std::net::SocketAddr;
use std::path::PathBuf;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLmtp {
    enabled: bool,
    listen: String,
    domain: String,
    max_message: String,
    max_connections: usize,
    idle_timeout: String,
}

/// Where the LMTP door listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for LmtpListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LmtpListen::Tcp(a) => write!(f, "{a}"),
            LmtpListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Mail into hosted topics: an LMTP listener behind the operator's mail server.
#[derive(Debug, Clone)]
pub struct LmtpConfig {
    pub enabled: bool,
    pub listen: LmtpListen,
    /// The lists' mail domain: a hosted topic NAME is NAME@domain.
    pub domain: String,
    /// Largest message taken (bigger ones: 552).
    pub max_message: usize,
    pub max_connections: usize,
    /// A session silent this long is closed.
    pub idle_timeout: Duration,
}

pub(super) fn parse_listen(key: &str, v: &str) -> Result<LmtpListen, ConfigError> {
    if let Some(path) = v.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(invalid(
                key,
                format!("{v:?}: the socket path must be absolute"),
            ));
        }
        return Ok(LmtpListen::Unix(path));
    }
    let addr: SocketAddr = v.parse().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not \"IP:PORT\" or \"unix:/absolute/path\""),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(invalid(
            key,
            format!(
                "{addr} is not a loopback address: LMTP has no authentication, so it listens on loopback or a Unix socket behind the mail server"
            ),
        ));
    }
    Ok(LmtpListen::Tcp(addr))
}

pub(super) fn validate_lmtp(r: RawLmtp, hosted: &HostedConfig) -> Result<LmtpConfig, ConfigError> {
    let listen = parse_listen("lmtp.listen", r.listen.trim())?;
    let domain = r.domain.trim().to_ascii_lowercase();
    if r.enabled {
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
        {
            return Err(invalid(
                "lmtp.domain",
                format!(
                    "{domain:?}: the lists' mail domain is required (e.g. \"lists.example.org\")"
                ),
            ));
        }
        if !hosted.enabled {
            return Err(invalid(
                "lmtp.enabled",
                "mail goes into hosted topics: set hosted.enabled = true as well",
            ));
        }
    }
    let max_message = parse_size("lmtp.max_message", &r.max_message)?;
    if !(1024..=64 << 20).contains(&max_message) {
        return Err(invalid(
            "lmtp.max_message",
            "must be between 1KiB and 64MiB",
        ));
    }
    if r.max_connections == 0 {
        return Err(invalid("lmtp.max_connections", "must be at least 1"));
    }
    Ok(LmtpConfig {
        enabled: r.enabled,
        listen,
        domain,
        max_message: max_message as usize,
        max_connections: r.max_connections,
        idle_timeout: parse_duration("lmtp.idle_timeout", &r.idle_timeout)?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    enabled: bool,
    smarthost: String,
    from_domain: String,
    timeout: String,
    max_bounces: u32,
}

/// Topics out to mail: mail subscribers, sent through the operator's SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub enabled: bool,
    /// The operator's mail server (host, port), plain SMTP.
    pub smarthost: (String, u16),
    /// The domain of list addresses in `From` (NAME@from_domain).
    pub from_domain: String,
    pub timeout: Duration,
    /// Hard bounces after which a mail subscription ends.
    pub max_bounces: u32,
}

pub(super) fn validate_smtp(r: RawSmtp, lmtp: &LmtpConfig) -> Result<SmtpConfig, ConfigError> {
    let url = r.smarthost.trim();
    let smarthost = match url::Url::parse(url) {
        Ok(u) if u.scheme() == "smtp" && u.host_str().is_some() => (
            u.host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned(),
            u.port().unwrap_or(25),
        ),
        Ok(u) if u.scheme() == "smtps" => {
            return Err(invalid(
                "smtp.smarthost",
                "smtps:// is not supported: relay through a local mail server over smtp://",
            ));
        }
        _ => {
            return Err(invalid(
                "smtp.smarthost",
                format!("{url:?} is not a URL like \"smtp://localhost:25\""),
            ));
        }
    };
    let from_domain = match r.from_domain.trim() {
        "" => lmtp.domain.clone(),
        d => d.to_ascii_lowercase(),
    };
    if r.enabled {
        if from_domain.is_empty() {
            return Err(invalid(
                "smtp.from_domain",
                "the domain of list addresses is required (or set lmtp.domain)",
            ));
        }
        if !lmtp.enabled {
            return Err(invalid(
                "smtp.enabled",
                "mail subscribers confirm, unsubscribe and bounce by mail: set lmtp.enabled = true as well",
            ));
        }
    }
    if r.max_bounces == 0 {
        return Err(invalid("smtp.max_bounces", "must be at least 1"));
    }
    Ok(SmtpConfig {
        enabled: r.enabled,
        smarthost,
        from_domain,
        timeout: parse_duration("smtp.timeout", &r.timeout)?,
        max_bounces: r.max_bounces,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNntp {
    enabled: bool,
    #[serde(default)]
    groups: Vec<RawGroup>,
    listen: String,
    group_prefix: String,
    path_host: String,
    max_connections_per_client: usize,
    idle_timeout: String,
}

/// `[[nntp.groups]]`: a topic the hub does not host, opted in as a newsgroup.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    topic: String,
}

/// A topic the hub does not host, served as the group `group_prefix.name`: its entries are
/// kept as they arrive (a mirror), from when it was opted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredGroup {
    pub name: String,
    pub topic: String,
}

/// Hosted topics as read-only newsgroups.
#[derive(Debug, Clone)]
pub struct NntpConfig {
    pub enabled: bool,
    /// Other topics opted in.
    pub groups: Vec<MirroredGroup>,
    pub listen: SocketAddr,
    /// Groups are `group_prefix.NAME`.
    pub group_prefix: String,
    /// The server's name in `Path` and `Xref`; `None`: the hub URL's host.
    pub path_host: Option<String>,
    pub max_connections_per_client: usize,
    pub idle_timeout: Duration,
}

pub(super) fn validate_nntp(r: RawNntp, hosted: &HostedConfig) -> Result<NntpConfig, ConfigError> {
    let listen: SocketAddr = r.listen.trim().parse().map_err(|_| {
        invalid(
            "nntp.listen",
            format!("{:?} is not \"IP:PORT\", e.g. \"127.0.0.1:1119\"", r.listen),
        )
    })?;
    let prefix = r.group_prefix.trim().to_ascii_lowercase();
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 200
        && !prefix.starts_with('.')
        && !prefix.ends_with('.')
        && !prefix.contains("..")
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !prefix_ok {
        return Err(invalid(
            "nntp.group_prefix",
            format!("{prefix:?} is not a newsgroup name prefix like \"hub.example\""),
        ));
    }
    if r.enabled && !hosted.enabled {
        return Err(invalid(
            "nntp.enabled",
            "newsgroups are hosted topics: set hosted.enabled = true as well",
        ));
    }
    if r.max_connections_per_client == 0 {
        return Err(invalid(
            "nntp.max_connections_per_client",
            "must be at least 1",
        ));
    }
    let path_host = match r.path_host.trim() {
        "" => None,
        h if h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b)) =>
        {
            Some(h.to_owned())
        }
        h => {
            return Err(invalid(
                "nntp.path_host",
                format!("{h:?} is not a host name"),
            ));
        }
    };
    let mut groups: Vec<MirroredGroup> = Vec::with_capacity(r.groups.len());
    for (i, g) in r.groups.into_iter().enumerate() {
        let key = format!("nntp.groups[{i}]");
        crate::hosted::valid_name(&g.name).map_err(|e| invalid(&format!("{key}.name"), e))?;
        let topic = crate::urls::HttpUrl::parse(g.topic.trim())
            .map_err(|e| invalid(&format!("{key}.topic"), e.to_string()))?;
        if groups.iter().any(|o| o.name == g.name) {
            return Err(invalid(
                &format!("{key}.name"),
                format!("{:?} is named twice", g.name),
            ));
        }
        groups.push(MirroredGroup {
            name: g.name,
            topic: topic.to_string(),
        });
    }
    Ok(NntpConfig {
        enabled: r.enabled,
        groups,
        listen,
        group_prefix: prefix,
        path_host,
        max_connections_per_client: r.max_connections_per_client,
        idle_timeout: parse_duration("nntp.idle_timeout", &r.idle_timeout)?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// The error of a config made of the defaults and `layer`.
    fn error_of(layer: &str) -> String {
        match Config::from_toml_layers(&[layer]) {
            Ok(_) => panic!("{layer:?} was taken"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_door_names_the_key_at_fault() {
        for (layer, key) in [
            ("[hosted]\npage_size = 0", "hosted.page_size"),
            (
                "[hosted]\nmax_entry_bytes = \"1\"",
                "hosted.max_entry_bytes",
            ),
            ("[webfinger]\ndomain = \"a b\"", "webfinger.domain"),
            (
                "[hosted]\nenabled = true\n[lmtp]\nenabled = true",
                "lmtp.domain",
            ),
            (
                "[lmtp]\nenabled = true\ndomain = \"l.example\"",
                "lmtp.enabled",
            ),
            ("[lmtp]\nlisten = \"0.0.0.0:24\"", "lmtp.listen"),
            ("[lmtp]\nlisten = \"unix:relative.sock\"", "lmtp.listen"),
            (
                "[smtp]\nsmarthost = \"smtps://mx.example\"",
                "smtp.smarthost",
            ),
            (
                "[hosted]\nenabled = true\n[smtp]\nenabled = true\nfrom_domain = \"l.example\"",
                "smtp.enabled",
            ),
            ("[nntp]\ngroup_prefix = \"a..b\"", "nntp.group_prefix"),
            ("[nntp]\nenabled = true", "nntp.enabled"),
            (
                "[[nntp.groups]]\nname = \"a\"\ntopic = \"https://x.example/f\"\n[[nntp.groups]]\nname = \"a\"\ntopic = \"https://y.example/f\"",
                "nntp.groups[1].name",
            ),
            (
                "[[nntp.groups]]\nname = \"a\"\ntopic = \"ftp://x.example/f\"",
                "nntp.groups[0].topic",
            ),
        ] {
            let e = error_of(layer);
            assert!(e.contains(key), "{layer:?}: {e}");
        }
    }

    #[test]
    fn the_doors_are_off_by_default_and_start_together() {
        let cfg = Config::from_toml_layers(&[]).unwrap();
        assert!(!cfg.hosted.enabled && !cfg.webfinger.enabled && !cfg.lmtp.enabled);
        assert!(!cfg.smtp.enabled && !cfg.nntp.enabled);
        let all = "[hosted]\nenabled = true\n[webfinger]\nenabled = true\n[lmtp]\nenabled = true\ndomain = \"Lists.Example\"\n[smtp]\nenabled = true\n[nntp]\nenabled = true";
        let cfg = Config::from_toml_layers(&[all]).unwrap();
        assert_eq!(cfg.lmtp.domain, "lists.example");
        assert_eq!(cfg.smtp.from_domain, "lists.example", "from lmtp.domain");
        assert_eq!(cfg.smtp.smarthost, ("localhost".to_owned(), 25));
    }
}
