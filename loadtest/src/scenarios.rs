//! The scenarios. Each repetition starts a fresh hub process on a fresh data directory and a
//! fresh sink; scenarios that compare against the baseline run it in the same repetition, on
//! the same loopback addresses, right after the hub.
//!
//! Throughput scenarios (fanout, many-topics, dead-destinations, smoke) first measure the
//! machine's ceiling in the same repetition ([`crate::ceiling`]: wrk or a lean hyper client
//! against nginx or a lean hyper sink) and report the hub's rate against it
//! (`hub_to_ceiling_ratio`) as well as against the reqwest baseline (`hub_to_baseline_ratio`).
//! With `--sink lean` the hub delivers to that same lean sink and its deliveries are counted
//! from its own /metrics; loss, duplicates, signatures and latency are then not measured and
//! left out of the report (absent, not 0).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::baseline;
use crate::ceiling::{self, CeilingClient, Delivery};
use crate::driver::destination_ips;
use crate::driver::{self, Callbacks, Pace, PingKind, Published, TopicServer, Topology};
use crate::hubproc::{HubProcess, HubSettings};
use crate::lean_sink::{LeanSink, LeanSinkKind};
use crate::metrics::HubMetrics;
use crate::report::{Phase, Report};
use crate::sink::{Behaviour, Sink, SinkStats};
use crate::{nginx, stream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Scenario {
    /// 1 topic, 100k subscribers on 100 destinations, against the baseline client.
    Fanout,
    /// 10k topics × 10 subscribers, one event each, against the baseline client.
    ManyTopics,
    /// Steady 1k events/s over 100 topics × 10 subscribers: publish→delivery latency.
    Latency,
    /// A short-message stream at full speed, two phases of `--duration-secs` (default 60) of
    /// 200 B fat pings through the checking sink: A, 3,000/s over 100 topics × 10 subscribers;
    /// B, 20,000/s over 2,000 topics × 1 subscriber (both on 100 destinations; `--rate` sets
    /// both phases' rate). Latency, loss and the hub's backlog once a second.
    Stream,
    /// 10% dead and 10% slow destinations: healthy throughput compared with a run without them.
    DeadDestinations,
    /// kill -9 a third of the way through a fan-out, restart, count lost and duplicated.
    Crash,
    /// Verified subscriptions per second.
    SubscribeStorm,
    /// 1M subscriptions stored: hub memory and disk per subscription.
    Scale,
    /// Delegated delivery: 100k subscribers on 10 destinations, 10 events, delivered directly
    /// and through a registered relay per destination (batches), with and without subscriber
    /// secrets; then the firehose: hub B following hub A's stream of 20,000 1 KB events.
    Relay,
    /// The firehose alone: hub A takes `--topics` (100) × `--events` (200) fat pings of
    /// `--payload` (1 KB), then hub B follows A's stream from the start.
    Firehose,
    /// One sender hub, three receiver hubs on loopback multicast: 200 B and 4 KiB events
    /// (`--payload` for one size), over HTTP and by multicast at 0%, 1% and 5% loss (nftables,
    /// as root): events/s into every receiver's log, repair p50/p99, bytes sent per event.
    Multicast,
    /// 1, 2 and 3 hub nodes on one PostgreSQL database (`DATABASE_URL`, or a throwaway
    /// cluster), and one sled hub beside them: fan-out (1 topic × 20,000 subscribers on 100
    /// destinations, 1 event) and many-topics (2,000 topics × 10, 1 event each) throughput,
    /// with the database's statements, transactions and WAL bytes per event and delivery.
    Cluster,
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
    /// Bytes of content per event (default 1024; stream: 200).
    #[arg(long)]
    pub payload: Option<usize>,
    #[arg(long, value_enum, default_value_t = PingKind::Fat)]
    pub ping: PingKind,
    /// Repetitions; figures are reported as medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Longest any phase may take, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Events per second (latency: default 1000; stream: both phases at this rate instead of
    /// 3,000 and 20,000).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of steady publishing (latency: default 10; stream: default 60 per phase).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Receiver hubs in the multicast scenario.
    #[arg(long, default_value_t = 3)]
    pub receivers: usize,
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
    /// Where the hub delivers in fanout, many-topics and smoke: `checking` (the load test's
    /// sink checks and counts every delivery) or `lean` (the ceiling's sink; deliveries counted
    /// from the hub's /metrics). Default: lean when nginx is installed, else checking. Latency,
    /// stream, crash and dead-destinations always use the checking sink.
    #[arg(long, value_enum)]
    pub sink: Option<SinkChoice>,
    /// The ceiling's client: wrk, or a lean hyper client (auto: wrk if installed).
    #[arg(long, value_enum, default_value_t = CeilingClient::Auto)]
    pub ceiling_client: CeilingClient,
    /// The ceiling's sink, also the hub's with `--sink lean` (auto: nginx if installed).
    #[arg(long, value_enum, default_value_t = LeanSinkKind::Auto)]
    pub ceiling_sink: LeanSinkKind,
    /// Seconds the ceiling client runs.
    #[arg(long, default_value_t = 10)]
    pub ceiling_secs: u64,
    /// Keep-alive connections of the ceiling client.
    #[arg(long, default_value_t = 64)]
    pub ceiling_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum SinkChoice {
    /// The load test's sink: checks every signature, counts loss, duplicates and latency.
    Checking,
    /// The ceiling's sink (nginx, or the lean hyper sink): 204, nothing checked.
    Lean,
}

impl Options {
    pub(crate) fn hub_bin(&self) -> anyhow::Result<PathBuf> {
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

    pub(crate) fn limit(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Where the hub delivers in fanout, many-topics and smoke.
    pub fn sink(&self) -> SinkChoice {
        self.sink.unwrap_or(if nginx::find().is_some() {
            SinkChoice::Lean
        } else {
            SinkChoice::Checking
        })
    }

    pub(crate) fn settings(&self) -> HubSettings {
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
            payload: self.payload.unwrap_or(1024),
        }
    }
}

/// What one hub phase measured.
struct HubRun {
    /// Its `tally` is `None` with the lean sink (not measured).
    phase: Phase,
    subscribe_seconds: f64,
    rss: Option<(u64, u64)>,
    disk: u64,
}

impl HubRun {
    /// Takes the hub's memory and disk figures, then stops it.
    async fn finish(
        hub: HubProcess,
        phase: Phase,
        subscribe_seconds: f64,
    ) -> anyhow::Result<HubRun> {
        let rss = hub.rss();
        let disk = hub.disk();
        hub.stop().await?;
        Ok(HubRun {
            phase,
            subscribe_seconds,
            rss,
            disk,
        })
    }
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
            let seconds = o.duration_secs.unwrap_or(10) as f64;
            let events = ((o.rate.unwrap_or(1000.0) * seconds) / topics as f64).ceil() as usize;
            o.topology(1_000, topics, 10, events)
        }
        Scenario::Stream => stream::topology(o, &stream::PHASES[0]),
        Scenario::SubscribeStorm => o.topology(100_000, 100, 100, 1),
        Scenario::Scale => o.topology(1_000_000, 1_000, 100, 1),
        Scenario::Smoke => o.topology(300, 3, 6, 2),
        Scenario::Relay => o.topology(100_000, 1, 10, 10),
        Scenario::Firehose | Scenario::Multicast => o.topology(0, 100, 1, 200),
        Scenario::Cluster => o.topology(20_000, 1, 100, 1),
    };
    let mut parameters = serde_json::json!({ "topology": topo, "options": o, "hub": o.settings() });
    if scenario == Scenario::Stream {
        parameters["topology"] = stream::parameters(o);
    }
    let mut report = Report::new(&format!("{scenario:?}").to_lowercase(), parameters);
    for run in 0..o.runs.max(1) {
        eprintln!("{scenario:?}: run {} of {}", run + 1, o.runs.max(1));
        let phases = match scenario {
            Scenario::Fanout | Scenario::ManyTopics => {
                versus_baseline(o, &topo, &mut report).await?
            }
            Scenario::Latency => latency(o, &topo, &mut report).await?,
            Scenario::Stream => stream::run(o, &mut report).await?,
            Scenario::DeadDestinations => dead_destinations(o, &topo, &mut report).await?,
            Scenario::Crash => crash(o, &topo, &mut report).await?,
            Scenario::SubscribeStorm | Scenario::Scale => storage(o, &topo, &mut report).await?,
            Scenario::Relay => crate::relay::run(o, &topo, &mut report).await?,
            Scenario::Multicast => crate::multicast::run(o, &mut report).await?,
            Scenario::Cluster => crate::cluster::run(o, &topo, &mut report).await?,
            Scenario::Firehose => {
                let (origin, follow) = crate::relay::firehose(o, &mut report).await?;
                vec![origin, follow]
            }
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
    let (lean, ceiling) = measure_ceiling(o, topo, r).await?;
    let hub = match o.sink() {
        SinkChoice::Lean => {
            r.label("hub_sink", &format!("lean ({})", lean.name()));
            let hub = hub_phase_lean(o, topo, &lean).await;
            lean.stop().await;
            hub?
        }
        SinkChoice::Checking => {
            r.label("hub_sink", "checking");
            lean.stop().await;
            hub_phase(o, topo, Plan::default()).await?
        }
    };
    let base = baseline_phase(o, topo).await?;
    r.figure("hub_deliveries_per_second", hub.phase.per_second);
    r.figure("baseline_deliveries_per_second", base.per_second);
    r.figure(
        "hub_to_baseline_ratio",
        hub.phase.per_second / base.per_second,
    );
    r.figure(
        "hub_to_ceiling_ratio",
        hub.phase.per_second / ceiling.requests_per_second,
    );
    r.figure(
        "baseline_to_ceiling_ratio",
        base.per_second / ceiling.requests_per_second,
    );
    r.figure(
        "verified_subscriptions_per_second",
        topo.subscribers() as f64 / hub.subscribe_seconds,
    );
    checked_figures(r, &hub, "");
    resources(r, &hub, topo);
    Ok(vec![hub.phase, base])
}

/// Latency, loss, duplicates and signatures: only what the checking sink measured.
fn checked_figures(r: &mut Report, hub: &HubRun, prefix: &str) {
    if let Some(q) = &hub.phase.latency_us {
        r.figure(&format!("{prefix}hub_latency_p50_us"), q.p50 as f64);
        r.figure(&format!("{prefix}hub_latency_p99_us"), q.p99 as f64);
    }
    if let Some(t) = &hub.phase.tally {
        r.figure(&format!("{prefix}lost"), t.lost as f64);
        r.figure(
            &format!("{prefix}superseded_by_coalescing"),
            t.superseded as f64,
        );
        r.figure(&format!("{prefix}duplicates"), t.duplicates as f64);
    }
    if let Some(b) = hub.phase.bad_signatures {
        r.figure(&format!("{prefix}bad_signatures"), b as f64);
    }
    if hub.phase.tally.is_none() {
        r.note(
            "the hub delivered to the lean sink, counted from its /metrics: latency, loss, \
             duplicates and signatures were not measured (absent from the figures)"
                .into(),
        );
    }
}

/// Starts the lean sink on the topology's destinations and measures the machine's ceiling
/// against it. The sink is returned running (the hub may deliver to it next).
pub(crate) async fn measure_ceiling(
    o: &Options,
    topo: &Topology,
    r: &mut Report,
) -> anyhow::Result<(LeanSink, ceiling::Ceiling)> {
    let lean = LeanSink::start(o.ceiling_sink, &destination_ips(topo.destinations)?)
        .await
        .context("starting the lean sink")?;
    eprintln!("measuring the ceiling ({} s)", o.ceiling_secs);
    let c = ceiling::measure(
        o.ceiling_client,
        &lean,
        &Delivery::like_hub(topo.payload),
        Duration::from_secs(o.ceiling_secs),
        o.ceiling_connections,
    )
    .await
    .context("measuring the ceiling")?;
    r.figure("ceiling_requests_per_second", c.requests_per_second);
    r.figure("ceiling_errors", c.errors as f64);
    r.label("ceiling_client", c.client);
    r.label("ceiling_sink", c.sink);
    r.label("ceiling_command", &c.command);
    Ok((lean, c))
}

async fn latency(o: &Options, topo: &Topology, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    let rate = o.rate.unwrap_or(1000.0);
    let plan = Plan {
        rate: Some(rate),
        ..Plan::default()
    };
    let hub = hub_phase(o, topo, plan).await?;
    if let Some(q) = &hub.phase.latency_us {
        r.figure("latency_p50_us", q.p50 as f64);
        r.figure("latency_p99_us", q.p99 as f64);
        r.figure("latency_p999_us", q.p999 as f64);
    }
    r.figure("events_per_second_offered", rate);
    let t = hub.phase.tally.unwrap_or_default();
    r.figure("lost", t.lost as f64);
    r.figure("superseded_by_coalescing", t.superseded as f64);
    r.figure(
        "bad_signatures",
        hub.phase.bad_signatures.unwrap_or(0) as f64,
    );
    Ok(vec![hub.phase])
}

async fn dead_destinations(
    o: &Options,
    topo: &Topology,
    r: &mut Report,
) -> anyhow::Result<Vec<Phase>> {
    let tenth = (topo.destinations / 10).max(1);
    let (lean, ceiling) = measure_ceiling(o, topo, r).await?;
    lean.stop().await;
    r.label("hub_sink", "checking");
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
    r.figure(
        "hub_to_ceiling_ratio",
        clean.phase.per_second / ceiling.requests_per_second,
    );
    r.figure(
        "lost_at_healthy",
        troubled.phase.tally.unwrap_or_default().lost as f64,
    );
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
    let t = hub.phase.tally.unwrap_or_default();
    r.figure("crash_lost", t.lost as f64);
    r.figure("crash_duplicates", t.duplicates as f64);
    r.figure("crash_superseded", t.superseded as f64);
    r.figure(
        "crash_bad_signatures",
        hub.phase.bad_signatures.unwrap_or(0) as f64,
    );
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
    let url = |d, i| sink.callback(d, i);
    let callbacks = Callbacks::checking(&sink, &url);
    let seconds = driver::subscribe_all(&hub.url, topo, &callbacks, &topics, o.limit())
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
    let url = |d, i| sink.callback(d, i);
    let callbacks = Callbacks::checking(&sink, &url);
    let subscribe_seconds = driver::subscribe_all(&hub.url, topo, &callbacks, &topics, o.limit())
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

    let start_us = stats.epoch().elapsed().as_micros() as u64;
    let publishing = {
        let (url, topo, kind) = (hub.url.clone(), topo.clone(), o.ping);
        let topics_ref = &topics;
        let pace = Pace {
            rate: plan.rate,
            ..Pace::default()
        };
        let published = Arc::new(Published::new(topo.topics));
        async move {
            driver::publish(
                &url,
                &topo,
                topics_ref,
                kind,
                0..topo.events,
                pace,
                &published,
            )
            .await
        }
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
        anyhow::bail!(
            "{e:#}: {t:?}, bad signatures {}; hub log ends:\n{}",
            stats.bad_signatures.load(Ordering::Relaxed),
            hub_log_tail(dir.path())
        );
    }
    bar.finish_and_clear();
    // Up to the last delivery to a healthy destination, as timed by the sink (with troubled
    // destinations too: the slow ones' late answers are not the healthy throughput).
    let last = healthy_destinations
        .iter()
        .map(|d| sink.destinations[*d].last_us.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let seconds = last.saturating_sub(start_us) as f64 / 1e6;
    // Let stragglers (duplicates from in-flight requests) arrive before counting them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = stats.tally(healthy.iter().copied());
    // Requests the sink answered 2xx: what the hub really sent (coalesced events not counted).
    let sent = stats.deliveries.load(Ordering::Relaxed);
    let mut phase = Phase::from_sink("hub", &stats, sent, seconds);
    phase.tally = Some(tally);
    HubRun::finish(hub, phase, subscribe_seconds).await
}

/// The last lines of the hub's log in `dir`.
pub(crate) fn hub_log_tail(dir: &std::path::Path) -> String {
    let log = std::fs::read_to_string(dir.join("hub.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The hub delivering to the lean sink: subscribes on it (it echoes the challenges), publishes
/// as fast as the hub takes the pings, and counts completion from the hub's /metrics.
async fn hub_phase_lean(o: &Options, topo: &Topology, lean: &LeanSink) -> anyhow::Result<HubRun> {
    let dir = tempfile::tempdir()?;
    let topics = TopicServer::start(topo.topics).await?;
    let hub = HubProcess::start(&o.hub_bin()?, dir.path(), &o.settings()).await?;
    let url = |d, i| lean.callback(d, i);
    let callbacks = Callbacks {
        url: &url,
        verifications: None,
    };
    let subscribe_seconds = driver::subscribe_all(&hub.url, topo, &callbacks, &topics, o.limit())
        .await?
        .as_secs_f64();
    let metrics = HubMetrics::new(&hub.url);
    let before = metrics.scrape().await?.delivered;
    let published_all = AtomicBool::new(false);
    let bar = driver::progress(topo.expected(), "delivering");
    let start = Instant::now();
    let publishing = async {
        let published = Arc::new(Published::new(topo.topics));
        let pace = Pace::default();
        let r = driver::publish(
            &hub.url,
            topo,
            &topics,
            o.ping,
            0..topo.events,
            pace,
            &published,
        )
        .await;
        published_all.store(true, Ordering::Relaxed);
        r
    };
    let counting = driver::wait_for_hub_deliveries(
        &metrics,
        before,
        topo.expected(),
        start,
        &published_all,
        o.limit(),
        &bar,
    );
    let (p, count) = tokio::join!(publishing, counting);
    let count = match p.and(count) {
        Ok(c) => c,
        Err(e) => anyhow::bail!("{e:#}; hub log ends:\n{}", hub_log_tail(dir.path())),
    };
    bar.finish_and_clear();
    let phase = Phase::from_hub_count(&format!("hub → {} (lean)", lean.name()), &count);
    HubRun::finish(hub, phase, subscribe_seconds).await
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
