//! Configuration: embedded defaults, an optional file, `HUBCAST_…` environment variables, flags.
//!
//! Loading never binds anything; every error names the key at fault.

pub mod gateways;
mod layers;
pub mod multicast;
mod problems;
mod raw;
pub mod relay;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use url::Url;

use crate::signature::Algorithm;
use layers::{env_value, merge, parse_toml, set_path};
use values::{parse_addr, parse_cidr, parse_public_url};

/// The documented defaults, compiled in.
pub const DEFAULTS: &str = include_str!("../../hub-config/hubcast.toml");
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
    /// A bad key, with the layer that set it (a file, an environment variable, the defaults).
    #[error("config key `{key}` (set by {origin}): {message}")]
    Located {
        key: String,
        origin: String,
        message: String,
    },
    #[error("the config has {} problems:{}", .0.len(), list(.0))]
    Many(Vec<ConfigError>),
}

fn list(problems: &[ConfigError]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffConfig {
    pub json_feed_items: bool,
    pub max_entries: usize,
}

/// A publisher allowed to send fat pings for topics under `topics` (URL prefixes).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    pub name: String,
    pub topics: Vec<String>,
    /// `topics`, parsed (filled in when the config is validated).
    #[serde(skip)]
    pub prefixes: Vec<crate::topic_prefix::TopicPrefix>,
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
    Postgres,
}

/// A database URL: it may hold a password, so it is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub String);

impl SecretUrl {
    /// The URL without its password.
    pub fn shown(&self) -> String {
        crate::storage::postgres::describe_url(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

/// How nodes sharing a database keep in touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTimes {
    /// How long a node's claim on work lasts unless renewed (every third of it).
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    pub poll_interval: Duration,
    pub rescan_interval: Duration,
    /// How long a node that takes a topic to fetch waits first, gathering the pings that reach
    /// other nodes at about the same moment into the same fetch.
    pub ping_gather: Duration,
}

/// The validated configuration the hub runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: derived from the bound address at start-up.
    pub public_url: Option<Url>,
    pub max_body: usize,
    /// Time allowed to receive a whole request body once its headers are in.
    pub body_timeout: Duration,
    /// Open connections from one client address (IPv6: one /64); 0: no cap.
    pub max_connections_per_client: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for the rate limits).
    pub trusted_proxies: Vec<IpNet>,
    pub http_workers: usize,
    pub engine_threads: usize,
    /// Time in-flight deliveries get to finish when the hub stops.
    pub shutdown_deadline: Duration,
    pub backend: Backend,
    pub data_dir: PathBuf,
    pub cache_capacity: u64,
    /// How long, and up to how many bytes, the event log keeps events.
    pub retention: crate::storage::Retention,
    /// This node's name in claims on shared work; `None`: the store's hub id (one node per
    /// store).
    pub node_id: Option<String>,
    pub cluster: ClusterTimes,
    /// The database of [`Backend::Postgres`].
    pub postgres_url: Option<SecretUrl>,
    /// Most connections to it.
    pub pool_size: usize,
    pub default_lease: Duration,
    pub min_lease: Duration,
    pub max_lease: Duration,
    pub verify_timeout: Duration,
    pub allowed_topics: Vec<crate::topic_prefix::TopicPrefix>,
    pub sweep_interval: Duration,
    pub fetch_timeout: Duration,
    pub fetch_max_bytes: usize,
    pub fetch_max_redirects: usize,
    /// Topic fetches in flight, in all and per origin (`fetch.concurrency`, `fetch.per_origin`).
    pub fetch_limit: CallLimit,
    /// Verifications in flight, in all and per callback origin
    /// (`subscriptions.verify_concurrency`, `subscriptions.verify_per_origin`).
    pub verify_limit: CallLimit,
    /// Rate limits (`[limits]`); `None` is off.
    pub limits: Limits,
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
    /// The stream served to peers and the upstreams followed.
    pub relay: relay::RelayConfig,
    /// Topics this hub publishes (`[hosted]`).
    pub hosted: gateways::HostedConfig,
    /// Names (`[webfinger]`).
    pub webfinger: gateways::WebfingerConfig,
    /// Mail into hosted topics (`[lmtp]`).
    pub lmtp: gateways::LmtpConfig,
    /// Topics out to mail (`[smtp]`).
    pub smtp: gateways::SmtpConfig,
    /// Topics as newsgroups (`[nntp]`).
    pub nntp: gateways::NntpConfig,
}

/// What anonymous clients can make the hub do (`[limits]`); `None` is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub subscriptions_per_client: Option<crate::rate_limit::Rate>,
    pub pings_per_client: Option<crate::rate_limit::Rate>,
    pub verifications_per_host: Option<crate::rate_limit::Rate>,
    pub fetches_per_topic: Option<crate::rate_limit::Rate>,
}

/// Outbound calls of one kind in flight: in all, and for one origin (host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimit {
    pub concurrency: usize,
    pub per_origin: usize,
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
        let defaults = parse_toml("defaults", DEFAULTS)?;
        let mut value = defaults.clone();
        let mut origins = problems::Origins::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let layer = parse_toml(&path.display().to_string(), &text)?;
            origins.layer(&layer, &format!("file {}", path.display()));
            merge(&mut value, layer);
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut value, &path, env_value(&raw))
                .map_err(|message| invalid(&format!("{name} ({})", path.join(".")), message))?;
            origins.set(&path.join("."), &format!("environment variable {name}"));
        }
        let mut cfg = problems::validate(value, &defaults, &origins)?;
        cfg.apply(overrides)?;
        Ok(cfg)
    }

    /// Defaults plus TOML snippets layered in order; for tests and tools.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Config, ConfigError> {
        let defaults = parse_toml("defaults", DEFAULTS)?;
        let mut value = defaults.clone();
        let mut origins = problems::Origins::default();
        for (i, text) in layers.iter().enumerate() {
            let layer = parse_toml(&format!("layer {i}"), text)?;
            origins.layer(&layer, &format!("layer {i}"));
            merge(&mut value, layer);
        }
        problems::validate(value, &defaults, &origins)
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
    fn outbound_limits_are_checked() {
        let cfg = load_env(&[]).unwrap();
        assert_eq!(cfg.fetch_limit.per_origin, 4);
        assert_eq!(cfg.verify_limit.concurrency, 512);
        let err = Config::from_toml_str("[fetch]\nconcurrency = 8\nper_origin = 5").unwrap_err();
        assert!(err.to_string().contains("fetch.per_origin"), "{err}");
        let err = Config::from_toml_str("[subscriptions]\nverify_concurrency = 1").unwrap_err();
        assert!(
            err.to_string().contains("subscriptions.verify_concurrency"),
            "{err}"
        );
        let cfg = Config::from_toml_str("[subscriptions]\nverify_per_origin = 16").unwrap();
        assert_eq!(cfg.verify_limit.per_origin, 16);
    }

    #[test]
    fn topic_prefixes_are_checked() {
        let err = Config::from_toml_str(
            "[[publishers]]\nname = \"p\"\ntopics = [\"http://a/\", \"a/b\"]\ntoken = \"t\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("publishers[0].topics[1]"), "{err}");
        let err = Config::from_toml_str("[subscriptions]\nallowed_topics = [\"http://a/?q\"]")
            .unwrap_err();
        assert!(
            err.to_string().contains("subscriptions.allowed_topics[0]"),
            "{err}"
        );
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
    fn event_log_and_cluster_keys_are_checked() {
        let cfg = load_env(&[]).unwrap();
        assert_eq!(cfg.retention.max_age_ms, 7 * 86_400_000);
        assert_eq!(cfg.retention.max_bytes, 256 << 20);
        assert_eq!(cfg.node_id, None, "one node per store unless named");
        let cfg = Config::from_toml_str("[cluster]\nnode_id = \"hub-2.eu\"").unwrap();
        assert_eq!(cfg.node_id.as_deref(), Some("hub-2.eu"));
        let err = Config::from_toml_str("[cluster]\nnode_id = \"a b\"").unwrap_err();
        assert!(err.to_string().contains("cluster.node_id"), "{err}");
        let err = Config::from_toml_str("[events]\nmax_age = \"forever\"").unwrap_err();
        assert!(err.to_string().contains("events.max_age"), "{err}");
        let err = Config::from_toml_str("[events]\nmax_bytes = \"lots\"").unwrap_err();
        assert!(err.to_string().contains("events.max_bytes"), "{err}");
    }

    #[test]
    fn the_postgres_backend_needs_a_url_and_never_shows_its_password() {
        let err = Config::from_toml_str("[storage]\nbackend = \"postgres\"").unwrap_err();
        assert!(
            err.to_string().contains("storage.backend") && err.to_string().contains("postgres_url"),
            "{err}"
        );
        let cfg = Config::from_toml_str(
            "[storage]\nbackend = \"postgres\"\npostgres_url = \"postgres://hub:s3cret-pw@db:5432/hub\"\npool_size = 4",
        )
        .unwrap();
        assert_eq!(cfg.backend, Backend::Postgres);
        assert_eq!(cfg.pool_size, 4);
        assert!(!format!("{cfg:?}").contains("s3cret-pw"), "{cfg:?}");
        let err = Config::from_toml_str("[storage]\npostgres_url = \"postgres://h:notaport/x\"")
            .unwrap_err();
        assert!(err.to_string().contains("storage.postgres_url"), "{err}");
        let err = Config::from_toml_str("[storage]\npool_size = 0").unwrap_err();
        assert!(err.to_string().contains("storage.pool_size"), "{err}");
        let cfg = load_env(&[]).unwrap();
        assert_eq!(cfg.cluster.lease, Duration::from_secs(60));
        for key in [
            "lease",
            "heartbeat_interval",
            "poll_interval",
            "rescan_interval",
        ] {
            let err = Config::from_toml_str(&format!("[cluster]\n{key} = \"0s\"")).unwrap_err();
            assert!(err.to_string().contains(&format!("cluster.{key}")), "{err}");
        }
    }

    #[test]
    fn publisher_needs_credentials() {
        let err = Config::from_toml_str("[[publishers]]\nname = \"a\"\ntopics = [\"https://a/\"]")
            .unwrap_err();
        assert!(err.to_string().contains("publishers[0]"), "{err}");
    }
}
