//! `[relay]`, `[[peers]]` and `[[upstreams]]`: the hub's stream served to peer hubs, and the
//! streams of other hubs it follows.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::values::parse_duration;
use super::{ConfigError, invalid};
use crate::topic_prefix::TopicPrefix;

/// The query parameter of a registered relay URL that names its `[[relay.register]]` entry.
pub const RELAY_TOKEN_PARAM: &str = "hubcast_relay";

/// The shortest token a peer may be given: it is the only thing guarding the stream.
const MIN_TOKEN: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    heartbeat: String,
    max_batch: usize,
    max_range: usize,
    reconnect_max: String,
    max_line: String,
    max_batch_bytes: String,
    chain: bool,
    chain_lease: String,
    #[serde(default)]
    register: Vec<RegisterConfig>,
}

/// A hub at which this hub registers itself as the relay of a destination server
/// (`[[relay.register]]`), and whose batches it then takes at `POST /relay/batch`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// The hub's endpoint, where `hub.mode=relay` is sent.
    pub hub: String,
    /// This hub's `/relay/batch` as the destination server reaches it (the relay URL): the
    /// hub verifies it there and delivers the destination's batches to it.
    pub endpoint: String,
    /// The secret the hub signs batches with.
    pub secret: String,
    /// Lease asked for, in seconds (the hub may clamp it); renewed well before it ends.
    #[serde(default = "default_register_lease")]
    pub lease_seconds: u64,
    #[serde(skip)]
    pub hub_url: Option<Url>,
    #[serde(skip)]
    pub endpoint_url: Option<Url>,
}

fn default_register_lease() -> u64 {
    86_400
}

impl std::fmt::Debug for RegisterConfig {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterConfig")
            .field("hub", &self.hub)
            .field("endpoint", &self.endpoint)
            .field("lease_seconds", &self.lease_seconds)
            .finish_non_exhaustive()
    }
}

impl RegisterConfig {
    pub fn hub_url(&self) -> &Url {
        self.hub_url.as_ref().expect("validated hub URL")
    }

    pub fn endpoint_url(&self) -> &Url {
        self.endpoint_url.as_ref().expect("validated endpoint URL")
    }

    /// The relay URL registered: the endpoint with `hubcast_relay=TOKEN` added to its query,
    /// a token derived from the secret that the hub's verification carries back, so only the
    /// hub this entry registers at can confirm it.
    pub fn relay_url(&self) -> Url {
        let mut url = self.endpoint_url().clone();
        url.query_pairs_mut()
            .append_pair(RELAY_TOKEN_PARAM, &self.token());
        url
    }

    /// The entry's verification token.
    pub fn token(&self) -> String {
        let mac = crate::signature::sign(
            crate::signature::Algorithm::Sha256,
            self.secret.as_bytes(),
            b"hubcast relay registration",
        );
        mac.trim_start_matches("sha256=")[..32].to_owned()
    }

    /// The destination server the registration speaks for (`scheme://host:port`).
    pub fn destination(&self) -> String {
        crate::urls::destination_of_endpoint(self.endpoint_url().as_str())
    }
}

/// A peer hub that may follow this hub's stream (`[[peers]]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    pub token: String,
    /// Topic URL prefixes it may read.
    pub topics: Vec<String>,
    #[serde(skip)]
    pub prefixes: Vec<TopicPrefix>,
}

impl std::fmt::Debug for PeerConfig {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl PeerConfig {
    pub fn may_read(&self, topic: &str) -> bool {
        self.prefixes.iter().any(|p| p.covers(topic))
    }
}

/// Another hub whose stream this hub follows (`[[upstreams]]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Shown in the status page and metrics, and naming the stored cursor. Default: the URL's
    /// host and port.
    #[serde(default)]
    pub name: String,
    /// The upstream hub's base URL (its stream is `URL/relay/stream`).
    pub url: String,
    pub token: String,
    /// Topic prefixes asked for; empty: everything the upstream lets this hub read.
    #[serde(default)]
    pub topics: Vec<String>,
    /// `http` (the stream over HTTP) or `multicast` (the upstream's datagrams, repaired and
    /// caught up over HTTP).
    #[serde(default = "default_transport")]
    pub transport: String,
    /// The group the upstream sends to (default: `multicast.group`).
    #[serde(default)]
    pub group: Option<String>,
    /// The group's shared key (default: `multicast.key`).
    #[serde(default)]
    pub key: Option<String>,
    #[serde(skip)]
    pub base: Option<Url>,
    /// Where and how it is received, for `transport = "multicast"` (validated).
    #[serde(skip)]
    pub multicast: Option<super::multicast::UpstreamMulticast>,
}

fn default_transport() -> String {
    "http".to_owned()
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("topics", &self.topics)
            .field("transport", &self.transport)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl UpstreamConfig {
    /// The upstream's base URL (validated).
    pub fn base(&self) -> &Url {
        self.base.as_ref().expect("validated upstream URL")
    }

    /// The name its cursor is stored under.
    pub fn cursor_name(&self) -> String {
        format!("upstream:{}", self.name)
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Longest quiet time on `/relay/stream` before a heartbeat line.
    pub heartbeat: Duration,
    /// Most deliveries in one batch to a destination's registered relay.
    pub max_batch: usize,
    /// Most events `/relay/events` answers at once.
    pub max_range: usize,
    /// Longest pause between a follower's reconnection attempts.
    pub reconnect_max: Duration,
    /// Longest line a follower accepts from an upstream's stream.
    pub max_line: usize,
    /// Largest batch body `POST /relay/batch` takes.
    pub max_batch_bytes: usize,
    /// Hubs this hub registers at as a destination's relay.
    pub register: Vec<RegisterConfig>,
    /// Hub chaining: a topic that advertises another hub is subscribed there once, for all
    /// local subscribers.
    pub chain: bool,
    /// Lease asked for on those upstream subscriptions.
    pub chain_lease: Duration,
    pub peers: Vec<PeerConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    /// `[multicast]`: the stream sent over IP multicast, and receivers' defaults.
    pub multicast: super::multicast::MulticastConfig,
}

impl RelayConfig {
    /// Whether a peer may read `topic`: then its updates enter the stream even without local
    /// subscribers, because the peers' subscribers may want them.
    pub fn followed(&self, topic: &str) -> bool {
        self.peers.iter().any(|p| p.may_read(topic))
    }
}

pub(super) fn validate(
    raw: RawRelay,
    mut peers: Vec<PeerConfig>,
    mut upstreams: Vec<UpstreamConfig>,
    multicast: super::multicast::RawMulticast,
) -> Result<RelayConfig, ConfigError> {
    let heartbeat = parse_duration("relay.heartbeat", &raw.heartbeat)?;
    if heartbeat < Duration::from_millis(10) || heartbeat > Duration::from_secs(60) {
        return Err(invalid("relay.heartbeat", "must be between 10ms and 60s"));
    }
    if !(1..=100_000).contains(&raw.max_batch) {
        return Err(invalid("relay.max_batch", "must be between 1 and 100000"));
    }
    if !(1..=100_000).contains(&raw.max_range) {
        return Err(invalid("relay.max_range", "must be between 1 and 100000"));
    }
    let reconnect_max = parse_duration("relay.reconnect_max", &raw.reconnect_max)?;
    if reconnect_max < Duration::from_millis(100) {
        return Err(invalid("relay.reconnect_max", "must be at least 100ms"));
    }
    let max_line = super::values::parse_size("relay.max_line", &raw.max_line)?;
    if !(1024..=(64 << 20)).contains(&max_line) {
        return Err(invalid("relay.max_line", "must be between 1KiB and 64MiB"));
    }
    let max_batch_bytes = super::values::parse_size("relay.max_batch_bytes", &raw.max_batch_bytes)?;
    if !(1024..=(256 << 20)).contains(&max_batch_bytes) {
        return Err(invalid(
            "relay.max_batch_bytes",
            "must be between 1KiB and 256MiB",
        ));
    }
    let chain_lease = parse_duration("relay.chain_lease", &raw.chain_lease)?;
    if chain_lease < Duration::from_secs(2) {
        return Err(invalid("relay.chain_lease", "must be at least 2s"));
    }
    let mut register = raw.register;
    for (i, r) in register.iter_mut().enumerate() {
        let key = format!("relay.register[{i}]");
        let http = |field: &str, v: &str| {
            Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    invalid(
                        &format!("{key}.{field}"),
                        format!("{v:?} is not an http(s) URL"),
                    )
                })
        };
        r.hub_url = Some(http("hub", &r.hub)?);
        r.endpoint_url = Some(http("endpoint", &r.endpoint)?);
        if r.secret.len() < MIN_TOKEN || r.secret.len() >= 200 {
            return Err(invalid(
                &format!("{key}.secret"),
                format!("must be {MIN_TOKEN} to 199 bytes (hubs refuse longer secrets)"),
            ));
        }
        if r.lease_seconds < 2 {
            return Err(invalid(
                &format!("{key}.lease_seconds"),
                "must be at least 2",
            ));
        }
    }
    for (i, r) in register.iter().enumerate() {
        if register[..i].iter().any(|q| q.secret == r.secret) {
            return Err(invalid(
                &format!("relay.register[{i}].secret"),
                "is the secret of another registration; each hub needs its own",
            ));
        }
    }
    let prefixes = |key: &str, topics: &[String]| -> Result<Vec<TopicPrefix>, ConfigError> {
        topics
            .iter()
            .enumerate()
            .map(|(j, t)| {
                TopicPrefix::parse(t).map_err(|e| {
                    invalid(
                        &format!("{key}.topics[{j}]"),
                        format!("must be an http(s) URL prefix: {e}"),
                    )
                })
            })
            .collect()
    };
    for (i, p) in peers.iter_mut().enumerate() {
        let key = format!("peers[{i}]");
        if p.name.trim().is_empty() {
            return Err(invalid(&format!("{key}.name"), "must not be empty"));
        }
        if p.token.len() < MIN_TOKEN {
            return Err(invalid(
                &format!("{key}.token"),
                format!("must be at least {MIN_TOKEN} characters"),
            ));
        }
        if p.topics.is_empty() {
            return Err(invalid(
                &format!("{key}.topics"),
                "must name at least one topic URL prefix it may read",
            ));
        }
        p.prefixes = prefixes(&key, &p.topics)?;
    }
    for (i, p) in peers.iter().enumerate() {
        if peers[..i].iter().any(|q| q.name == p.name) {
            return Err(invalid(
                &format!("peers[{i}].name"),
                format!("{:?} is used by another peer", p.name),
            ));
        }
        if peers[..i].iter().any(|q| q.token == p.token) {
            return Err(invalid(
                &format!("peers[{i}].token"),
                "is the token of another peer; each peer needs its own",
            ));
        }
    }
    for (i, u) in upstreams.iter_mut().enumerate() {
        let key = format!("upstreams[{i}]");
        let url = Url::parse(&u.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                invalid(
                    &format!("{key}.url"),
                    format!("{:?} is not an http(s) URL", u.url),
                )
            })?;
        if u.token.is_empty() {
            return Err(invalid(&format!("{key}.token"), "must not be empty"));
        }
        prefixes(&key, &u.topics)?;
        if u.name.trim().is_empty() {
            u.name = format!(
                "{}:{}",
                url.host_str().unwrap_or_default(),
                url.port_or_known_default().unwrap_or_default()
            );
        }
        u.base = Some(url);
    }
    let multicast = super::multicast::validate(multicast, &mut upstreams)?;
    for (i, u) in upstreams.iter().enumerate() {
        if upstreams[..i].iter().any(|q| q.name == u.name) {
            return Err(invalid(
                &format!("upstreams[{i}].name"),
                format!(
                    "{:?} names another upstream too; give each its own name",
                    u.name
                ),
            ));
        }
    }
    Ok(RelayConfig {
        heartbeat,
        max_batch: raw.max_batch,
        max_range: raw.max_range,
        reconnect_max,
        max_line: max_line as usize,
        max_batch_bytes: max_batch_bytes as usize,
        register,
        chain: raw.chain,
        chain_lease,
        peers,
        upstreams,
        multicast,
    })
}
