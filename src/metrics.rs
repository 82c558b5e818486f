//! Counters the engine keeps, rendered in the Prometheus text format at `GET /metrics`. Labels
//! are fixed small sets (outcomes, results, states): never a host, topic or callback.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the delivery latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    Delivered,
    Failed,
    Gone,
    Expired,
}

#[derive(Debug, Clone, Copy)]
pub enum Fetch {
    Ok,
    NotModified,
    Error,
    Refused,
    FatPing,
}

#[derive(Debug, Clone, Copy)]
pub enum Verification {
    Verified,
    Failed,
    Denied,
    /// Dropped unverified: a newer request for the same subscription came.
    Superseded,
}

/// Why a request was refused to protect the hub.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// `limits.subscriptions_per_client`.
    SubscriptionRate,
    /// `limits.pings_per_client`.
    PingRate,
    /// `server.max_connections_per_client`.
    Connections,
    /// `server.body_timeout`.
    BodyTimeout,
}

/// Per-bucket counts (not cumulative: one increment per sample; `render` sums them up).
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    deliveries: [AtomicU64; 4],
    latency: Histogram,
    fetches: [AtomicU64; 5],
    verifications: [AtomicU64; 4],
    refusals: [AtomicU64; 4],
    retries_scheduled: AtomicU64,
    /// Relay batches: [taken, failed].
    relay_batches: [AtomicU64; 3],
    /// Batches this hub took as another hub's relay: [taken, refused]; their deliveries.
    relay_received: [AtomicU64; 3],
    forwarded: AtomicU64,
    /// Hub chaining: [requests, verified, pushes taken, pushes with a bad signature].
    chain: [AtomicU64; 4],
    dead_lettered: AtomicU64,
    coalesced: AtomicU64,
}

/// Gauges read at scrape time from the engine and storage.
pub struct Gauges {
    pub queued_jobs: u64,
    pub retries: u64,
    pub destinations: [u64; 3],
    pub log: crate::storage::LogBounds,
    /// Storage failures by class: transient, conflict, permanent, corrupt.
    pub storage_errors: [u64; 4],
}

impl Metrics {
    /// `n` deliveries settled by one relay batch that took `took`.
    pub fn batch(&self, d: Delivery, n: u64, took: Duration) {
        self.delivery(d, Some(took));
        self.deliveries[d as usize].fetch_add(n.saturating_sub(1), Ordering::Relaxed);
        let taken = matches!(d, Delivery::Delivered) as usize;
        self.relay_batches[1 - taken].fetch_add(1, Ordering::Relaxed);
    }

    /// A batch the relay refused as too large (`413`), sent again as two halves.
    pub fn batch_split(&self) {
        self.relay_batches[2].fetch_add(1, Ordering::Relaxed);
    }

    /// A batch taken as another hub's relay, with `n` deliveries to forward.
    pub fn forwarded(&self, n: u64) {
        self.relay_received[0].fetch_add(1, Ordering::Relaxed);
        self.forwarded.fetch_add(n, Ordering::Relaxed);
    }

    pub fn chain(&self, c: crate::engine::chain::ChainCount) {
        self.chain[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A batch taken before (the same body): answered again, not stored twice.
    pub fn batch_repeated(&self) {
        self.relay_received[2].fetch_add(1, Ordering::Relaxed);
    }

    /// A batch refused at `POST /relay/batch` (bad signature, unknown hub, bad document).
    pub fn batch_refused(&self) {
        self.relay_received[1].fetch_add(1, Ordering::Relaxed);
    }

    pub fn delivery(&self, d: Delivery, took: Option<Duration>) {
        self.deliveries[d as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(t) = took {
            let secs = t.as_secs_f64();
            if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
                self.latency.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
            self.latency.count.fetch_add(1, Ordering::Relaxed);
            self.latency
                .sum_micros
                .fetch_add(t.as_micros() as u64, Ordering::Relaxed);
        }
    }

    pub fn fetch(&self, f: Fetch) {
        self.fetches[f as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn verification(&self, v: Verification) {
        self.verifications[v as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, r: Refusal) {
        self.refusals[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry_scheduled(&self) {
        self.retries_scheduled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn coalesced(&self, events: u64) {
        self.coalesced.fetch_add(events, Ordering::Relaxed);
    }

    /// Deliveries by outcome: [delivered, failed, gone, expired].
    pub fn deliveries(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.deliveries[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut s = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        labeled(
            &mut s,
            ("hubcast_deliveries_total", "counter"),
            "Delivery attempts by outcome.",
            "outcome",
            &["delivered", "failed", "gone", "expired"],
            &self.deliveries.each_ref().map(get),
        );
        family(
            &mut s,
            "hubcast_delivery_duration_seconds",
            "histogram",
            "Time from sending a delivery to its answer.",
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += get(&self.latency.buckets[i]);
            let _ = writeln!(
                s,
                "hubcast_delivery_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = get(&self.latency.count);
        let _ = writeln!(
            s,
            "hubcast_delivery_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "hubcast_delivery_duration_seconds_sum {}",
            get(&self.latency.sum_micros) as f64 / 1e6
        );
        let _ = writeln!(s, "hubcast_delivery_duration_seconds_count {count}");
        labeled(
            &mut s,
            ("hubcast_relay_batches_total", "counter"),
            "Batches sent to destinations' registered relays, by result (a batch carries up to relay.max_batch deliveries, counted in hubcast_deliveries_total); split: refused as too large (413) and sent again as two halves.",
            "result",
            &["taken", "failed", "split"],
            &self.relay_batches.each_ref().map(get),
        );
        labeled(
            &mut s,
            ("hubcast_relay_batches_received_total", "counter"),
            "Batches received at POST /relay/batch as another hub's relay, by result.",
            "result",
            &["taken", "refused", "repeated"],
            &self.relay_received.each_ref().map(get),
        );
        let _ = writeln!(
            s,
            "# HELP hubcast_relay_forwarded_deliveries_total Deliveries taken in relay batches, to be forwarded.\n# TYPE hubcast_relay_forwarded_deliveries_total counter\nhubcast_relay_forwarded_deliveries_total {}",
            get(&self.forwarded)
        );
        labeled(
            &mut s,
            ("hubcast_chain_total", "counter"),
            "Hub chaining: requests sent to upstream hubs, subscriptions they verified, pushes taken, pushes ignored for a bad signature.",
            "what",
            &["requested", "verified", "pushed", "bad_signature"],
            &self.chain.each_ref().map(get),
        );
        labeled(
            &mut s,
            ("hubcast_topic_fetches_total", "counter"),
            "Topic updates by result.",
            "result",
            &["ok", "not_modified", "error", "refused", "fat_ping"],
            &self.fetches.each_ref().map(get),
        );
        labeled(
            &mut s,
            ("hubcast_verifications_total", "counter"),
            "Verifications of intent by result.",
            "result",
            &["verified", "failed", "denied", "superseded"],
            &self.verifications.each_ref().map(get),
        );
        labeled(
            &mut s,
            ("hubcast_requests_refused_total", "counter"),
            "Requests refused to protect the hub, by the limit they met.",
            "limit",
            &[
                "subscriptions_per_client",
                "pings_per_client",
                "max_connections_per_client",
                "body_timeout",
            ],
            &self.refusals.each_ref().map(get),
        );
        simple(
            &mut s,
            "hubcast_retries_scheduled_total",
            "counter",
            "Failed deliveries scheduled for another attempt.",
            get(&self.retries_scheduled),
        );
        simple(
            &mut s,
            "hubcast_dead_letters_total",
            "counter",
            "Deliveries that failed for good.",
            get(&self.dead_lettered),
        );
        simple(
            &mut s,
            "hubcast_coalesced_events_total",
            "counter",
            "Events merged into another delivery of a lagging destination.",
            get(&self.coalesced),
        );
        simple(
            &mut s,
            "hubcast_queued_jobs",
            "gauge",
            "Delivery jobs (event, destination) waiting or running.",
            g.queued_jobs,
        );
        simple(
            &mut s,
            "hubcast_pending_retries",
            "gauge",
            "Stored retries not yet due or in progress.",
            g.retries,
        );
        labeled(
            &mut s,
            ("hubcast_destinations", "gauge"),
            "Destination servers by state.",
            "state",
            &["healthy", "throttled", "dead"],
            &g.destinations,
        );
        labeled(
            &mut s,
            ("hubcast_storage_errors_total", "counter"),
            "Failed storage calls by class (each is retried or answered 503).",
            "class",
            &["transient", "conflict", "permanent", "corrupt"],
            &g.storage_errors,
        );
        simple(
            &mut s,
            "hubcast_event_log_lead",
            "gauge",
            "Sequence number of the newest event in the log.",
            g.log.lead,
        );
        simple(
            &mut s,
            "hubcast_event_log_trail",
            "gauge",
            "Sequence number of the oldest event kept (lead + 1 when none is kept).",
            g.log.trail,
        );
        simple(
            &mut s,
            "hubcast_event_log_bytes",
            "gauge",
            "Bytes of the event bodies the log keeps.",
            g.log.bytes,
        );
        s
    }
}

/// Successful deliveries per second over the last `WINDOW_MS`, from samples taken whenever
/// someone asks (the status page refreshes every few seconds); the first answer is the average
/// since the first sample.
pub struct Throughput {
    samples: std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>,
}

impl Throughput {
    const WINDOW_MS: u64 = 30_000;
    const MAX_SAMPLES: usize = 64;

    /// Starts at `now_ms` with nothing delivered.
    pub fn new(now_ms: u64) -> Throughput {
        Throughput {
            samples: std::sync::Mutex::new([(now_ms, 0)].into()),
        }
    }

    /// Records `total` at `now_ms` and returns the rate since the oldest sample kept.
    pub fn per_second(&self, now_ms: u64, total: u64) -> f64 {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        while s.len() > 1
            && s.get(1)
                .is_some_and(|(t, _)| now_ms.saturating_sub(*t) >= Self::WINDOW_MS)
        {
            s.pop_front();
        }
        let (t0, n0) = s.front().copied().unwrap_or((now_ms, total));
        if s.len() >= Self::MAX_SAMPLES {
            s.pop_back();
        }
        s.push_back((now_ms, total));
        let dt = now_ms.saturating_sub(t0);
        if dt == 0 {
            0.0
        } else {
            total.saturating_sub(n0) as f64 * 1000.0 / dt as f64
        }
    }
}

fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family with one label: one series per (label value, value).
fn labeled(
    s: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    label: &str,
    names: &[&str],
    values: &[u64],
) {
    family(s, name, kind, help);
    for (n, v) in names.iter().zip(values) {
        let _ = writeln!(s, "{name}{{{label}=\"{n}\"}} {v}");
    }
}

fn simple(s: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    family(s, name, kind, help);
    let _ = writeln!(s, "{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_a_rate_over_the_recent_window() {
        let t = Throughput::new(0);
        assert_eq!(t.per_second(1_000, 100), 100.0);
        assert_eq!(t.per_second(2_000, 300), 150.0);
        // Samples older than the window drop out.
        assert_eq!(t.per_second(40_000, 300), 0.0);
        // The oldest sample kept (2 s) is the start of the window.
        assert_eq!(t.per_second(41_000, 690), 10.0);
    }

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.delivery(Delivery::Delivered, Some(Duration::from_millis(3)));
        m.delivery(Delivery::Failed, Some(Duration::from_secs(20)));
        m.delivery(Delivery::Expired, None);
        m.refused(Refusal::PingRate);
        let text = m.render(&Gauges {
            queued_jobs: 2,
            retries: 1,
            destinations: [3, 0, 1],
            log: crate::storage::LogBounds {
                trail: 4,
                lead: 9,
                events: 6,
                bytes: 600,
            },
            storage_errors: [2, 0, 0, 0],
        });
        assert!(text.contains("hubcast_storage_errors_total{class=\"transient\"} 2\n"));
        assert!(text.contains("hubcast_event_log_lead 9\n"));
        assert!(text.contains("hubcast_deliveries_total{outcome=\"delivered\"} 1\n"));
        assert!(text.contains("hubcast_deliveries_total{outcome=\"expired\"} 1\n"));
        assert!(text.contains("hubcast_delivery_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("hubcast_delivery_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("hubcast_delivery_duration_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("hubcast_delivery_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("hubcast_delivery_duration_seconds_count 2\n"));
        assert!(text.contains("hubcast_destinations{state=\"dead\"} 1\n"));
        assert!(text.contains("# TYPE hubcast_queued_jobs gauge\nhubcast_queued_jobs 2\n"));
        assert!(text.contains("hubcast_requests_refused_total{limit=\"pings_per_client\"} 1\n"));
    }
}
