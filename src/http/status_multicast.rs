//! The status page's multicast tables: the stream sent to the group, and each upstream received
//! by multicast.

use std::fmt::Write as _;

use super::status_page::esc;
use crate::engine::multicast_rx::LATENCY_BUCKETS_MS;

pub(super) fn multicast_html(r: &crate::relay::view::RelayView) -> String {
    let mut s = String::new();
    if let Some(m) = &r.multicast {
        let _ = write!(
            s,
            "<h3>Stream sent by multicast</h3><div class=scroll><table id=multicast-sender>\
             <tr><th>group</th><th>interface</th><th>state</th><th>last event sent</th>\
             <th>events</th><th>announced</th><th>datagrams</th><th>bytes</th><th>heartbeats</th>\
             <th>send errors</th><th>last error</th></tr>\
             <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table></div>",
            esc(&m.group),
            esc(&m.interface),
            m.state,
            m.last_sent,
            m.events,
            m.announced,
            m.datagrams,
            m.bytes,
            m.heartbeats,
            m.send_errors,
            esc(m.last_error.as_deref().unwrap_or_default())
        );
    }
    let receivers: Vec<_> = r
        .upstreams
        .iter()
        .filter_map(|u| Some((u, u.multicast.as_ref()?)))
        .collect();
    if receivers.is_empty() {
        return s;
    }
    s.push_str(
        "<h3>Upstreams received by multicast</h3><div class=scroll><table id=multicast-receivers>\
         <tr><th>upstream</th><th>group</th><th>mode</th><th>datagrams</th><th>bad tags</th>\
         <th>unknown origin</th><th>duplicates</th><th>gaps</th><th>repaired</th>\
         <th>repair p99</th><th>fallbacks to HTTP</th><th>receive buffer</th></tr>",
    );
    for (u, m) in receivers {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} KiB</td></tr>",
            esc(&u.name),
            esc(&m.group),
            m.mode,
            m.datagrams,
            m.bad_tags,
            m.unknown_origin,
            m.duplicates,
            m.gaps,
            m.events_repaired,
            p99(&m.repair_latency_buckets),
            m.fallbacks,
            m.receive_buffer / 1024
        );
    }
    s.push_str("</table></div>");
    s
}

/// The bucket bound under which 99% of repairs fell ("—" before any).
fn p99(buckets: &[u64]) -> String {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return "—".into();
    }
    let want = (total * 99).div_ceil(100);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            return match LATENCY_BUCKETS_MS.get(i) {
                Some(ms) => format!("≤ {ms} ms"),
                None => format!("> {} ms", LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]),
            };
        }
    }
    "—".into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn p99_names_the_bucket_bound() {
        assert_eq!(super::p99(&[0; 11]), "—");
        let mut b = vec![0; 11];
        b[4] = 99;
        b[7] = 1;
        assert_eq!(super::p99(&b), "≤ 20 ms");
        b[10] = 5;
        assert_eq!(super::p99(&b), "> 1000 ms");
    }
}
