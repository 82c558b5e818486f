//! The relay scenario, in two parts.
//!
//! **Delegated delivery.** The fan-out topology (default 100,000 subscribers of one topic on 10
//! destination servers, 10 events) delivered by a hub process to the lean sink twice in the
//! same repetition: directly (one POST per subscriber), then with a relay registered for every
//! destination (`hub.mode=relay` on the sink's own origin: one batch POST per thousand
//! deliveries). Logical deliveries are counted from the hub's own `/metrics` (a batch's
//! deliveries count one each); both variants run with a secret on every subscription and
//! without. The lean sink (nginx or the hyper one) answers every batch with 204.
//!
//! **Firehose.** Hub A takes `--events` × `--topics` fat pings of `--payload` bytes (default
//! 20,000 × 1 KB over 100 topics) with no subscriber of its own (a peer follows every topic);
//! then hub B starts with A as its upstream and takes the whole stream into its own log: events
//! per second from B answering (its process start and store opening excluded; events it took
//! before are not counted) to B's cursor reaching A's lead. The ceiling it is compared with
//! is A's own rate of taking the same events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::driver::{self, Callbacks, Pace, Published, TopicServer, Topology, destination_ips};
use crate::hubproc::{HubProcess, HubSettings};
use crate::lean_sink::LeanSink;
use crate::metrics::HubMetrics;
use crate::report::{Phase, Report};
use crate::scenarios::Options;

const RELAY_SECRET: &str = "loadtest-relay-secret";
const PEER_TOKEN: &str = "loadtest-peer-token-0123";

pub async fn run(o: &Options, topo: &Topology, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    let ips = destination_ips(topo.destinations)?;
    let lean = LeanSink::start(o.ceiling_sink, &ips).await?;
    r.label("sink", lean.name());
    let mut phases = Vec::new();
    let result = async {
        for secrets in [true, false] {
            let name = if secrets {
                "with_secrets"
            } else {
                "without_secrets"
            };
            let direct = delivery_phase(o, topo, &lean, secrets, false).await?;
            let relayed = delivery_phase(o, topo, &lean, secrets, true).await?;
            r.figure(
                &format!("direct_{name}_deliveries_per_second"),
                direct.per_second,
            );
            r.figure(
                &format!("relayed_{name}_logical_deliveries_per_second"),
                relayed.per_second,
            );
            r.figure(
                &format!("relayed_to_direct_{name}_ratio"),
                relayed.per_second / direct.per_second,
            );
            phases.push(direct);
            phases.push(relayed);
        }
        anyhow::Ok(())
    }
    .await;
    lean.stop().await;
    result?;
    let (origin, firehose) = firehose(o, r).await?;
    phases.push(origin);
    phases.push(firehose);
    Ok(phases)
}

/// One fan-out of the topology through a fresh hub, direct or through registered relays.
async fn delivery_phase(
    o: &Options,
    topo: &Topology,
    lean: &LeanSink,
    secrets: bool,
    relays: bool,
) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir()?;
    let topics = TopicServer::start(topo.topics).await?;
    let hub = HubProcess::start(&o.hub_bin()?, dir.path(), &o.settings()).await?;
    let url = |d, i| lean.callback(d, i);
    let callbacks = Callbacks {
        url: &url,
        verifications: None,
    };
    driver::subscribe_all_with(&hub.url, topo, &callbacks, &topics, o.limit(), secrets).await?;
    if relays {
        register_relays(&hub.url, lean, topo.subscribers() as u64).await?;
    }
    let metrics = HubMetrics::new(&hub.url);
    let before = metrics.scrape().await?.delivered;
    let published_all = AtomicBool::new(false);
    let bar = driver::progress(topo.expected(), "delivering");
    let start = Instant::now();
    let publishing = async {
        let published = Arc::new(Published::new(topo.topics));
        let r = driver::publish(
            &hub.url,
            topo,
            &topics,
            o.ping,
            0..topo.events,
            Pace::default(),
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
        Err(e) => bail!(
            "{e:#}; hub log ends:\n{}",
            crate::scenarios::hub_log_tail(dir.path())
        ),
    };
    bar.finish_and_clear();
    let how = if relays { "relay batches" } else { "direct" };
    let keys = if secrets { "secrets" } else { "no secrets" };
    let phase = Phase::from_hub_count(&format!("hub → {} ({how}, {keys})", lean.name()), &count);
    hub.stop().await?;
    Ok(phase)
}

/// Registers a relay at `/relay` on every destination of the sink (it echoes the challenge)
/// and waits until the hub has verified them all.
async fn register_relays(hub: &str, lean: &LeanSink, subscribers: u64) -> anyhow::Result<()> {
    let client = driver::client();
    for addr in lean.addrs() {
        let form = [
            ("hub.mode", "relay".to_owned()),
            ("hub.callback", format!("http://{addr}/relay")),
            ("hub.secret", RELAY_SECRET.to_owned()),
        ];
        let r = client.post(hub).form(&form).send().await?;
        if r.status() != 202 {
            bail!(
                "relay registration answered {}: {}",
                r.status(),
                r.text().await?
            );
        }
    }
    let want = subscribers + lean.addrs().len() as u64;
    let until = Instant::now() + Duration::from_secs(30);
    while counter(hub, "hubcast_verifications_total{result=\"verified\"}").await? < want {
        if Instant::now() > until {
            bail!("the relays were not all verified within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One series of the hub's `/metrics`.
pub(crate) async fn counter(hub: &str, series: &str) -> anyhow::Result<u64> {
    let text = driver::client()
        .get(format!("{hub}metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .with_context(|| format!("{series} is not in the hub's metrics"))
}

/// A hub's event log lead, from `/metrics`.
async fn lead(hub: &str) -> anyhow::Result<u64> {
    counter(hub, "hubcast_event_log_lead ").await
}

/// Hub A takes the events, then hub B follows A from the start: both rates.
pub async fn firehose(o: &Options, r: &mut Report) -> anyhow::Result<(Phase, Phase)> {
    let topo = Topology {
        topics: o.topics.unwrap_or(100),
        subs_per_topic: 0,
        destinations: 1,
        events: o.events.unwrap_or(200),
        payload: o.payload.unwrap_or(1024),
    };
    let total = (topo.topics * topo.events) as u64;
    let topics = TopicServer::start(topo.topics).await?;
    let dir_a = tempfile::tempdir()?;
    let a_settings = HubSettings {
        extra: format!(
            "[[peers]]\nname = \"b\"\ntoken = \"{PEER_TOKEN}\"\ntopics = [\"http://127.0.0.1\"]\n"
        ),
        ..o.settings()
    };
    let a = HubProcess::start(&o.hub_bin()?, dir_a.path(), &a_settings).await?;
    let start = Instant::now();
    let published = Arc::new(Published::new(topo.topics));
    driver::publish(
        &a.url,
        &topo,
        &topics,
        crate::driver::PingKind::Fat,
        0..topo.events,
        Pace::default(),
        &published,
    )
    .await?;
    let until = Instant::now() + o.limit();
    while lead(&a.url).await? < total {
        if Instant::now() > until {
            bail!("hub A did not take {total} events in time");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let origin_seconds = start.elapsed().as_secs_f64();
    let dir_b = tempfile::tempdir()?;
    let b_settings = HubSettings {
        extra: format!(
            "[relay]\nheartbeat = \"100ms\"\n[[upstreams]]\nurl = \"{}\"\ntoken = \"{PEER_TOKEN}\"\n",
            a.url
        ),
        ..o.settings()
    };
    let b = HubProcess::start(&o.hub_bin()?, dir_b.path(), &b_settings).await?;
    // Timed from B answering (its process start and store opening are not the stream's), on
    // the events it takes from then on.
    let start = Instant::now();
    let before = counter(&b.url, "hubcast_upstream_cursor{upstream=")
        .await
        .unwrap_or(0);
    let bar = driver::progress(total, "following");
    let mut taken;
    loop {
        taken = counter(&b.url, "hubcast_upstream_cursor{upstream=")
            .await
            .unwrap_or(0);
        bar.set_position(taken);
        if taken >= total {
            break;
        }
        if Instant::now() > until {
            bail!(
                "hub B took {taken} of {total} events in time; its log ends:\n{}",
                crate::scenarios::hub_log_tail(dir_b.path())
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let follow_seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let b_lead = lead(&b.url).await?;
    if b_lead != total {
        bail!("hub B's log holds {b_lead} events, not {total}");
    }
    b.stop().await?;
    a.stop().await?;
    let rate = Phase::counted;
    let origin = rate(
        format!("hub A takes {total} fat pings of {} B", topo.payload),
        total,
        origin_seconds,
    );
    let follow = rate(
        format!("hub B follows A: {total} events into its log ({before} before timing)"),
        total - before,
        follow_seconds,
    );
    r.figure("firehose_events_per_second", follow.per_second);
    r.figure("origin_events_per_second", origin.per_second);
    r.figure(
        "firehose_to_origin_ratio",
        follow.per_second / origin.per_second,
    );
    Ok((origin, follow))
}
