//! The multicast scenario: one sender hub, three receiver hubs (`--receivers`) on loopback
//! multicast.
//!
//! For each payload (200 B short messages and 4 KiB posts, or `--payload`), hub A takes
//! `--topics` × `--events` fat pings (default 100 × 200) as fast as it can while three hubs
//! receive its stream:
//! - over HTTP (`[[upstreams]]` with the default transport): the bytes A sends per event to the
//!   three, from its own `hubcast_peer_bytes_sent_total`;
//! - by multicast at 0%, 1% and 5% loss (an nftables rule dropping that share of the group's
//!   datagrams on loopback; without root or `nft` only 0% runs, and the report says why):
//!   events per second entering every receiver's log (from the first ping to the slowest
//!   receiver's cursor reaching A's lead), repair latency p50/p99 over the three receivers'
//!   histograms, and the bytes A sends per event (`hubcast_multicast_bytes_sent_total`,
//!   heartbeats included).
//!
//! Each receiver's log must end with exactly A's events (its lead equals A's), or the phase
//! fails. The rate is bounded by A's own intake of fat pings, reported beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::driver::{self, Pace, Published, TopicServer, Topology};
use crate::hubproc::{HubProcess, HubSettings};
use crate::relay::counter;
use crate::report::{Phase, Report};
use crate::scenarios::Options;

const KEY: &str = "loadtest-multicast-group-key";
/// Upper bounds (s) of the receivers' repair histogram, as the hub renders them.
const SERIES: &str = "hubcast_upstream_multicast_repair_seconds_bucket";

pub async fn run(o: &Options, r: &mut Report) -> anyhow::Result<Vec<Phase>> {
    let losses = match loss_possible() {
        Ok(()) => vec![0, 1, 5],
        Err(why) => {
            r.label("loss", &format!("only 0% measured: {why}"));
            vec![0]
        }
    };
    let payloads = match o.payload {
        Some(p) => vec![p],
        None => vec![200, 4096],
    };
    let mut phases = Vec::new();
    let rate = o.rate.unwrap_or(50_000.0);
    for &payload in &payloads {
        for &loss in &losses {
            phases.push(lean_phase(o, payload, loss, rate, r).await?);
        }
    }
    for payload in payloads {
        let topo = Topology {
            topics: o.topics.unwrap_or(100),
            subs_per_topic: 0,
            destinations: 1,
            events: o.events.unwrap_or(200),
            payload,
        };
        let http = phase(o, &topo, None, r).await?;
        let http_bytes = http.1;
        phases.push(http.0);
        for &loss in &losses {
            let (p, bytes) = phase(o, &topo, Some(loss), r).await?;
            r.figure(
                &format!("multicast_{payload}b_{loss}pct_bytes_per_event_vs_http"),
                bytes / http_bytes,
            );
            phases.push(p);
        }
    }
    Ok(phases)
}

/// The lean sender's `--events` × `--topics` × 5 events (default 100,000) of `payload` bytes
/// at `rate` events/s to the receiver hubs at `loss` percent: events per second into every
/// receiver's log, from the first datagram to the slowest receiver's cursor reaching the last.
async fn lean_phase(
    o: &Options,
    payload: usize,
    loss: u32,
    rate: f64,
    r: &mut Report,
) -> anyhow::Result<Phase> {
    let total = (o.topics.unwrap_or(100) * o.events.unwrap_or(200) * 5) as u64;
    let group = group()?;
    let addr: std::net::SocketAddrV4 = group.parse()?;
    let sender = crate::lean_sender::LeanSender::start(
        total,
        payload,
        o.topics.unwrap_or(100),
        KEY.as_bytes(),
        addr,
    )
    .await?;
    let receivers =
        Receivers::start(o, &sender.url, Some(&multicast_section(&group, false))).await?;
    let until = Instant::now() + o.limit();
    receivers.wait_multicast(until).await?;
    let kernel = match loss {
        0 => None,
        l => Some(KernelLoss::new(&group, l).map_err(anyhow::Error::msg)?),
    };
    let start = Instant::now();
    sender.send_all(rate).await?;
    let send_seconds = start.elapsed().as_secs_f64();
    receivers.wait_cursors(total, until).await?;
    let seconds = start.elapsed().as_secs_f64();
    drop(kernel);
    sender.stop();
    let tally = receivers.tally(total).await?;
    receivers.stop().await?;
    let (buckets, fallbacks) = (tally.buckets, tally.fallbacks);
    let name = format!("lean_{payload}b_{loss}pct");
    let per_second = total as f64 / seconds;
    r.figure(&format!("{name}_events_per_second"), per_second);
    r.figure(
        &format!("{name}_offered_per_second"),
        total as f64 / send_seconds,
    );
    r.figure(&format!("{name}_fallbacks"), fallbacks);
    if let (Some(p50), Some(p99)) = (quantile(&buckets, 0.5), quantile(&buckets, 0.99)) {
        r.figure(&format!("{name}_repair_p50_ms"), p50 * 1000.0);
        r.figure(&format!("{name}_repair_p99_ms"), p99 * 1000.0);
    }
    Ok(Phase::counted(
        format!(
            "lean sender at {rate}/s → {} receivers: {total} events of {payload} B at {loss}% loss",
            o.receivers
        ),
        total,
        seconds,
    ))
}

/// One run: HTTP receivers (`loss` None) or multicast ones at `loss` percent. The phase and
/// the bytes A sent per event.
async fn phase(
    o: &Options,
    topo: &Topology,
    loss: Option<u32>,
    r: &mut Report,
) -> anyhow::Result<(Phase, f64)> {
    let total = (topo.topics * topo.events) as u64;
    let group = group()?;
    let topics = TopicServer::start(topo.topics).await?;
    let mut peers = String::new();
    for i in 0..o.receivers {
        peers.push_str(&format!(
            "[[peers]]\nname = \"r{i}\"\ntoken = \"{}\"\ntopics = [\"http://127.0.0.1\"]\n",
            token(i)
        ));
    }
    let dir_a = tempfile::tempdir()?;
    let a = HubProcess::start(
        &o.hub_bin()?,
        dir_a.path(),
        &HubSettings {
            extra: format!("{peers}{}", multicast_section(&group, loss.is_some())),
            ..o.settings()
        },
    )
    .await?;
    let section = loss.map(|_| multicast_section(&group, false));
    let receivers = Receivers::start(o, &a.url, section.as_deref()).await?;
    let until = Instant::now() + o.limit();
    if loss.is_some() {
        receivers.wait_multicast(until).await?;
    }
    let kernel = match loss {
        Some(l) if l > 0 => Some(KernelLoss::new(&group, l).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let start = Instant::now();
    let published = Arc::new(Published::new(topo.topics));
    driver::publish(
        &a.url,
        topo,
        &topics,
        driver::PingKind::Fat,
        0..topo.events,
        Pace::default(),
        &published,
    )
    .await?;
    while counter(&a.url, "hubcast_event_log_lead ").await? < total {
        if Instant::now() > until {
            bail!("hub A did not take {total} events in time");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let origin_seconds = start.elapsed().as_secs_f64();
    receivers.wait_cursors(total, until).await?;
    let seconds = start.elapsed().as_secs_f64();
    let dropped = kernel.as_ref().map_or(0, KernelLoss::dropped);
    drop(kernel);
    let tally = receivers.tally(total).await?;
    let a_text = metrics_text(&a.url).await?;
    let sent = match loss {
        Some(_) => sum(&a_text, "hubcast_multicast_bytes_sent_total{"),
        None => sum(&a_text, "hubcast_peer_bytes_sent_total{"),
    };
    let bytes_per_event = sent / total as f64;
    receivers.stop().await?;
    let (buckets, repaired) = (tally.buckets, tally.repaired);
    a.stop().await?;
    let name = match loss {
        Some(l) => format!("multicast_{}b_{l}pct", topo.payload),
        None => format!("http_{}b", topo.payload),
    };
    let per_second = total as f64 / seconds;
    r.figure(&format!("{name}_events_per_second"), per_second);
    r.figure(
        &format!("{name}_origin_events_per_second"),
        total as f64 / origin_seconds,
    );
    r.figure(&format!("{name}_bytes_per_event"), bytes_per_event);
    if let Some(l) = loss {
        r.figure(&format!("{name}_events_repaired"), repaired);
        if l > 0 {
            r.figure(&format!("{name}_datagrams_dropped"), dropped as f64);
        }
        if let (Some(p50), Some(p99)) = (quantile(&buckets, 0.5), quantile(&buckets, 0.99)) {
            r.figure(&format!("{name}_repair_p50_ms"), p50 * 1000.0);
            r.figure(&format!("{name}_repair_p99_ms"), p99 * 1000.0);
        }
    }
    let how = match loss {
        Some(l) => format!("by multicast at {l}% loss"),
        None => "over HTTP".to_owned(),
    };
    let phase = Phase::counted(
        format!(
            "{} receivers take {total} events of {} B {how}",
            o.receivers, topo.payload
        ),
        total,
        seconds,
    );
    Ok((phase, bytes_per_event))
}

/// The `[multicast]` section of the sender (`send`) or a receiver.
fn multicast_section(group: &str, send: bool) -> String {
    format!(
        "[multicast]\nsend = {send}\ngroup = \"{group}\"\ninterface = \"127.0.0.1\"\n\
         key = \"{KEY}\"\nrate = \"400MiB\"\n"
    )
}

/// The receiver hubs of one phase (`--receivers`, default 3).
struct Receivers {
    hubs: Vec<HubProcess>,
    dirs: Vec<tempfile::TempDir>,
}

/// What the receivers report once they hold every event.
struct Tally {
    /// Their repair histograms, merged: (upper bound in seconds, cumulative count).
    buckets: Vec<(f64, f64)>,
    repaired: f64,
    fallbacks: f64,
}

impl Receivers {
    /// Receivers of `upstream`, by multicast with `section` (`[multicast]`), else over HTTP.
    async fn start(
        o: &Options,
        upstream: &str,
        section: Option<&str>,
    ) -> anyhow::Result<Receivers> {
        let transport = if section.is_some() {
            "multicast"
        } else {
            "http"
        };
        let mut r = Receivers {
            hubs: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 0..o.receivers {
            let dir = tempfile::tempdir()?;
            let extra = format!(
                "[relay]\nheartbeat = \"100ms\"\n[[upstreams]]\nurl = \"{upstream}\"\n\
                 token = \"{}\"\ntransport = \"{transport}\"\n{}",
                token(i),
                section.unwrap_or_default()
            );
            let settings = HubSettings {
                extra,
                ..o.settings()
            };
            r.hubs
                .push(HubProcess::start(&o.hub_bin()?, dir.path(), &settings).await?);
            r.dirs.push(dir);
        }
        Ok(r)
    }

    async fn wait_multicast(&self, until: Instant) -> anyhow::Result<()> {
        for rx in &self.hubs {
            while !receiving_by_multicast(&rx.url).await {
                if Instant::now() > until {
                    bail!("a receiver did not switch to multicast in time");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Waits until every receiver's cursor reaches `total`.
    async fn wait_cursors(&self, total: u64, until: Instant) -> anyhow::Result<()> {
        for (i, rx) in self.hubs.iter().enumerate() {
            loop {
                let cursor = counter(&rx.url, "hubcast_upstream_cursor{")
                    .await
                    .unwrap_or(0);
                if cursor >= total {
                    break;
                }
                if Instant::now() > until {
                    bail!(
                        "receiver {i} took {cursor} of {total} events in time; its log ends:\n{}",
                        crate::scenarios::hub_log_tail(self.dirs[i].path())
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// Checks that each log holds exactly `total` events, and reads the repair figures.
    async fn tally(&self, total: u64) -> anyhow::Result<Tally> {
        let mut t = Tally {
            buckets: Vec::new(),
            repaired: 0.0,
            fallbacks: 0.0,
        };
        for (i, rx) in self.hubs.iter().enumerate() {
            let lead = counter(&rx.url, "hubcast_event_log_lead ").await?;
            if lead != total {
                bail!("receiver {i}'s log holds {lead} events, not {total}");
            }
            let text = metrics_text(&rx.url).await?;
            t.repaired += sum(&text, "hubcast_upstream_multicast_repaired_total{");
            t.fallbacks += sum(&text, "hubcast_upstream_multicast_fallbacks_total{");
            for (le, n) in histogram(&text) {
                match t.buckets.iter_mut().find(|b| b.0 == le) {
                    Some(b) => b.1 += n,
                    None => t.buckets.push((le, n)),
                }
            }
        }
        Ok(t)
    }

    async fn stop(self) -> anyhow::Result<()> {
        for rx in self.hubs {
            rx.stop().await?;
        }
        Ok(())
    }
}

fn token(i: usize) -> String {
    format!("loadtest-receiver-token-{i}-0123")
}

/// A group of its own: an address in 239.255.78.0/24 and a free port.
fn group() -> anyhow::Result<String> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // The port's low bits pick the address (different runs, different ports).
    Ok(format!("239.255.78.{}:{port}", 1 + port % 250))
}

async fn receiving_by_multicast(url: &str) -> bool {
    let Ok(resp) = driver::client()
        .get(format!("{url}admin/api/relay"))
        .send()
        .await
    else {
        return false;
    };
    let Ok(body) = resp.bytes().await else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return false;
    };
    v["upstreams"][0]["multicast"]["mode"] == "multicast"
}

async fn metrics_text(hub: &str) -> anyhow::Result<String> {
    Ok(driver::client()
        .get(format!("{hub}metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// The sum of a series over its labels.
fn sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// The repair histogram's cumulative buckets: (upper bound in seconds, count).
fn histogram(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| l.starts_with(SERIES))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bound below which `q` of the repairs fell.
fn quantile(cumulative: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut b = cumulative.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total == 0.0 {
        return None;
    }
    b.iter().find(|(_, n)| *n >= total * q).map(|(le, _)| *le)
}

fn loss_possible() -> Result<(), String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse::<u32>().ok());
    if uid != Some(0) {
        return Err("not running as root (nftables makes the loss)".into());
    }
    std::process::Command::new(nft())
        .arg("--version")
        .output()
        .map(|_| ())
        .map_err(|e| format!("nft is not available ({e})"))
}

fn nft() -> &'static str {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nft").is_file()));
    if on_path { "nft" } else { "/usr/sbin/nft" }
}

/// An nftables table dropping `percent`% of the group's datagrams leaving on loopback;
/// removed on drop.
struct KernelLoss {
    table: String,
}

impl KernelLoss {
    fn new(group: &str, percent: u32) -> Result<KernelLoss, String> {
        let (addr, port) = group.split_once(':').ok_or("group:port")?;
        let table = format!("hubcast_loadtest_loss_{port}");
        let rules = format!(
            "table ip {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  oifname \"lo\" ip daddr {addr} udp dport {port} numgen random mod 100 < {percent} counter drop\n }}\n}}\n"
        );
        let mut child = std::process::Command::new(nft())
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .ok_or("nft's input")?
            .write_all(rules.as_bytes())
            .map_err(|e| e.to_string())?;
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("nft refused the loss rule ({status})"));
        }
        Ok(KernelLoss { table })
    }

    fn dropped(&self) -> u64 {
        std::process::Command::new(nft())
            .args(["list", "table", "ip", &self.table])
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.split("packets ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for KernelLoss {
    fn drop(&mut self) {
        let _ = std::process::Command::new(nft())
            .args(["delete", "table", "ip", &self.table])
            .status();
    }
}
