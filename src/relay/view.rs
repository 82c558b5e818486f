//! What operators see of the relay: the peers reading this hub's stream and the upstreams it
//! follows, as the admin API's JSON and as Prometheus series (labelled by the names given in
//! the config, a bounded set).

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::peer_stream::PeerCounts;
use crate::engine::relay_register::RegistrationStatus;
use crate::engine::upstream::UpstreamStatus;

#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub name: String,
    pub topics: Vec<String>,
    #[serde(flatten)]
    pub counts: PeerCounts,
}

/// A destination server whose deliveries go to its registered relay as batches.
#[derive(Debug, Clone, Serialize)]
pub struct RelayEntry {
    pub destination: String,
    pub relay: String,
    pub expires_ms: u64,
    /// The destination's last failure (a batch's, or a direct delivery's before).
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// Batches sent to the relay since this hub started.
    pub batches: crate::engine::relay_dispatch::BatchTally,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayView {
    pub peers: Vec<PeerView>,
    pub upstreams: Vec<UpstreamStatus>,
    /// Destinations with a relay registered at this hub (at most [`RELAYS_SHOWN`]).
    pub relays: Vec<RelayEntry>,
    /// This hub as other hubs' relay (`[[relay.register]]`).
    pub registrations: Vec<RegistrationStatus>,
    /// Hub chaining: topics subscribed at the hub they advertise (at most [`RELAYS_SHOWN`]).
    pub chained: Vec<ChainedView>,
    /// The stream sent by multicast, when it is.
    pub multicast: Option<crate::engine::multicast_tx::SenderCounts>,
}

/// One upstream subscription of hub chaining.
#[derive(Debug, Clone, Serialize)]
pub struct ChainedView {
    pub topic: String,
    pub hub: String,
    /// `false` while the upstream hub has not verified it yet.
    pub verified: bool,
    pub lease_seconds: u64,
    pub expires_ms: u64,
}

/// Most registered relays listed.
pub const RELAYS_SHOWN: usize = 1000;

/// A Prometheus family (`name`, `kind`, `help`): one sample per labelled row.
pub(crate) fn write_family(
    s: &mut String,
    head: (&str, &str, &str),
    key: &str,
    rows: &[(&str, u64)],
) {
    let (name, kind, help) = head;
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (who, v) in rows {
        let _ = writeln!(s, "{name}{{{key}=\"{}\"}} {v}", label(who));
    }
}

/// A label value, escaped.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

impl RelayView {
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
            && self.upstreams.is_empty()
            && self.relays.is_empty()
            && self.registrations.is_empty()
            && self.chained.is_empty()
            && self.multicast.is_none()
    }

    /// The relay's series, appended to `/metrics`.
    pub fn render_metrics(&self, s: &mut String) {
        if self.is_empty() {
            return;
        }
        let mut family = |name: &str, kind: &str, help: &str, key: &str, rows: Vec<(&str, u64)>| {
            write_family(s, (name, kind, help), key, &rows)
        };
        let peers = |f: fn(&PeerCounts) -> u64| -> Vec<(&str, u64)> {
            self.peers
                .iter()
                .map(|p| (p.name.as_str(), f(&p.counts)))
                .collect()
        };
        family(
            "hubcast_peer_streams_open",
            "gauge",
            "Streams open to each peer hub.",
            "peer",
            peers(|c| c.streams_open),
        );
        family(
            "hubcast_peer_events_sent_total",
            "counter",
            "Events sent to each peer hub (streams and ranges).",
            "peer",
            peers(|c| c.events_sent),
        );
        family(
            "hubcast_peer_bytes_sent_total",
            "counter",
            "Bytes of lines sent to each peer hub.",
            "peer",
            peers(|c| c.bytes_sent),
        );
        let ups = |f: fn(&UpstreamStatus) -> u64| -> Vec<(&str, u64)> {
            self.upstreams
                .iter()
                .map(|u| (u.name.as_str(), f(u)))
                .collect()
        };
        family(
            "hubcast_upstream_connected",
            "gauge",
            "1 while the upstream's stream is being followed.",
            "upstream",
            ups(|u| u64::from(u.state == "streaming")),
        );
        family(
            "hubcast_upstream_cursor",
            "gauge",
            "The last upstream event taken.",
            "upstream",
            ups(|u| u.cursor),
        );
        family(
            "hubcast_upstream_lag_events",
            "gauge",
            "Upstream events not yet taken.",
            "upstream",
            ups(|u| u.lag_events),
        );
        family(
            "hubcast_upstream_lag_seconds",
            "gauge",
            "Age of the last event taken, when it was taken.",
            "upstream",
            ups(|u| u.lag_ms / 1000),
        );
        family(
            "hubcast_upstream_events_total",
            "counter",
            "Events taken from the upstream.",
            "upstream",
            ups(|u| u.events_taken),
        );
        let regs = self
            .registrations
            .iter()
            .map(|r| (r.hub.as_str(), u64::from(r.state == "registered")))
            .collect();
        family(
            "hubcast_relay_registered",
            "gauge",
            "1 while this hub's registration as a relay at the hub is verified ([[relay.register]]).",
            "hub",
            regs,
        );
        family(
            "hubcast_upstream_loops_refused_total",
            "counter",
            "Events refused because their path already named this hub.",
            "upstream",
            ups(|u| u.loops_refused),
        );
        family(
            "hubcast_upstream_duplicates_total",
            "counter",
            "Events passed over because another upstream brought the same origin event first.",
            "upstream",
            ups(|u| u.duplicates),
        );
        family(
            "hubcast_upstream_reconciles_total",
            "counter",
            "Times the follower fell below the upstream's trail and fetched its topics.",
            "upstream",
            ups(|u| u.reconciles),
        );
        family(
            "hubcast_upstream_connects_total",
            "counter",
            "Connection attempts to the upstream.",
            "upstream",
            ups(|u| u.connects),
        );
        crate::multicast::metrics::render(self, s);
    }
}
