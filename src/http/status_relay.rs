//! The status page's Relay section: peers reading this hub's stream, upstreams it follows,
//! destinations delivered through their relay, this hub as a relay, chained topics.

use std::fmt::Write as _;

use super::status_page::{esc, when};

pub(super) fn relay_html(r: &crate::relay::view::RelayView) -> String {
    if r.is_empty() {
        return String::new();
    }
    let mut s = String::from("<h2 id=relay>Relay</h2>");
    if !r.peers.is_empty() {
        s.push_str(
            "<h3>Peers reading this hub's stream</h3><div class=scroll><table id=peers>\
             <tr><th>peer</th><th>topics</th><th>streams open</th><th>events sent</th>\
             <th>bytes sent</th><th>ranges served</th></tr>",
        );
        for p in &r.peers {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                esc(&p.topics.join(" ")),
                p.counts.streams_open,
                p.counts.events_sent,
                p.counts.bytes_sent,
                p.counts.ranges_served
            );
        }
        s.push_str("</table></div>");
    }
    if !r.upstreams.is_empty() {
        s.push_str(
            "<h3>Upstreams this hub follows</h3><div class=scroll><table id=upstreams>\
             <tr><th>upstream</th><th>state</th><th>cursor</th><th>lag (events)</th>\
             <th>lag (s)</th><th>events taken</th><th>loops refused</th><th>reconciles</th>\
             <th>last error</th></tr>",
        );
        for u in &r.upstreams {
            let error = match &u.last_error {
                Some(e) => format!("{} ({})", esc(e), when(u.last_error_ms)),
                None => String::new(),
            };
            let _ = write!(
                s,
                "<tr><td>{} <small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.name),
                esc(&u.url),
                u.state,
                u.cursor,
                u.lag_events,
                u.lag_ms as f64 / 1000.0,
                u.events_taken,
                u.loops_refused,
                u.reconciles,
                error
            );
        }
        s.push_str("</table></div>");
    }
    s.push_str(&super::status_multicast::multicast_html(r));
    if !r.relays.is_empty() {
        s.push_str(
            "<h3>Destinations delivered through their relay</h3><div class=scroll>\
             <table id=relays><tr><th>destination</th><th>relay</th><th>lease ends</th>\
             <th>batches taken</th><th>deliveries in them</th><th>failed</th><th>split (413)</th>\
             <th>last error</th></tr>",
        );
        for d in &r.relays {
            let error = match &d.last_error {
                Some(e) => format!("{} ({})", esc(e), when(d.last_error_ms.unwrap_or_default())),
                None => String::new(),
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                esc(&d.destination),
                esc(&d.relay),
                when(d.expires_ms),
                d.batches.taken,
                d.batches.deliveries,
                d.batches.failed,
                d.batches.split,
                error
            );
        }
        s.push_str("</table></div>");
    }
    if !r.chained.is_empty() {
        s.push_str(
            "<h3>Topics subscribed at the hub they advertise</h3><div class=scroll>\
             <table id=chained><tr><th>topic</th><th>hub</th><th>verified</th>\
             <th>lease (s)</th><th>lease ends</th></tr>",
        );
        for c in &r.chained {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.topic),
                esc(&c.hub),
                if c.verified { "yes" } else { "not yet" },
                c.lease_seconds,
                when(c.expires_ms)
            );
        }
        s.push_str("</table></div>");
    }
    if !r.registrations.is_empty() {
        s.push_str(
            "<h3>This hub as a relay</h3><div class=scroll><table id=registrations>\
             <tr><th>hub</th><th>endpoint</th><th>state</th><th>verified</th>\
             <th>lease (s)</th><th>requests</th><th>last error</th></tr>",
        );
        for g in &r.registrations {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                esc(&g.hub),
                esc(&g.endpoint),
                g.state,
                g.verified_ms.map(when).unwrap_or_default(),
                g.lease_seconds.map(|l| l.to_string()).unwrap_or_default(),
                g.requests,
                esc(g.last_error.as_deref().unwrap_or_default())
            );
        }
        s.push_str("</table></div>");
    }
    s
}
