//! The scenarios. Each repetition starts a fresh hub process on a fresh data directory and a
//! fresh sink; scenarios that compare against the baseline run it in the same repetition, on
//! the same loopback addresses, right after the hub.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::baseline;
use crate::driver::{self, PingKind, TopicServer, Topology, destination_ips};
use crate::hubproc::{HubProcess, HubSettings};
use crate::report::{Phase, Report};
use crate::sink::{Behaviour, Sink, SinkStats, Tally};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Scenario {
    /// 1 topic, 100k subscribers on 100 destinations, against the baseline client.
    Fanout,
    /// 10k topics × 10 subscribers, one event each, against the baseline client.
    ManyTopics,
    /// Steady 1k events/s over 100 topics × 10 subscribers: publish→delivery latency.
    Latency,
    /// 10% dead and 10% slow destinations: healthy throughput compared with a run without them.
    DeadDestinations,
    /// kill -9 a third of the way through a fan-out, restart, count lost and duplicated.
    Crash,
    /// Verified subscriptions per second.
    SubscribeStorm,
    /// 1M subscriptions stored: hub memory and disk per subscription.
    Scale,
    /// A seconds-long run of the fan-out and crash paths (CI keeps the tool from rotting).
    Smoke,
}

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Options {
    /// Subscribers in total (scenario default if absent).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Destination servers (loopback addresses 127.0.0.2 …), at most 250.
    #[arg(long)]
    pub destinations: Option<usize>,
    #[arg(long)]
    pub topics: Option<usize>,
    /// Events per topic.
    #[arg(long)]
    pub events: Option<usize>,
    /// Bytes of content per event.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    #[arg(long, value_enum, default_value_t = PingKind::Fat)]
    pub ping: PingKind,
    /// Repetitions; figures are reported as medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Longest any phase may take, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Events per second (latency scenario).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of steady publishing (latency scenario).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// The hub binary; default: `hubcast` next to this program.
    #[arg(long)]
    pub hub_bin: Option<PathBuf>,
    /// Where the JSON report and the SVG plots go.
    #[arg(long, default_value = "loadtest-report")]
    pub out: PathBuf,
    /// The hub's delivery.per_destination (and the baseline's per-destination concurrency).
    #[arg(long, default_value_t = 32)]
    pub per_destination: usize,
    /// The hub's delivery.max_in_flight (and the baseline's global cap).
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
}

impl Options {
    fn hub_bin(&self) -> anyhow::Result<PathBuf> {
        if let Some(b) = &self.hub_bin {
            return Ok(b.clone());
        }
        let me = std::env::current_exe()?;
        let dir = me.parent().context("no directory for this program")?;
        // Next to us, or one up (when we run as a test from target/*/deps).
        let candidates = [dir.join("hubcast"), dir.join("../hubcast")];
        Ok(candidates
            .iter()
            .find(|c| c.exists())
            .cloned()
            .unwrap_or_else(|| candidates[0].clone()))
    }

    fn limit(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    fn settings(&self) -> HubSettings {
        HubSettings {
            per_destination: self.per_destination,
            max_in_flight: self.max_in_flight,
            ..HubSettings::default()
        }
    }

    fn topology(
        &self,
        subscribers: usize,
        topics: usize,
        destinations: usize,
        events: usize,
    ) -> Topology {
        let topics = self.topics.unwrap_or(topics).max(1);
        let subscribers = self.subscribers.unwrap_or(subscribers).max(topics);
        Topology {
            topics,
            subs_per_topic: subscribers / topics,
            destinations: self.destinations.unwrap_or(destinations),
            events: self.events.unwrap_or(events).max(1),
            payload: self.payload,
        }
    }
}

/// What one hub phase measured.
struct HubRun {
    phase: Phase,
    subscribe_seconds: f64,
    rss: Option<(u64, u64)>,
    disk: u64,
    tally: Tally,
}

/// Destinations given a behaviour for a phase, and the subscribers whose deliveries are timed.
#[derive(Default)]
struct Plan<'a> {
    behaviours: &'a [(usize, Behaviour)],
    crash_at: Option<f64>,
    /// Pings per second; `None`: as fast as the hub takes them.
    rate: Option<f64>,
}

pub async fn run(scenario: Scenario, o: &Options) -> anyhow::Result<Report> {
    let topo = match scenario {
        Scenario::Fanout | Scenario::DeadDestinations | Scenario::Crash => {
            o.topology(100_000, 1, 100, 1)
        }
        Scenario::ManyTopics => o.topology(100_000, 10_000, 100, 1),
        Scenario::Latency => {
            let topics = o.topics.unwrap_or(100);
            let events = ((o.rate * o.duration_secs as f64) / topics as f64).ceil() as usize;
            o.topology(1_000, topics, 10, events)
        }
        Scenario::SubscribeStorm => o.topology(100_000, 100, 100, 1),
        Scenario::Scale => o.topology(1_000_000, 1_000, 100, 1),
        Scenario::Smoke => o.topology(300, 3, 6, 2),
    };
    let parameters = serde_json::json!({ "topology": topo, "options": o, "hub": o.settings() });
    let mut report = Report::new(&format!("{scenario:?}").to_lowercase(), parameters);
    for run in 0..o.runs.max(1) {
        eprintln!("{scenario:?}: run {} of {}", run + 1, o.runs.max(1));
        let phases = match scenario {
            Scenario::Fanout | Scenario::ManyTopics => {
                versus_baseline(o, &topo, &mut report).await?
            }
            Scenario::Latency => latency(o, &topo, &mut report).await?,
            Scenario::DeadDestinations => dead_destinations(o, &topo, &mut report).await?,
            Scenario::Crash => crash(o, &topo, &mut report).await?,
            Scenario::SubscribeStorm | Scenario::Scale => storage(o, &topo, &mut report).await?,
            Scenario::Smoke => {
                let mut p = versus_baseline(o, &topo, &mut report).await?;
                p.extend(crash(o, &topo, &mut report).await?);
                p
            }
        };
        report.runs.push(phases);
    }
    report.finish();
    Ok(report)
}

async fn versus_baseline(
    o: &Options,
    topo: &Topology,
    r: &mut Report,
) -> anyhow::Result<Vec<Phase>> {
    let hub = hub_phase(o, topo, Plan::default()).await?;
    let base = baseline_phase(o, topo).await?;
    r.figure("hub_deliveries_per_second", hub.phase.per_second);
    r.figure("baseline_deliveries_per_second", base.per_second);
    r.figure(
        "hub_to_baseline_ratio",
        hub.phase.per_second / base.per_second,
    );
    r.figure(
        "verified_subscriptions_per_second",
        topo.subscribers() as f64 / hub.subscribe_seconds,
    );
    if let Some(q) = &hub.phase.latency_us {
        r.figure("hub_latency_p50_us", q.p50 as f64);
        r.figure("hub_latency_p99_us", q.p99 as f64);
    }
    r.figure("lost", hub.tally.lost as f64);
    r.figure("superseded_by_coalescing", hub.tally.superseded as f64);
    r.figure("duplicates", hub.tally.duplicates as f64);
    r.figure("bad_signatures", hub.phase.bad_signatures as f64);
    resources(r, &hub, topo);
    Ok(vec![hub.phase, base])
}

async fn latency(o: &Options, topo: &Topology, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    let plan = Plan {
        rate: Some(o.rate),
        ..Plan::default()
    };
    let hub = hub_phase(o, topo, plan).await?;
    if let Some(q) = &hub.phase.latency_us {
        r.figure("latency_p50_us", q.p50 as f64);
        r.figure("latency_p99_us", q.p99 as f64);
        r.figure("latency_p999_us", q.p999 as f64);
    }
    r.figure("events_per_second_offered", o.rate);
    r.figure("lost", hub.tally.lost as f64);
    r.figure("superseded_by_coalescing", hub.tally.superseded as f64);
    r.figure("bad_signatures", hub.phase.bad_signatures as f64);
    Ok(vec![hub.phase])
}

async fn dead_destinations(
    o: &Options,
    topo: &Topology,
    r: &mut Report,
) -> anyhow::Result<Vec<Phase>> {
    let tenth = (topo.destinations / 10).max(1);
    let mut behaviours: Vec<(usize, Behaviour)> =
        (0..tenth).map(|d| (d, Behaviour::Hang)).collect();
    behaviours.extend((tenth..2 * tenth).map(|d| (d, Behaviour::Slow)));
    let mut clean = hub_phase(o, topo, Plan::default()).await?;
    clean.phase.label = "hub, all healthy".into();
    let mut troubled = hub_phase(
        o,
        topo,
        Plan {
            behaviours: &behaviours,
            ..Plan::default()
        },
    )
    .await?;
    troubled.phase.label = "hub, 10% dead + 10% slow".into();
    r.figure("healthy_per_second_without", clean.phase.per_second);
    r.figure("healthy_per_second_with", troubled.phase.per_second);
    r.figure(
        "with_to_without_ratio",
        troubled.phase.per_second / clean.phase.per_second,
    );
    r.figure("lost_at_healthy", troubled.tally.lost as f64);
    Ok(vec![clean.phase, troubled.phase])
}

async fn crash(o: &Options, topo: &Topology, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    let mut hub = hub_phase(
        o,
        topo,
        Plan {
            crash_at: Some(0.3),
            ..Plan::default()
        },
    )
    .await?;
    hub.phase.label = "hub, kill -9 at 30%".into();
    r.figure("crash_lost", hub.tally.lost as f64);
    r.figure("crash_duplicates", hub.tally.duplicates as f64);
    r.figure("crash_superseded", hub.tally.superseded as f64);
    r.figure("crash_bad_signatures", hub.phase.bad_signatures as f64);
    Ok(vec![hub.phase])
}

/// subscribe-storm and scale: subscriptions only, no publishing.
async fn storage(o: &Options, topo: &Topology, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    let dir = tempfile::tempdir()?;
    let stats = Arc::new(SinkStats::new(topo.subscribers(), 1));
    let sink = Sink::start(&destination_ips(topo.destinations)?, stats.clone()).await?;
    let topics = TopicServer::start(topo.topics).await?;
    let hub = HubProcess::start(&o.hub_bin()?, dir.path(), &o.settings()).await?;
    let idle = hub.rss().map(|r| r.0).unwrap_or(0);
    let seconds = driver::subscribe_all(&hub.url, topo, &sink, &topics, o.limit())
        .await?
        .as_secs_f64();
    let n = topo.subscribers() as f64;
    r.figure("verified_subscriptions_per_second", n / seconds);
    if let Some((rss, peak)) = hub.rss() {
        r.figure(
            "rss_bytes_per_subscription",
            rss.saturating_sub(idle) as f64 / n,
        );
        r.figure("peak_rss_bytes", peak as f64);
    }
    hub.stop().await?; // flushes: the disk figure is what stays
    let disk = crate::hubproc::dir_size(&dir.path().join("data"));
    r.figure("disk_bytes_per_subscription", disk as f64 / n);
    Ok(vec![Phase::from_sink("subscriptions", &stats, 0, seconds)])
}

fn resources(r: &mut Report, hub: &HubRun, topo: &Topology) {
    if let Some((rss, peak)) = hub.rss {
        r.figure("hub_rss_bytes", rss as f64);
        r.figure("hub_peak_rss_bytes", peak as f64);
    }
    r.figure(
        "hub_disk_bytes_per_subscription",
        hub.disk as f64 / topo.subscribers() as f64,
    );
}

/// Subscribes, publishes, waits for the deliveries to the healthy destinations, and measures.
async fn hub_phase(o: &Options, topo: &Topology, plan: Plan<'_>) -> anyhow::Result<HubRun> {
    let dir = tempfile::tempdir()?;
    let stats = Arc::new(SinkStats::new(topo.subscribers(), topo.events));
    let sink = Sink::start(&destination_ips(topo.destinations)?, stats.clone()).await?;
    let topics = TopicServer::start(topo.topics).await?;
    let mut hub = HubProcess::start(&o.hub_bin()?, dir.path(), &o.settings()).await?;
    let subscribe_seconds = driver::subscribe_all(&hub.url, topo, &sink, &topics, o.limit())
        .await?
        .as_secs_f64();

    let troubled: Vec<usize> = plan.behaviours.iter().map(|(d, _)| *d).collect();
    for (d, b) in plan.behaviours {
        sink.destinations[*d].set(*b);
    }
    let healthy: Vec<usize> = (0..topo.subscribers())
        .filter(|i| !troubled.contains(&topo.destination_of(*i)))
        .collect();
    let healthy_destinations: Vec<usize> = (0..topo.destinations)
        .filter(|d| !troubled.contains(d))
        .collect();
    let target = (healthy.len() * topo.events) as u64;

    let start = Instant::now();
    let start_us = stats.epoch().elapsed().as_micros() as u64;
    let publishing = {
        let (url, topo, kind) = (hub.url.clone(), topo.clone(), o.ping);
        let topics_ref = &topics;
        async move { driver::publish(&url, &topo, topics_ref, kind, 0..topo.events, plan.rate).await }
    };
    let bar = driver::progress(target, "delivering");
    // Done when every (callback, event) arrived, or was superseded by a later event of its
    // topic that arrived (backlog coalescing: the newer content carries the older).
    let received = || {
        healthy_destinations
            .iter()
            .map(|d| sink.destinations[*d].covered.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    // With a crash planned, kill the hub once that share has arrived, then wait for the rest.
    let first_wait = plan
        .crash_at
        .map_or(target, |share| (target as f64 * share) as u64);
    let run = async {
        let (p, w) = tokio::join!(
            publishing,
            driver::wait_for(o.limit(), &bar, &received, first_wait)
        );
        p?;
        w?;
        if plan.crash_at.is_some() {
            hub.restart().await.context("restarting after kill -9")?;
            driver::wait_for(o.limit(), &bar, &received, target).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    if let Err(e) = run.await {
        let t = stats.tally(healthy.iter().copied());
        let log = std::fs::read_to_string(dir.path().join("hub.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        anyhow::bail!(
            "{e:#}: {t:?}, bad signatures {}; hub log ends:\n{}",
            stats.bad_signatures.load(Ordering::Relaxed),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    bar.finish_and_clear();
    let seconds = if plan.behaviours.is_empty() {
        let last = stats.last_delivery_us.load(Ordering::Relaxed);
        (last.saturating_sub(start_us)) as f64 / 1e6
    } else {
        start.elapsed().as_secs_f64()
    };
    // Let stragglers (duplicates from in-flight requests) arrive before counting them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = stats.tally(healthy.iter().copied());
    // Requests the sink answered 2xx: what the hub really sent (coalesced events not counted).
    let sent = stats.deliveries.load(Ordering::Relaxed);
    let mut phase = Phase::from_sink("hub", &stats, sent, seconds);
    phase.tally = Some(tally);
    let rss = hub.rss();
    let disk = hub.disk();
    hub.stop().await?;
    Ok(HubRun {
        phase,
        subscribe_seconds,
        rss,
        disk,
        tally,
    })
}

async fn baseline_phase(o: &Options, topo: &Topology) -> anyhow::Result<Phase> {
    let stats = Arc::new(SinkStats::new(topo.subscribers(), topo.events));
    let sink = Sink::start(&destination_ips(topo.destinations)?, stats.clone()).await?;
    let topics = TopicServer::start(topo.topics).await?;
    let elapsed = baseline::run(
        topo,
        &sink,
        &topics,
        o.per_destination,
        o.max_in_flight,
        o.limit(),
    )
    .await?;
    let sent = stats.deliveries.load(Ordering::Relaxed);
    let mut phase = Phase::from_sink("baseline client", &stats, sent, elapsed.as_secs_f64());
    phase.tally = Some(stats.tally(0..topo.subscribers()));
    Ok(phase)
}
