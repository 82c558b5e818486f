//! `[multicast]`: the hub's stream to peer hubs over IP multicast (sending), and what receivers
//! of `[[upstreams]]` with `transport = "multicast"` use by default.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde::Deserialize;

use super::relay::UpstreamConfig;
use super::values::{parse_duration, parse_size};
use super::{ConfigError, invalid};
use crate::topic_prefix::TopicPrefix;

/// The shortest shared key: it is all that stops forged datagrams.
const MIN_KEY: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMulticast {
    send: bool,
    group: String,
    interface: String,
    ttl: u32,
    key: String,
    #[serde(default)]
    topics: Vec<String>,
    max_event_bytes: String,
    rate: String,
    heartbeat: String,
    receive_buffer: String,
    repair_delay: String,
    window: u64,
}

#[derive(Clone)]
pub struct MulticastConfig {
    /// Send every event of the stream (or of `topics`) to `group`.
    pub send: bool,
    pub group: Option<SocketAddrV4>,
    /// The address of the interface sent and joined on (never a default one).
    pub interface: Option<Ipv4Addr>,
    pub ttl: u32,
    /// The group's shared key (tags every datagram).
    pub key: Option<Vec<u8>>,
    /// Topic prefixes sent; empty: every event.
    pub topics: Vec<TopicPrefix>,
    /// Larger events are announced and fetched over HTTP.
    pub max_event_bytes: usize,
    /// Bytes per second sent at most (datagrams with their headers).
    pub rate: u64,
    pub heartbeat: Duration,
    pub receive_buffer: usize,
    pub repair_delay: Duration,
    /// Events a receiver holds past its cursor before it follows over HTTP instead.
    pub window: u64,
}

impl std::fmt::Debug for MulticastConfig {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MulticastConfig")
            .field("send", &self.send)
            .field("group", &self.group)
            .field("interface", &self.interface)
            .field("ttl", &self.ttl)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("rate", &self.rate)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// Where and how a multicast upstream is received.
#[derive(Clone)]
pub struct UpstreamMulticast {
    pub group: SocketAddrV4,
    pub interface: Ipv4Addr,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for UpstreamMulticast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamMulticast")
            .field("group", &self.group)
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

fn group(key: &str, v: &str) -> Result<SocketAddrV4, ConfigError> {
    let g: SocketAddrV4 = v.trim().parse().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not an IPv4 group and port, e.g. \"239.255.77.1:7700\""),
        )
    })?;
    if !g.ip().is_multicast() || g.port() == 0 {
        return Err(invalid(
            key,
            format!("{v:?} is not a multicast address (224.0.0.0/4) with a port"),
        ));
    }
    Ok(g)
}

fn interface(key: &str, v: &str) -> Result<Ipv4Addr, ConfigError> {
    let a: Ipv4Addr = v.trim().parse().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not the IPv4 address of an interface"),
        )
    })?;
    if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
        return Err(invalid(
            key,
            "must name one interface's address (0.0.0.0 would let the kernel pick the \
             default route's interface)",
        ));
    }
    Ok(a)
}

fn shared_key(key: &str, v: &str) -> Result<Vec<u8>, ConfigError> {
    if v.len() < MIN_KEY {
        return Err(invalid(key, format!("must be at least {MIN_KEY} bytes")));
    }
    Ok(v.as_bytes().to_vec())
}

pub(super) fn validate(
    raw: RawMulticast,
    upstreams: &mut [UpstreamConfig],
) -> Result<MulticastConfig, ConfigError> {
    let opt = |v: &str| (!v.trim().is_empty()).then(|| v.to_owned());
    let group_v = opt(&raw.group)
        .map(|g| group("multicast.group", &g))
        .transpose()?;
    let interface_v = opt(&raw.interface)
        .map(|i| interface("multicast.interface", &i))
        .transpose()?;
    let key_v = opt(&raw.key)
        .map(|k| shared_key("multicast.key", &k))
        .transpose()?;
    if raw.send {
        for (name, missing) in [
            ("multicast.group", group_v.is_none()),
            ("multicast.interface", interface_v.is_none()),
            ("multicast.key", key_v.is_none()),
        ] {
            if missing {
                return Err(invalid(name, "must be set when multicast.send = true"));
            }
        }
    }
    if raw.ttl > 255 {
        return Err(invalid("multicast.ttl", "must be between 0 and 255"));
    }
    let topics = raw
        .topics
        .iter()
        .enumerate()
        .map(|(j, t)| {
            TopicPrefix::parse(t).map_err(|e| {
                invalid(
                    &format!("multicast.topics[{j}]"),
                    format!("must be an http(s) URL prefix: {e}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_event_bytes = parse_size("multicast.max_event_bytes", &raw.max_event_bytes)?;
    if !(1024..=(16 << 20)).contains(&max_event_bytes) {
        return Err(invalid(
            "multicast.max_event_bytes",
            "must be between 1KiB and 16MiB",
        ));
    }
    let rate = parse_size("multicast.rate", &raw.rate)?;
    if !(64 * 1024..=(u32::MAX as u64)).contains(&rate) {
        return Err(invalid(
            "multicast.rate",
            "must be between 64KiB and 4GiB (bytes per second)",
        ));
    }
    let heartbeat = parse_duration("multicast.heartbeat", &raw.heartbeat)?;
    if heartbeat < Duration::from_millis(10) || heartbeat > Duration::from_secs(10) {
        return Err(invalid(
            "multicast.heartbeat",
            "must be between 10ms and 10s",
        ));
    }
    let receive_buffer = parse_size("multicast.receive_buffer", &raw.receive_buffer)?;
    if !(64 * 1024..=(1 << 30)).contains(&receive_buffer) {
        return Err(invalid(
            "multicast.receive_buffer",
            "must be between 64KiB and 1GiB",
        ));
    }
    let repair_delay = parse_duration("multicast.repair_delay", &raw.repair_delay)?;
    if repair_delay > Duration::from_secs(10) {
        return Err(invalid("multicast.repair_delay", "must be at most 10s"));
    }
    if !(64..=1_000_000).contains(&raw.window) {
        return Err(invalid(
            "multicast.window",
            "must be between 64 and 1000000",
        ));
    }
    for (i, u) in upstreams.iter_mut().enumerate() {
        let key = format!("upstreams[{i}]");
        match u.transport.as_str() {
            "http" => {
                if u.group.is_some() || u.key.is_some() {
                    return Err(invalid(
                        &format!("{key}.transport"),
                        "group and key are for transport = \"multicast\"",
                    ));
                }
            }
            "multicast" => {
                let g = match &u.group {
                    Some(g) => group(&format!("{key}.group"), g)?,
                    None => group_v.ok_or_else(|| {
                        invalid(
                            &format!("{key}.group"),
                            "must be set (or multicast.group) for transport = \"multicast\"",
                        )
                    })?,
                };
                let k = match &u.key {
                    Some(k) => shared_key(&format!("{key}.key"), k)?,
                    None => key_v.clone().ok_or_else(|| {
                        invalid(
                            &format!("{key}.key"),
                            "must be set (or multicast.key) for transport = \"multicast\"",
                        )
                    })?,
                };
                let Some(ifaddr) = interface_v else {
                    return Err(invalid(
                        "multicast.interface",
                        format!("must be set: {key} is received by multicast"),
                    ));
                };
                u.multicast = Some(UpstreamMulticast {
                    group: g,
                    interface: ifaddr,
                    key: k,
                });
            }
            other => {
                return Err(invalid(
                    &format!("{key}.transport"),
                    format!("{other:?} is neither \"http\" nor \"multicast\""),
                ));
            }
        }
    }
    Ok(MulticastConfig {
        send: raw.send,
        group: group_v,
        interface: interface_v,
        ttl: raw.ttl,
        key: key_v,
        topics,
        max_event_bytes: max_event_bytes as usize,
        rate,
        heartbeat,
        receive_buffer: receive_buffer as usize,
        repair_delay,
        window: raw.window,
    })
}
