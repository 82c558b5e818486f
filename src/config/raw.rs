//! The configuration as written (durations and sizes as strings) and its validation into
//! [`Config`]: every check names the key at fault.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::values::{parse_addr, parse_cidr, parse_duration, parse_public_url, parse_size};
use super::{
    AdminConfig, Backend, CallLimit, Config, ConfigError, DiffConfig, Limits, LogFormat,
    PublisherConfig, WindowConfig, invalid,
};
use crate::rate_limit::Rate;
use crate::signature::Algorithm;
use crate::topic_prefix::TopicPrefix;

/// Deserializes merged layers and validates them.
pub(super) fn validate_value(value: toml::Value) -> Result<Config, ConfigError> {
    let raw = RawConfig::deserialize(value).map_err(|e| ConfigError::Parse {
        origin: "(merged layers)".into(),
        message: e.to_string().trim().to_owned(),
    })?;
    raw.validate()
}

/// The file as written: strings for durations and sizes, checked in [`RawConfig::validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    subscriptions: RawSubscriptions,
    fetch: RawFetch,
    delivery: RawDelivery,
    diff: DiffConfig,
    ssrf: RawSsrf,
    admin: RawAdmin,
    events: RawEvents,
    cluster: RawCluster,
    limits: RawLimits,
    log: RawLog,
    relay: super::relay::RawRelay,
    multicast: super::multicast::RawMulticast,
    hosted: super::gateways::RawHosted,
    webfinger: super::gateways::RawWebfinger,
    lmtp: super::gateways::RawLmtp,
    smtp: super::gateways::RawSmtp,
    nntp: super::gateways::RawNntp,
    #[serde(default)]
    publishers: Vec<PublisherConfig>,
    #[serde(default)]
    peers: Vec<super::relay::PeerConfig>,
    #[serde(default)]
    upstreams: Vec<super::relay::UpstreamConfig>,
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
struct RawLimits {
    subscriptions_per_client: String,
    pings_per_client: String,
    verifications_per_host: String,
    fetches_per_topic: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node_id: String,
    lease: String,
    heartbeat_interval: String,
    poll_interval: String,
    rescan_interval: String,
    ping_gather: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    max_age: String,
    max_bytes: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: String,
    level: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    public_url: String,
    max_body: String,
    body_timeout: String,
    max_connections_per_client: usize,
    trusted_proxies: Vec<String>,
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
    postgres_url: String,
    pool_size: usize,
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
    verify_concurrency: usize,
    verify_per_origin: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    timeout: String,
    max_bytes: String,
    max_redirects: usize,
    concurrency: usize,
    per_origin: usize,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsrf {
    callback_allow: Vec<String>,
    topic_allow: Vec<String>,
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
            "postgres" => Backend::Postgres,
            other => {
                return Err(invalid(
                    "storage.backend",
                    format!(
                        "unknown backend {other:?}; expected \"sled\", \"postgres\" or \"memory\""
                    ),
                ));
            }
        };
        let postgres_url = match self.storage.postgres_url.trim() {
            "" if backend == Backend::Postgres => {
                return Err(invalid(
                    "storage.backend",
                    "\"postgres\" needs storage.postgres_url (postgres://user@host:port/dbname)",
                ));
            }
            "" => None,
            url => {
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    return Err(invalid(
                        "storage.postgres_url",
                        format!("is not a PostgreSQL URL: {e}"),
                    ));
                }
                Some(crate::config::SecretUrl(url.to_owned()))
            }
        };
        if self.storage.pool_size == 0 || self.storage.pool_size > 1_000 {
            return Err(invalid("storage.pool_size", "must be between 1 and 1000"));
        }
        let cluster = crate::config::ClusterTimes {
            lease: parse_duration("cluster.lease", &self.cluster.lease)?,
            heartbeat_interval: parse_duration(
                "cluster.heartbeat_interval",
                &self.cluster.heartbeat_interval,
            )?,
            poll_interval: parse_duration("cluster.poll_interval", &self.cluster.poll_interval)?,
            rescan_interval: parse_duration(
                "cluster.rescan_interval",
                &self.cluster.rescan_interval,
            )?,
            ping_gather: parse_duration("cluster.ping_gather", &self.cluster.ping_gather)?,
        };
        if cluster.lease < std::time::Duration::from_secs(1) {
            return Err(invalid("cluster.lease", "must be at least 1s"));
        }
        for (key, d) in [
            ("cluster.heartbeat_interval", cluster.heartbeat_interval),
            ("cluster.poll_interval", cluster.poll_interval),
            ("cluster.rescan_interval", cluster.rescan_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be more than 0"));
            }
        }
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
        let allowed_topics = sub
            .allowed_topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                TopicPrefix::parse(t).map_err(|e| {
                    invalid(
                        &format!("subscriptions.allowed_topics[{i}]"),
                        format!("must be an http(s) URL prefix: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
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
        let mut publishers = self.publishers;
        for (i, p) in publishers.iter_mut().enumerate() {
            let key = format!("publishers[{i}]");
            for (j, t) in p.topics.iter().enumerate() {
                let prefix = TopicPrefix::parse(t).map_err(|e| {
                    invalid(
                        &format!("{key}.topics[{j}]"),
                        format!("must be an http(s) URL prefix: {e}"),
                    )
                })?;
                p.prefixes.push(prefix);
            }
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
        let retention = crate::storage::Retention {
            max_age_ms: parse_duration("events.max_age", &self.events.max_age)?.as_millis() as u64,
            max_bytes: parse_size("events.max_bytes", &self.events.max_bytes)?,
        };
        let node_id = match self.cluster.node_id.trim() {
            "" => None,
            id if id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                Some(id.to_owned())
            }
            id => {
                return Err(invalid(
                    "cluster.node_id",
                    format!("{id:?} must be 1 to 64 letters, digits, '.', '_' or '-'"),
                ));
            }
        };
        let rate = |key: &str, text: &str| Rate::parse(text).map_err(|e| invalid(key, e));
        let l = &self.limits;
        let limits = Limits {
            subscriptions_per_client: rate(
                "limits.subscriptions_per_client",
                &l.subscriptions_per_client,
            )?,
            pings_per_client: rate("limits.pings_per_client", &l.pings_per_client)?,
            verifications_per_host: rate(
                "limits.verifications_per_host",
                &l.verifications_per_host,
            )?,
            fetches_per_topic: rate("limits.fetches_per_topic", &l.fetches_per_topic)?,
        };
        let relay = super::relay::validate(self.relay, self.peers, self.upstreams, self.multicast)?;
        let hosted = super::gateways::validate_hosted(self.hosted)?;
        let webfinger = super::gateways::validate_webfinger(self.webfinger)?;
        let lmtp = super::gateways::validate_lmtp(self.lmtp, &hosted)?;
        let smtp = super::gateways::validate_smtp(self.smtp, &lmtp)?;
        let nntp = super::gateways::validate_nntp(self.nntp, &hosted)?;
        Ok(Config {
            nntp,
            smtp,
            lmtp,
            relay,
            hosted,
            webfinger,
            limits,
            retention,
            node_id,
            cluster,
            postgres_url,
            pool_size: self.storage.pool_size,
            listen: parse_addr("server.listen", &s.listen)?,
            shutdown_deadline: parse_duration("server.shutdown_deadline", &s.shutdown_deadline)?,
            public_url,
            max_body: parse_size("server.max_body", &s.max_body)? as usize,
            body_timeout: match parse_duration("server.body_timeout", &s.body_timeout)? {
                d if d.is_zero() => return Err(invalid("server.body_timeout", "must not be zero")),
                d => d,
            },
            http_workers: s.http_workers,
            max_connections_per_client: s.max_connections_per_client,
            trusted_proxies: cidrs("server.trusted_proxies", &s.trusted_proxies)?,
            engine_threads: s.engine_threads,
            backend,
            data_dir: self.storage.data_dir,
            cache_capacity: parse_size("storage.cache_capacity", &self.storage.cache_capacity)?,
            default_lease,
            min_lease,
            max_lease,
            verify_timeout: parse_duration("subscriptions.verify_timeout", &sub.verify_timeout)?,
            allowed_topics,
            sweep_interval: parse_duration("subscriptions.sweep_interval", &sub.sweep_interval)?,
            fetch_timeout: parse_duration("fetch.timeout", &self.fetch.timeout)?,
            fetch_max_bytes: parse_size("fetch.max_bytes", &self.fetch.max_bytes)? as usize,
            fetch_max_redirects: self.fetch.max_redirects,
            fetch_limit: call_limit(
                ("fetch.concurrency", self.fetch.concurrency),
                ("fetch.per_origin", self.fetch.per_origin),
            )?,
            verify_limit: call_limit(
                ("subscriptions.verify_concurrency", sub.verify_concurrency),
                ("subscriptions.verify_per_origin", sub.verify_per_origin),
            )?,
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
            publishers,
            admin,
            log_format,
            log_level: self.log.level,
        })
    }
}

/// A global cap and a per-origin share of it, checked together.
fn call_limit(
    (cap_key, cap): (&str, usize),
    (share_key, share): (&str, usize),
) -> Result<CallLimit, ConfigError> {
    if !(2..=65_536).contains(&cap) {
        return Err(invalid(cap_key, "must be between 2 and 65536"));
    }
    if share == 0 || share > cap / 2 {
        return Err(invalid(
            share_key,
            format!("must be between 1 and half of {cap_key} ({})", cap / 2),
        ));
    }
    Ok(CallLimit {
        concurrency: cap,
        per_origin: share,
    })
}
