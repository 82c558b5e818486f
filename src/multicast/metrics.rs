//! The multicast series of `/metrics`: the sender's, and each multicast receiver's (with its
//! repair latency histogram).

use std::fmt::Write as _;

use crate::engine::multicast_rx::ReceiverCounts;
use crate::relay::view::{RelayView, label, write_family};

pub fn render(view: &RelayView, s: &mut String) {
    let family =
        |s: &mut String, name: &str, kind: &str, help: &str, key: &str, rows: Vec<(&str, u64)>| {
            if !rows.is_empty() {
                write_family(s, (name, kind, help), key, &rows);
            }
        };
    let mc = |f: fn(&ReceiverCounts) -> u64| -> Vec<(&str, u64)> {
        view.upstreams
            .iter()
            .filter_map(|u| Some((u.name.as_str(), f(u.multicast.as_ref()?))))
            .collect()
    };
    for (name, help, f) in [
        (
            "hubcast_upstream_multicast_datagrams_total",
            "Datagrams received from the upstream's multicast group.",
            (|c| c.datagrams) as fn(&ReceiverCounts) -> u64,
        ),
        (
            "hubcast_upstream_multicast_bad_tags_total",
            "Datagrams dropped: their tag did not match the group's key.",
            |c| c.bad_tags,
        ),
        (
            "hubcast_upstream_multicast_unknown_origin_total",
            "Datagrams dropped: sent by another hub than the upstream.",
            |c| c.unknown_origin,
        ),
        (
            "hubcast_upstream_multicast_malformed_total",
            "Datagrams dropped: malformed (or an event record that did not decode).",
            |c| c.malformed,
        ),
        (
            "hubcast_upstream_multicast_duplicates_total",
            "Datagrams for events (or fragments) already held or taken.",
            |c| c.duplicates,
        ),
        (
            "hubcast_upstream_multicast_gaps_total",
            "Gaps noticed in the upstream's numbers.",
            |c| c.gaps,
        ),
        (
            "hubcast_upstream_multicast_repaired_total",
            "Events repaired over HTTP (GET /relay/events).",
            |c| c.events_repaired,
        ),
        (
            "hubcast_upstream_multicast_fallbacks_total",
            "Switches to the HTTP stream (too far behind, or the group silent).",
            |c| c.fallbacks,
        ),
        (
            "hubcast_upstream_multicast_events_total",
            "Events taken from multicast datagrams (not repairs).",
            |c| c.events_by_multicast,
        ),
    ] {
        family(s, name, "counter", help, "upstream", mc(f));
    }
    let receivers: Vec<_> = view
        .upstreams
        .iter()
        .filter_map(|u| Some((u.name.as_str(), u.multicast.as_ref()?)))
        .collect();
    if !receivers.is_empty() {
        let name = "hubcast_upstream_multicast_repair_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Repair latency: from a gap noticed to it filled over HTTP.\n# TYPE {name} histogram"
        );
        for (who, c) in receivers {
            let who = label(who);
            let mut cumulative = 0;
            for (i, b) in crate::engine::multicast_rx::LATENCY_BUCKETS_MS
                .iter()
                .enumerate()
            {
                cumulative += c.repair_latency_buckets.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "{name}_bucket{{upstream=\"{who}\",le=\"{}\"}} {cumulative}",
                    *b as f64 / 1000.0
                );
            }
            let count: u64 = c.repair_latency_buckets.iter().sum();
            let _ = writeln!(s, "{name}_bucket{{upstream=\"{who}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(
                s,
                "{name}_sum{{upstream=\"{who}\"}} {}",
                c.repair_latency_sum_ms / 1000.0
            );
            let _ = writeln!(s, "{name}_count{{upstream=\"{who}\"}} {count}");
        }
    }
    if let Some(m) = &view.multicast {
        for (name, help, v) in [
            (
                "hubcast_multicast_datagrams_sent_total",
                "Datagrams sent to the multicast group (events, announcements, heartbeats).",
                m.datagrams,
            ),
            (
                "hubcast_multicast_bytes_sent_total",
                "Bytes of datagrams sent to the multicast group.",
                m.bytes,
            ),
            (
                "hubcast_multicast_events_sent_total",
                "Events sent to the multicast group (announced ones included).",
                m.events,
            ),
            (
                "hubcast_multicast_events_announced_total",
                "Events too large for the group: announced, fetched over HTTP.",
                m.announced,
            ),
            (
                "hubcast_multicast_send_errors_total",
                "Datagrams the socket refused (receivers repair them).",
                m.send_errors,
            ),
        ] {
            family(
                s,
                name,
                "counter",
                help,
                "group",
                vec![(m.group.as_str(), v)],
            );
        }
    }
}
