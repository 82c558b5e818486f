//! The `stream` scenario: a short-message stream at full speed. Two phases, each on a fresh hub,
//! of `--duration-secs` (default 60) of paced 200 B fat pings through the checking sink:
//!
//! - A: 3,000 pings/s over 100 topics × 10 subscribers (30,000 deliveries/s offered);
//! - B: 20,000 pings/s over 2,000 topics × 1 subscriber (20,000 deliveries/s offered).
//!
//! Both on 100 destinations (`--destinations`); `--rate` sets both phases' rate, `--payload`
//! the size. The publisher is the latency scenario's paced one, with up to 512 pings in flight
//! over keep-alive connections (a topic's next ping waits for its previous one to be accepted,
//! so with few topics the hub's answer time bounds the rate); when the hub takes pings more
//! slowly it sends as fast as they are taken, stops at the end of the phase, and the achieved
//! rate is reported. Once a second the
//! hub's `hubcast_queued_jobs` gauge and the driver's count of due-but-undelivered deliveries
//! are sampled; `backlog_slope` (queued jobs) and `undelivered_slope` (deliveries) are their
//! least-squares slopes per second over the second half of the publishing, so a flat backlog
//! is a number near 0. After publishing, the phase waits (at most `--timeout-secs`) for the
//! backlog to drain; what never arrived is counted as lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::driver::{self, Callbacks, Pace, PingKind, Published, TopicServer, Topology};
use crate::hubproc::HubProcess;
use crate::metrics::HubMetrics;
use crate::report::{BacklogSample, Phase, Report};
use crate::scenarios::{Options, hub_log_tail};
use crate::sink::{Sink, SinkStats};

pub struct StreamPhase {
    pub name: &'static str,
    /// Pings per second offered.
    pub rate: f64,
    pub topics: usize,
    pub subs_per_topic: usize,
}

pub const PHASES: [StreamPhase; 2] = [
    StreamPhase {
        name: "a",
        rate: 3_000.0,
        topics: 100,
        subs_per_topic: 10,
    },
    StreamPhase {
        name: "b",
        rate: 20_000.0,
        topics: 2_000,
        subs_per_topic: 1,
    },
];

const DESTINATIONS: usize = 100;
const PAYLOAD: usize = 200;
const SECONDS: u64 = 60;
const SAMPLE: Duration = Duration::from_secs(1);
/// Pings in flight at most: the hub commits pings in groups, so it takes them faster the more
/// arrive together (at 64 in flight it took about 4,000/s here, at 512 about 8,500/s).
const CONCURRENCY: usize = 512;

fn rate(o: &Options, p: &StreamPhase) -> f64 {
    o.rate.unwrap_or(p.rate)
}

fn duration(o: &Options) -> Duration {
    Duration::from_secs(o.duration_secs.unwrap_or(SECONDS).max(1))
}

/// A phase's topology: enough events per topic for the whole phase at its rate.
pub fn topology(o: &Options, p: &StreamPhase) -> Topology {
    let events = (rate(o, p) * duration(o).as_secs_f64() / p.topics as f64).ceil() as usize;
    Topology {
        topics: p.topics,
        subs_per_topic: p.subs_per_topic,
        destinations: o.destinations.unwrap_or(DESTINATIONS),
        events: events.max(1),
        payload: o.payload.unwrap_or(PAYLOAD),
    }
}

/// Both phases' topologies and rates, for the report.
pub fn parameters(o: &Options) -> serde_json::Value {
    PHASES
        .iter()
        .map(|p| {
            serde_json::json!({
                "phase": p.name,
                "rate": rate(o, p),
                "seconds": duration(o).as_secs(),
                "topology": topology(o, p),
            })
        })
        .collect()
}

pub async fn run(o: &Options, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    let mut phases = Vec::new();
    for p in &PHASES {
        eprintln!(
            "stream phase {}: {} pings/s over {} topics × {} subscribers",
            p.name,
            rate(o, p),
            p.topics,
            p.subs_per_topic
        );
        let phase = run_phase(o, p, r)
            .await
            .with_context(|| format!("stream phase {}", p.name))?;
        phases.push(phase);
    }
    Ok(phases)
}

async fn run_phase(o: &Options, p: &StreamPhase, r: &mut Report) -> anyhow::Result<Phase> {
    let topo = topology(o, p);
    let rate = rate(o, p);
    let duration = duration(o);
    let stats = Arc::new(SinkStats::new(topo.subscribers(), topo.events));
    let sink = Sink::start(&driver::destination_ips(topo.destinations)?, stats.clone()).await?;
    let topics = TopicServer::start(topo.topics).await?;
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start(&o.hub_bin()?, dir.path(), &o.settings()).await?;
    let url = |d, i| sink.callback(d, i);
    driver::subscribe_all(
        &hub.url,
        &topo,
        &Callbacks::checking(&sink, &url),
        &topics,
        o.limit(),
    )
    .await?;
    let metrics = HubMetrics::new(&hub.url);
    let published = Arc::new(Published::new(topo.topics));
    let done = AtomicBool::new(false);
    let delivered_when_done = AtomicU64::new(0);
    // (subscriber, event) pairs received or superseded by a later event received.
    let covered_when_done = AtomicU64::new(0);
    let publish_seconds = AtomicU64::new(0); // f64 bits

    let covered = || {
        sink.destinations
            .iter()
            .map(|d| d.covered.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let start = Instant::now();
    let start_us = stats.epoch().elapsed().as_micros() as u64;
    let publishing = async {
        let pace = Pace {
            rate: Some(rate),
            until: Some(start + duration),
            concurrency: CONCURRENCY,
        };
        let events = 0..topo.events;
        let r = driver::publish(
            &hub.url,
            &topo,
            &topics,
            PingKind::Fat,
            events,
            pace,
            &published,
        )
        .await;
        publish_seconds.store(start.elapsed().as_secs_f64().to_bits(), Ordering::Relaxed);
        delivered_when_done.store(stats.deliveries.load(Ordering::Relaxed), Ordering::Relaxed);
        covered_when_done.store(covered(), Ordering::Relaxed);
        done.store(true, Ordering::Relaxed);
        r
    };
    let due = || published.total() * topo.subs_per_topic as u64;
    let bar = driver::progress(0, "streaming");
    let sampling = async {
        let mut samples = Vec::new();
        let mut next = start + SAMPLE;
        let mut drain_until = None;
        loop {
            tokio::time::sleep_until(next.into()).await;
            next += SAMPLE;
            let queued_jobs = metrics.scrape().await.ok().map(|s| s.queued_jobs);
            let (due, covered) = (due(), covered());
            bar.set_length(due);
            bar.set_position(covered.min(due));
            samples.push(BacklogSample {
                second: start.elapsed().as_secs_f64(),
                queued_jobs,
                due,
                undelivered: due.saturating_sub(covered),
            });
            if done.load(Ordering::Relaxed) {
                bar.set_message("draining");
                if covered >= due {
                    return (samples, true);
                }
                let until = *drain_until.get_or_insert_with(|| Instant::now() + o.limit());
                if Instant::now() >= until {
                    return (samples, false);
                }
            } else if start.elapsed() > duration + o.limit() {
                return (samples, false); // the publisher is stuck; it has its own bounds
            }
        }
    };
    let (published_result, (samples, drained)) = tokio::join!(publishing, sampling);
    bar.finish_and_clear();
    if let Err(e) = published_result {
        anyhow::bail!("{e:#}; hub log ends:\n{}", hub_log_tail(dir.path()));
    }
    // Let stragglers (duplicates from in-flight requests) arrive before counting them.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let publish_seconds = f64::from_bits(publish_seconds.load(Ordering::Relaxed));
    let n = p.name;
    let tally =
        stats.tally_upto((0..topo.subscribers()).map(|s| (s, published.of(topo.topic_of(s)))));
    let sent = stats.deliveries.load(Ordering::Relaxed);
    let last = stats.last_delivery_us.load(Ordering::Relaxed);
    let seconds = last.saturating_sub(start_us) as f64 / 1e6;
    let mut phase = Phase::from_sink(
        &format!(
            "hub, phase {}: {rate} pings/s × {}",
            n.to_uppercase(),
            p.subs_per_topic
        ),
        &stats,
        sent,
        seconds,
    );
    phase.tally = Some(tally);

    r.figure(&format!("phase_{n}_offered_per_second"), rate);
    r.figure(
        &format!("phase_{n}_publish_per_second"),
        published.total() as f64 / publish_seconds,
    );
    r.figure(
        &format!("phase_{n}_deliveries_per_second"),
        delivered_when_done.load(Ordering::Relaxed) as f64 / publish_seconds,
    );
    // With coalescing, one delivery carries several events: the events covered per second.
    r.figure(
        &format!("phase_{n}_covered_per_second"),
        covered_when_done.load(Ordering::Relaxed) as f64 / publish_seconds,
    );
    if let Some(q) = &phase.latency_us {
        r.figure(&format!("phase_{n}_latency_p50_us"), q.p50 as f64);
        r.figure(&format!("phase_{n}_latency_p99_us"), q.p99 as f64);
        r.figure(&format!("phase_{n}_latency_p999_us"), q.p999 as f64);
    }
    r.figure(
        &format!("phase_{n}_superseded_by_coalescing"),
        tally.superseded as f64,
    );
    r.figure(&format!("phase_{n}_lost"), tally.lost as f64);
    r.figure(&format!("phase_{n}_duplicates"), tally.duplicates as f64);
    r.figure(
        &format!("phase_{n}_bad_signatures"),
        phase.bad_signatures.unwrap_or(0) as f64,
    );
    let half =
        |s: &&BacklogSample| s.second >= publish_seconds / 2.0 && s.second <= publish_seconds + 0.5;
    let jobs: Vec<(f64, f64)> = samples
        .iter()
        .filter(half)
        .filter_map(|s| Some((s.second, s.queued_jobs? as f64)))
        .collect();
    let undelivered: Vec<(f64, f64)> = samples
        .iter()
        .filter(half)
        .map(|s| (s.second, s.undelivered as f64))
        .collect();
    if let Some(slope) = slope(&jobs) {
        r.figure(&format!("phase_{n}_backlog_slope"), slope);
    }
    if let Some(slope) = slope(&undelivered) {
        r.figure(&format!("phase_{n}_undelivered_slope"), slope);
    }
    r.figure(
        &format!("phase_{n}_drain_seconds"),
        (seconds - publish_seconds).max(0.0),
    );
    if let Some((_, peak)) = hub.rss() {
        r.figure(&format!("phase_{n}_hub_peak_rss_bytes"), peak as f64);
    }
    if !drained {
        r.note(format!(
            "phase {n}: the backlog did not drain within {} s after publishing; what had not \
             arrived is counted as lost",
            o.timeout_secs
        ));
    }
    phase.backlog = samples;
    hub.stop().await?;
    Ok(phase)
}

/// Least-squares slope of y over x; `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), Some(2.0));
        assert_eq!(slope(&[(0.0, 7.0), (1.0, 7.0)]), Some(0.0));
        assert_eq!(slope(&[(1.0, 7.0)]), None);
        assert_eq!(slope(&[(1.0, 7.0), (1.0, 8.0)]), None);
    }
}
