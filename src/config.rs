//! Configuration: embedded defaults, an optional file, `HUBCAST_…` environment variables, flags.
//!
//! Loading never binds anything; every error names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use url::Url;

use crate::signature::Algorithm;

/// The documented defaults, compiled in.
pub const DEFAULTS: &str = include_str!("../hub-config/hubcast.toml");
/// Prefix of environment variables that override keys (`HUBCAST_SECTION__KEY`).
pub const ENV_PREFIX: &str = "HUBCAST_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The file as written: strings for durations and sizes, checked in [`RawConfig::validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    subscriptions: RawSubscriptions,
    fetch: RawFetch,
    delivery: RawDelivery,
    diff: DiffConfig,
    ssrf: RawSsrf,
    admin: RawAdmin,
    log: RawLog,
    #[serde(default)]
    publishers: Vec<PublisherConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: String,
    history_per_callback: usize,
    history_callbacks: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: String,
    level: String,
}

/// The status page and admin API.
#[derive(Clone)]
pub struct AdminConfig {
    /// `None`: served to direct loopback clients only.
    pub token: Option<String>,
    pub history_per_callback: usize,
    pub history_callbacks: usize,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("history_per_callback", &self.history_per_callback)
            .field("history_callbacks", &self.history_callbacks)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    public_url: String,
    max_body: String,
    http_workers: usize,
    engine_threads: usize,
    shutdown_deadline: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    backend: String,
    data_dir: PathBuf,
    cache_capacity: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscriptions {
    default_lease: String,
    min_lease: String,
    max_lease: String,
    verify_timeout: String,
    allowed_topics: Vec<String>,
    sweep_interval: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    timeout: String,
    max_bytes: String,
    max_redirects: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    timeout: String,
    connect_timeout: String,
    per_destination: usize,
    initial_window: usize,
    dead_after: u32,
    probe_interval: String,
    max_probe_interval: String,
    max_retry_after: String,
    max_in_flight: usize,
    retry_schedule: Vec<String>,
    signature: String,
    page_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffConfig {
    pub json_feed_items: bool,
    pub max_entries: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsrf {
    callback_allow: Vec<String>,
    topic_allow: Vec<String>,
}

/// A publisher allowed to send fat pings for topics under `topics` (URL prefixes).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    pub name: String,
    pub topics: Vec<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

impl std::fmt::Debug for PublisherConfig {
    // Credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Memory,
}

/// The validated configuration the hub runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: derived from the bound address at start-up.
    pub public_url: Option<Url>,
    pub max_body: usize,
    pub http_workers: usize,
    pub engine_threads: usize,
    /// Time in-flight deliveries get to finish when the hub stops.
    pub shutdown_deadline: Duration,
    pub backend: Backend,
    pub data_dir: PathBuf,
    pub cache_capacity: u64,
    pub default_lease: Duration,
    pub min_lease: Duration,
    pub max_lease: Duration,
    pub verify_timeout: Duration,
    pub allowed_topics: Vec<String>,
    pub sweep_interval: Duration,
    pub fetch_timeout: Duration,
    pub fetch_max_bytes: usize,
    pub fetch_max_redirects: usize,
    pub delivery_timeout: Duration,
    pub connect_timeout: Duration,
    pub per_destination: usize,
    pub window: WindowConfig,
    pub max_in_flight: usize,
    pub retry_schedule: Vec<Duration>,
    pub signature: Algorithm,
    pub page_size: usize,
    pub diff: DiffConfig,
    pub callback_allow: Vec<IpNet>,
    pub topic_allow: Vec<IpNet>,
    pub publishers: Vec<PublisherConfig>,
    pub admin: AdminConfig,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// The adaptive concurrency window of each destination server.
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Window of a destination not seen before (and of one that comes back from dead).
    pub initial: usize,
    /// Largest window (`delivery.per_destination`).
    pub max: usize,
    /// Consecutive failures after which a destination is dead.
    pub dead_after: u32,
    pub probe_interval: Duration,
    pub max_probe_interval: Duration,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

/// Flags given on the command line; they win over every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub allow_cidr: Vec<String>,
}

impl Config {
    /// Defaults, then `file`, then the given environment variables, then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut value = parse_toml("defaults", DEFAULTS)?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let layer = parse_toml(&path.display().to_string(), &text)?;
            merge(&mut value, layer);
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut value, &path, env_value(&raw))
                .map_err(|message| invalid(&format!("{name} ({})", path.join(".")), message))?;
        }
        let raw: RawConfig = RawConfig::deserialize(value).map_err(|e| ConfigError::Parse {
            origin: "(merged layers)".into(),
            message: e.to_string().trim().to_owned(),
        })?;
        let mut cfg = raw.validate()?;
        cfg.apply(overrides)?;
        Ok(cfg)
    }

    /// Defaults plus TOML snippets layered in order; for tests and tools.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Config, ConfigError> {
        let mut value = parse_toml("defaults", DEFAULTS)?;
        for (i, text) in layers.iter().enumerate() {
            merge(&mut value, parse_toml(&format!("layer {i}"), text)?);
        }
        let raw = RawConfig::deserialize(value).map_err(|e| ConfigError::Parse {
            origin: "(merged layers)".into(),
            message: e.to_string().trim().to_owned(),
        })?;
        raw.validate()
    }

    /// Defaults plus one TOML snippet.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_layers(&[text])
    }

    fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(listen) = &o.listen {
            self.listen = parse_addr("--listen", listen)?;
        }
        if let Some(dir) = &o.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(url) = &o.public_url {
            self.public_url = Some(parse_public_url("--public-url", url)?);
        }
        for cidr in &o.allow_cidr {
            let net = parse_cidr("--allow-cidr", cidr)?;
            self.callback_allow.push(net);
            self.topic_allow.push(net);
        }
        Ok(())
    }

    /// Lease actually granted for a requested one.
    pub fn clamp_lease(&self, requested: Option<u64>) -> u64 {
        let requested = requested
            .map(Duration::from_secs)
            .unwrap_or(self.default_lease);
        requested.clamp(self.min_lease, self.max_lease).as_secs()
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let s = self.server;
        let public_url = match s.public_url.trim() {
            "" => None,
            url => Some(parse_public_url("server.public_url", url)?),
        };
        if s.http_workers == 0 || s.http_workers > 64 {
            return Err(invalid("server.http_workers", "must be between 1 and 64"));
        }
        if s.engine_threads == 0 || s.engine_threads > 64 {
            return Err(invalid("server.engine_threads", "must be between 1 and 64"));
        }
        let backend = match self.storage.backend.as_str() {
            "sled" => Backend::Sled,
            "memory" => Backend::Memory,
            other => {
                return Err(invalid(
                    "storage.backend",
                    format!("unknown backend {other:?}; expected \"sled\" or \"memory\""),
                ));
            }
        };
        let sub = self.subscriptions;
        let min_lease = parse_duration("subscriptions.min_lease", &sub.min_lease)?;
        let max_lease = parse_duration("subscriptions.max_lease", &sub.max_lease)?;
        let default_lease = parse_duration("subscriptions.default_lease", &sub.default_lease)?;
        if min_lease.as_secs() == 0 {
            return Err(invalid("subscriptions.min_lease", "must be at least 1s"));
        }
        if max_lease < min_lease {
            return Err(invalid(
                "subscriptions.max_lease",
                "must not be shorter than subscriptions.min_lease",
            ));
        }
        for (i, t) in sub.allowed_topics.iter().enumerate() {
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(invalid(
                    &format!("subscriptions.allowed_topics[{i}]"),
                    "must be an http(s) URL prefix",
                ));
            }
        }
        let d = self.delivery;
        if d.per_destination == 0 {
            return Err(invalid("delivery.per_destination", "must be at least 1"));
        }
        if d.initial_window == 0 || d.initial_window > d.per_destination {
            return Err(invalid(
                "delivery.initial_window",
                "must be between 1 and delivery.per_destination",
            ));
        }
        if d.dead_after == 0 {
            return Err(invalid("delivery.dead_after", "must be at least 1"));
        }
        let probe_interval = parse_duration("delivery.probe_interval", &d.probe_interval)?;
        let max_probe_interval =
            parse_duration("delivery.max_probe_interval", &d.max_probe_interval)?;
        if probe_interval.is_zero() || max_probe_interval < probe_interval {
            return Err(invalid(
                "delivery.max_probe_interval",
                "must be at least delivery.probe_interval, which must not be zero",
            ));
        }
        let window = WindowConfig {
            initial: d.initial_window,
            max: d.per_destination,
            dead_after: d.dead_after,
            probe_interval,
            max_probe_interval,
            max_retry_after: parse_duration("delivery.max_retry_after", &d.max_retry_after)?,
        };
        if d.max_in_flight == 0 {
            return Err(invalid("delivery.max_in_flight", "must be at least 1"));
        }
        if d.page_size == 0 {
            return Err(invalid("delivery.page_size", "must be at least 1"));
        }
        let retry_schedule = d
            .retry_schedule
            .iter()
            .enumerate()
            .map(|(i, v)| parse_duration(&format!("delivery.retry_schedule[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?;
        let signature = Algorithm::parse(&d.signature).ok_or_else(|| {
            invalid(
                "delivery.signature",
                format!(
                    "unknown algorithm {:?}; expected sha1, sha256, sha384 or sha512",
                    d.signature
                ),
            )
        })?;
        if self.diff.max_entries == 0 {
            return Err(invalid("diff.max_entries", "must be at least 1"));
        }
        let cidrs = |key: &str, list: &[String]| -> Result<Vec<IpNet>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, c)| parse_cidr(&format!("{key}[{i}]"), c))
                .collect()
        };
        for (i, p) in self.publishers.iter().enumerate() {
            let key = format!("publishers[{i}]");
            if p.secret.is_none() && p.token.is_none() {
                return Err(invalid(&key, "needs a `secret` or a `token`"));
            }
            if p.topics.is_empty() {
                return Err(invalid(
                    &format!("{key}.topics"),
                    "must name at least one topic prefix",
                ));
            }
            if p.secret.as_deref() == Some("") || p.token.as_deref() == Some("") {
                return Err(invalid(&key, "`secret` and `token` must not be empty"));
            }
        }
        let a = self.admin;
        let token = match a.token.trim() {
            "" => None,
            t if t.len() < 16 => {
                return Err(invalid("admin.token", "must be at least 16 characters"));
            }
            t => Some(t.to_owned()),
        };
        if a.history_per_callback > 1000 {
            return Err(invalid(
                "admin.history_per_callback",
                "must be at most 1000",
            ));
        }
        if a.history_callbacks > 10_000_000 {
            return Err(invalid(
                "admin.history_callbacks",
                "must be at most 10000000",
            ));
        }
        let admin = AdminConfig {
            token,
            history_per_callback: a.history_per_callback,
            history_callbacks: a.history_callbacks,
        };
        let log_format = match self.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("unknown format {other:?}; expected \"human\" or \"json\""),
                ));
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a filter like \"info\" or \"hubcast=debug,warn\"",
                    self.log.level
                ),
            ));
        }
        Ok(Config {
            listen: parse_addr("server.listen", &s.listen)?,
            shutdown_deadline: parse_duration("server.shutdown_deadline", &s.shutdown_deadline)?,
            public_url,
            max_body: parse_size("server.max_body", &s.max_body)? as usize,
            http_workers: s.http_workers,
            engine_threads: s.engine_threads,
            backend,
            data_dir: self.storage.data_dir,
            cache_capacity: parse_size("storage.cache_capacity", &self.storage.cache_capacity)?,
            default_lease,
            min_lease,
            max_lease,
            verify_timeout: parse_duration("subscriptions.verify_timeout", &sub.verify_timeout)?,
            allowed_topics: sub.allowed_topics,
            sweep_interval: parse_duration("subscriptions.sweep_interval", &sub.sweep_interval)?,
            fetch_timeout: parse_duration("fetch.timeout", &self.fetch.timeout)?,
            fetch_max_bytes: parse_size("fetch.max_bytes", &self.fetch.max_bytes)? as usize,
            fetch_max_redirects: self.fetch.max_redirects,
            delivery_timeout: parse_duration("delivery.timeout", &d.timeout)?,
            connect_timeout: parse_duration("delivery.connect_timeout", &d.connect_timeout)?,
            per_destination: d.per_destination,
            window,
            max_in_flight: d.max_in_flight,
            retry_schedule,
            signature,
            page_size: d.page_size,
            diff: self.diff,
            callback_allow: cidrs("ssrf.callback_allow", &self.ssrf.callback_allow)?,
            topic_allow: cidrs("ssrf.topic_allow", &self.ssrf.topic_allow)?,
            publishers: self.publishers,
            admin,
            log_format,
            log_level: self.log.level,
        })
    }
}

fn parse_toml(origin: &str, text: &str) -> Result<toml::Value, ConfigError> {
    toml::from_str::<toml::Table>(text)
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim().to_owned(),
        })
}

/// Tables merge key by key; any other value replaces the one below it.
fn merge(base: &mut toml::Value, layer: toml::Value) {
    match (base, layer) {
        (toml::Value::Table(b), toml::Value::Table(l)) => {
            for (k, v) in l {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, l) => *b = l,
    }
}

/// An environment value is read as a TOML value when it is one (numbers, booleans, arrays),
/// otherwise as a plain string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(root: &mut toml::Value, path: &[String], v: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cur = root;
    for p in parents {
        let table = cur.as_table_mut().ok_or("not a table")?;
        cur = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = cur.as_table_mut().ok_or("not a table")?;
    // A string given for a non-string key (e.g. a number) is left for the type check to report.
    table.insert(last.clone(), v);
    Ok(())
}

pub fn parse_duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v.trim()).map_err(|e| {
        invalid(
            key,
            format!("{v:?} is not a duration ({e}); write e.g. \"10s\""),
        )
    })
}

/// Sizes: a number of bytes with an optional unit (B, KiB, MiB, GiB, KB, MB, GB).
pub fn parse_size(key: &str, v: &str) -> Result<u64, ConfigError> {
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

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("{v:?} is not an address like 127.0.0.1:8080")))
}

fn parse_cidr(key: &str, v: &str) -> Result<IpNet, ConfigError> {
    v.parse::<IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| invalid(key, format!("{v:?} is not a CIDR like 10.0.0.0/8")))
}

fn parse_public_url(key: &str, v: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(v).map_err(|e| invalid(key, format!("{v:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(key, "must be an http(s) URL with a host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(None, env, &Overrides::default())
    }

    #[test]
    fn defaults_are_valid_and_safe() {
        let cfg = load_env(&[]).unwrap();
        assert_eq!(cfg.backend, Backend::Sled);
        assert!(
            cfg.callback_allow.is_empty(),
            "defaults must not allow-list anything"
        );
        assert!(cfg.topic_allow.is_empty());
        assert_eq!(cfg.default_lease, Duration::from_secs(10 * 86400));
        assert_eq!(cfg.signature, Algorithm::Sha256);
    }

    #[test]
    fn env_overrides_and_names_bad_keys() {
        let cfg = load_env(&[
            ("HUBCAST_DELIVERY__TIMEOUT", "3s"),
            ("HUBCAST_DELIVERY__PER_DESTINATION", "3"),
            ("HUBCAST_SSRF__CALLBACK_ALLOW", "[\"127.0.0.0/8\"]"),
            ("OTHER", "x"),
        ])
        .unwrap();
        assert_eq!(cfg.delivery_timeout, Duration::from_secs(3));
        assert_eq!(cfg.per_destination, 3);
        assert_eq!(cfg.callback_allow.len(), 1);

        let err = load_env(&[("HUBCAST_DELIVERY__TIMEOUT", "soon")]).unwrap_err();
        assert!(err.to_string().contains("delivery.timeout"), "{err}");
        let err = load_env(&[("HUBCAST_DELIVERY__NOPE", "1")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = load_env(&[("HUBCAST_DELIVERY__SIGNATURE", "md5")]).unwrap_err();
        assert!(err.to_string().contains("delivery.signature"), "{err}");
    }

    #[test]
    fn lease_is_clamped() {
        let cfg = Config::from_toml_str("[subscriptions]\nmin_lease = \"60s\"\nmax_lease = \"1h\"")
            .unwrap();
        assert_eq!(cfg.clamp_lease(Some(5)), 60);
        assert_eq!(cfg.clamp_lease(Some(100_000)), 3600);
        assert_eq!(cfg.clamp_lease(Some(120)), 120);
        assert_eq!(cfg.clamp_lease(None), 3600);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("k", "4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("k", "100").unwrap(), 100);
        assert!(parse_size("k", "lots").is_err());
        assert!(parse_size("k", "0").is_err());
    }

    #[test]
    fn admin_and_log_keys_are_checked() {
        let cfg = load_env(&[]).unwrap();
        assert!(cfg.admin.token.is_none());
        assert_eq!(cfg.log_format, LogFormat::Human);
        let err = Config::from_toml_str("[admin]\ntoken = \"short\"").unwrap_err();
        assert!(err.to_string().contains("admin.token"), "{err}");
        let cfg = Config::from_toml_str("[admin]\ntoken = \"0123456789abcdef-x\"").unwrap();
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
        let err = Config::from_toml_str("[log]\nformat = \"xml\"").unwrap_err();
        assert!(err.to_string().contains("log.format"), "{err}");
        let err = Config::from_toml_str("[log]\nlevel = \"hubcast=loud\"").unwrap_err();
        assert!(err.to_string().contains("log.level"), "{err}");
        let err = Config::from_toml_str("[server]\nshutdown_deadline = \"soon\"").unwrap_err();
        assert!(
            err.to_string().contains("server.shutdown_deadline"),
            "{err}"
        );
    }

    #[test]
    fn publisher_needs_credentials() {
        let err = Config::from_toml_str("[[publishers]]\nname = \"a\"\ntopics = [\"https://a/\"]")
            .unwrap_err();
        assert!(err.to_string().contains("publishers[0]"), "{err}");
    }
}
