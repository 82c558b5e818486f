//! The driver: lays out subscribers over topics and destinations, subscribes them through the
//! hub, publishes events (fat pings, or light pings against its own topic server) and waits
//! for the sink to see them. Every loop is bounded in count and in time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;

use crate::hubproc::PUBLISHER_TOKEN;
use crate::payload;
use crate::sink::{Sink, now_us};

/// Requests the driver keeps in flight against the hub.
const CONCURRENCY: usize = 64;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Topology {
    pub topics: usize,
    pub subs_per_topic: usize,
    pub destinations: usize,
    /// Events published to each topic.
    pub events: usize,
    pub payload: usize,
}

impl Topology {
    pub fn subscribers(&self) -> usize {
        self.topics * self.subs_per_topic
    }
    pub fn topic_of(&self, subscriber: usize) -> usize {
        subscriber / self.subs_per_topic
    }
    pub fn destination_of(&self, subscriber: usize) -> usize {
        subscriber % self.destinations
    }
    /// Deliveries a complete run makes.
    pub fn expected(&self) -> u64 {
        (self.subscribers() * self.events) as u64
    }
}

/// Destination `d` listens on 127.0.0.(d+2).
pub fn destination_ips(n: usize) -> anyhow::Result<Vec<IpAddr>> {
    if n == 0 || n > 250 {
        bail!("destinations must be between 1 and 250 (one loopback address each)");
    }
    Ok((0..n)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d as u8 + 2)))
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum PingKind {
    /// The content in the ping (authenticated with a bearer token).
    Fat,
    /// `hub.mode=publish`; the hub fetches the topic from the driver's topic server.
    Light,
}

/// Serves each topic's current content for light pings.
pub struct TopicServer {
    pub addr: SocketAddr,
    content: Arc<Mutex<Vec<Bytes>>>,
}

impl TopicServer {
    pub async fn start(topics: usize) -> std::io::Result<TopicServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let content = Arc::new(Mutex::new(vec![Bytes::new(); topics]));
        let c = content.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = req
                            .uri()
                            .path()
                            .strip_prefix("/t/")
                            .and_then(|t| t.parse::<usize>().ok())
                            .and_then(|t| c.lock().unwrap().get(t).cloned());
                        async move {
                            let mut r = Response::new(Full::new(body.clone().unwrap_or_default()));
                            if body.is_none() {
                                *r.status_mut() = StatusCode::NOT_FOUND;
                            }
                            r.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static(payload::CONTENT_TYPE),
                            );
                            Ok::<_, hyper::Error>(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(TopicServer { addr, content })
    }

    pub fn url(&self, topic: usize) -> String {
        format!("http://{}/t/{topic}", self.addr)
    }

    fn set(&self, topic: usize, body: Bytes) {
        self.content.lock().unwrap()[topic] = body;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(CONCURRENCY)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("the HTTP client builds")
}

pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Subscribes every subscriber (with its own secret) and waits until the hub counts them all.
/// Returns the time from the first request to the last verified subscription.
pub async fn subscribe_all(
    hub: &str,
    topo: &Topology,
    sink: &Sink,
    topics: &TopicServer,
    deadline: Duration,
) -> anyhow::Result<Duration> {
    let client = client();
    let n = topo.subscribers();
    let bar = progress(n as u64, "subscribing");
    let start = Instant::now();
    let verified_before = sink
        .stats
        .verifications
        .load(std::sync::atomic::Ordering::Relaxed);
    let requests = futures_util::stream::iter(0..n).map(|i| {
        let client = &client;
        let form = [
            ("hub.mode", "subscribe".to_owned()),
            ("hub.topic", topics.url(topo.topic_of(i))),
            ("hub.callback", sink.callback(topo.destination_of(i), i)),
            ("hub.secret", payload::secret(i)),
        ];
        async move {
            let r = client.post(hub).form(&form).send().await?;
            if r.status() != 202 {
                bail!("subscribe answered {}: {}", r.status(), r.text().await?);
            }
            Ok(())
        }
    });
    let mut requests = requests.buffer_unordered(CONCURRENCY);
    while let Some(r) = requests.next().await {
        r?;
        bar.inc(1);
        if start.elapsed() > deadline {
            bail!("subscribing took longer than {deadline:?}");
        }
    }
    bar.set_message("verifying");
    wait_for(
        deadline.saturating_sub(start.elapsed()),
        &bar,
        || {
            sink.stats
                .verifications
                .load(std::sync::atomic::Ordering::Relaxed)
                - verified_before
        },
        n as u64,
    )
    .await
    .context("verifications")?;
    // The hub commits a subscription right after the echo: confirm its counts.
    for t in 0..topo.topics {
        let until = Instant::now() + Duration::from_secs(30);
        while subscriber_count(&client, hub, &topics.url(t)).await? < topo.subs_per_topic as u64 {
            if Instant::now() > until {
                bail!(
                    "topic {t} never reached {} subscribers",
                    topo.subs_per_topic
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bar.finish_and_clear();
    Ok(start.elapsed())
}

async fn subscriber_count(client: &reqwest::Client, hub: &str, topic: &str) -> anyhow::Result<u64> {
    let text = client
        .get(hub)
        .query(&[("hub.topic", topic)])
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("subscribers: "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("unexpected topic report {text:?}"))
}

/// Publishes event `event` to every topic. With `rate`, pings are paced at that many per
/// second; otherwise sent as fast as the hub takes them.
pub async fn publish(
    hub: &str,
    topo: &Topology,
    topics: &TopicServer,
    kind: PingKind,
    events: std::ops::Range<usize>,
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let client = client();
    let mut tick = rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    // One round per event: a topic's next event is sent only after the hub accepted the
    // previous one, so the hub sees each topic's events in order, as from a real publisher.
    for e in events {
        // Spawned, so each ping goes out now, not when the round is collected.
        let mut in_flight = tokio::task::JoinSet::new();
        for t in 0..topo.topics {
            if let Some(tick) = &mut tick {
                tick.tick().await;
            }
            while in_flight.len() >= CONCURRENCY {
                if let Some(r) = in_flight.join_next().await {
                    r??;
                }
            }
            let body = payload::body(e, now_us(), topo.payload);
            let topic = topics.url(t);
            let request = match kind {
                PingKind::Fat => client
                    .post(hub)
                    .query(&[("hub.mode", "publish"), ("hub.url", topic.as_str())])
                    .header("content-type", payload::CONTENT_TYPE)
                    .bearer_auth(PUBLISHER_TOKEN)
                    .body(body),
                PingKind::Light => {
                    topics.set(t, body);
                    client
                        .post(hub)
                        .form(&[("hub.mode", "publish"), ("hub.url", topic.as_str())])
                }
            };
            in_flight.spawn(async move {
                let r = request.send().await?;
                if r.status() != 202 {
                    bail!("publish answered {}: {}", r.status(), r.text().await?);
                }
                Ok(())
            });
        }
        while let Some(r) = in_flight.join_next().await {
            r??;
        }
    }
    Ok(())
}

/// Polls `value` until it reaches `target` or `limit` passes; shows it on `bar`.
pub async fn wait_for(
    limit: Duration,
    bar: &ProgressBar,
    value: impl Fn() -> u64,
    target: u64,
) -> anyhow::Result<()> {
    bar.set_length(target);
    let until = Instant::now() + limit;
    loop {
        let v = value();
        bar.set_position(v.min(target));
        if v >= target {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("reached {v} of {target} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
