//! The driver: lays out subscribers over topics and destinations, subscribes them through the
//! hub, publishes events (fat pings, or light pings against its own topic server) and waits
//! for the sink to see them. Every loop is bounded in count and in time.
//!
//! The hub (actix-web) closes keep-alive connections idle for 5 s; the clients here drop theirs
//! after [`POOL_IDLE`], so a request never goes out on a connection the hub is closing. What is
//! safe to repeat is retried a bounded number of times: subscription requests and GETs on any
//! failure, a fat ping only when it failed while connecting (so it was certainly not sent).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
use crate::metrics::HubMetrics;
use crate::payload;
use crate::sink::{Sink, TICK, now_us};

/// Requests the driver keeps in flight against the hub.
const CONCURRENCY: usize = 64;
/// How long an idle pooled connection is kept: below the hub's 5 s keep-alive.
pub const POOL_IDLE: Duration = Duration::from_secs(2);
/// Attempts at a request that is safe to retry.
const ATTEMPTS: u32 = 4;

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
    client_for(CONCURRENCY)
}

/// A client keeping up to `connections` idle connections to a host.
pub fn client_for(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(POOL_IDLE)
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

/// Where the subscribers' callbacks are, and how their verifications are counted.
pub struct Callbacks<'a> {
    /// The callback URL of subscriber `i` at destination `d`: `url(d, i)`.
    pub url: &'a (dyn Fn(usize, usize) -> String + Sync),
    /// Verification requests the callbacks answered (the checking sink counts them); `None`
    /// (a lean sink): completion is judged by the hub's subscriber counts alone.
    pub verifications: Option<&'a AtomicU64>,
}

impl<'a> Callbacks<'a> {
    pub fn checking(sink: &'a Sink, url: &'a (dyn Fn(usize, usize) -> String + Sync)) -> Self {
        Callbacks {
            url,
            verifications: Some(&sink.stats.verifications),
        }
    }
}

/// Subscribes every subscriber (with its own secret) and waits until the hub counts them all.
/// Returns the time from the first request to the last verified subscription.
pub async fn subscribe_all(
    hub: &str,
    topo: &Topology,
    callbacks: &Callbacks<'_>,
    topics: &TopicServer,
    deadline: Duration,
) -> anyhow::Result<Duration> {
    subscribe_all_with(hub, topo, callbacks, topics, deadline, true).await
}

/// [`subscribe_all`], the subscribers with secrets or without.
pub async fn subscribe_all_with(
    hub: &str,
    topo: &Topology,
    callbacks: &Callbacks<'_>,
    topics: &TopicServer,
    deadline: Duration,
    secrets: bool,
) -> anyhow::Result<Duration> {
    let client = client();
    let n = topo.subscribers();
    let bar = progress(n as u64, "subscribing");
    let start = Instant::now();
    let verified = || {
        callbacks
            .verifications
            .map_or(0, |v| v.load(Ordering::Relaxed))
    };
    let verified_before = verified();
    let requests = futures_util::stream::iter(0..n).map(|i| {
        let client = &client;
        let mut form = vec![
            ("hub.mode", "subscribe".to_owned()),
            ("hub.topic", topics.url(topo.topic_of(i))),
            ("hub.callback", (callbacks.url)(topo.destination_of(i), i)),
        ];
        if secrets {
            form.push(("hub.secret", payload::secret(i)));
        }
        // Subscribing again is harmless: retried on any failure.
        async move {
            retrying("subscribe", || async {
                let r = client.post(hub).form(&form).send().await?;
                let status = r.status();
                if status != 202 {
                    bail!("subscribe answered {status}: {}", r.text().await?);
                }
                Ok(())
            })
            .await
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
    if callbacks.verifications.is_some() {
        bar.set_message("verifying");
        wait_for(
            deadline.saturating_sub(start.elapsed()),
            &bar,
            || verified() - verified_before,
            n as u64,
        )
        .await
        .context("verifications")?;
    }
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
    let text = retrying("topic report", || async {
        Ok(client
            .get(hub)
            .query(&[("hub.topic", topic)])
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    })
    .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("subscribers: "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("unexpected topic report {text:?}"))
}

/// Runs a request that is safe to repeat, up to [`ATTEMPTS`] times, 100 ms apart and more.
async fn retrying<T, F, Fut>(what: &str, f: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(_) if attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.context(format!("{what}: {ATTEMPTS} attempts failed"))),
        }
    }
}

/// Pings the hub accepted, per topic and in all.
pub struct Published {
    per_topic: Vec<AtomicU32>,
    total: AtomicU64,
}

impl Published {
    pub fn new(topics: usize) -> Published {
        Published {
            per_topic: (0..topics).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU64::new(0),
        }
    }

    fn accepted(&self, topic: usize) {
        self.per_topic[topic].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Events of `topic` the hub accepted (events 0 … n-1: a topic's events go out in order).
    pub fn of(&self, topic: usize) -> usize {
        self.per_topic[topic].load(Ordering::Relaxed) as usize
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// How pings are paced.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Pings per second; `None`: as fast as the hub takes them. When the hub takes them more
    /// slowly, the publisher catches up as fast as it can (the achieved rate is what it is).
    pub rate: Option<f64>,
    /// No ping is sent after this.
    pub until: Option<Instant>,
    /// Pings in flight at most (each on its own keep-alive connection).
    pub concurrency: usize,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            rate: None,
            until: None,
            concurrency: CONCURRENCY,
        }
    }
}

/// Publishes events `events` to every topic (event by event, topic by topic), counting
/// accepted pings in `published`.
pub async fn publish(
    hub: &str,
    topo: &Topology,
    topics: &TopicServer,
    kind: PingKind,
    events: std::ops::Range<usize>,
    pace: Pace,
    published: &Arc<Published>,
) -> anyhow::Result<()> {
    let concurrency = pace.concurrency.max(1);
    let client = client_for(concurrency);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tick = pace.rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    // A topic's next event is sent only after the hub accepted its previous one, so the hub
    // sees each topic's events in order, as from a real publisher; other topics' pings go on
    // meanwhile (up to `concurrency` in flight).
    let mut previous: Vec<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> =
        (0..topo.topics).map(|_| None).collect();
    'events: for e in events {
        for (t, previous) in previous.iter_mut().enumerate() {
            if let Some(tick) = &mut tick {
                tick.tick().await;
            }
            if pace.until.is_some_and(|u| Instant::now() >= u) {
                break 'events;
            }
            if let Some(p) = previous.take() {
                p.await.context("a publish task")??;
            }
            let permit = permits.clone().acquire_owned().await?;
            let body = payload::body(e, now_us(), topo.payload);
            let topic = topics.url(t);
            if kind == PingKind::Light {
                topics.set(t, body.clone());
            }
            let (client, hub, published) = (client.clone(), hub.to_owned(), published.clone());
            // Spawned, so each ping goes out now.
            *previous = Some(tokio::spawn(async move {
                let _permit = permit;
                let request = || match kind {
                    PingKind::Fat => client
                        .post(&hub)
                        .query(&[("hub.mode", "publish"), ("hub.url", topic.as_str())])
                        .header("content-type", payload::CONTENT_TYPE)
                        .bearer_auth(PUBLISHER_TOKEN)
                        .body(body.clone()),
                    PingKind::Light => client
                        .post(&hub)
                        .form(&[("hub.mode", "publish"), ("hub.url", topic.as_str())]),
                };
                let r = send_ping(request).await?;
                if r.status() != 202 {
                    bail!("publish answered {}: {}", r.status(), r.text().await?);
                }
                published.accepted(t);
                Ok(())
            }));
        }
    }
    for p in previous.into_iter().flatten() {
        p.await.context("a publish task")??;
    }
    Ok(())
}

/// Sends a ping; again only if it failed while connecting (it was certainly not sent: a ping
/// sent twice would be two events).
async fn send_ping(
    request: impl Fn() -> reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    let mut attempt = 1;
    loop {
        match request().send().await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_connect() && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("publish")),
        }
    }
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

/// How often the hub's /metrics is read while waiting for its deliveries.
const METRICS_POLL: Duration = Duration::from_millis(50);
/// With publishing over and nothing queued, deliveries unchanged this long: done.
const QUIET: Duration = Duration::from_secs(1);

/// Deliveries counted from the hub's own metrics (the lean sink counts nothing).
#[derive(Debug, Clone)]
pub struct HubCount {
    pub deliveries: u64,
    /// From `start` to the last delivery (interpolated between two reads of the counter).
    pub seconds: f64,
    /// Deliveries per [`TICK`] from the first one.
    pub timeline: Vec<u64>,
}

/// Polls the hub's delivered counter until it has grown by `target` since `before`, or until,
/// publishing over (`published`), the hub has nothing queued or pending and the counter has
/// not moved for [`QUIET`] (events coalesced into fewer deliveries), or `limit` passes.
pub async fn wait_for_hub_deliveries(
    metrics: &HubMetrics,
    before: u64,
    target: u64,
    start: Instant,
    published: &AtomicBool,
    limit: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<HubCount> {
    bar.set_length(target);
    let until = Instant::now() + limit;
    let mut samples: Vec<(Duration, u64)> = vec![(Duration::ZERO, 0)];
    let mut changed = Duration::ZERO;
    let seconds = loop {
        let s = metrics.scrape().await?;
        let now = start.elapsed();
        let n = s.delivered.saturating_sub(before);
        let (t0, n0) = *samples.last().expect("starts with one");
        samples.push((now, n));
        bar.set_position(n.min(target));
        if n != n0 {
            changed = now;
        }
        if n >= target {
            // Between the two reads, at the rate seen between them.
            let share = (target - n0) as f64 / (n - n0).max(1) as f64;
            break t0.as_secs_f64() + (now - t0).as_secs_f64() * share;
        }
        let idle = s.queued_jobs == 0 && s.pending_retries == 0;
        if published.load(Ordering::Relaxed) && idle && n > 0 && now - changed >= QUIET {
            break changed.as_secs_f64();
        }
        if Instant::now() >= until {
            bail!("the hub delivered {n} of {target} within {limit:?} (its /metrics: {s:?})");
        }
        tokio::time::sleep(METRICS_POLL).await;
    };
    let deliveries = samples.last().map_or(0, |s| s.1).min(target);
    Ok(HubCount {
        deliveries,
        seconds,
        timeline: timeline(&samples),
    })
}

/// Per-[`TICK`] increments of a sampled counter, from the first non-empty tick to the last.
fn timeline(samples: &[(Duration, u64)]) -> Vec<u64> {
    let Some(&(end, _)) = samples.last() else {
        return Vec::new();
    };
    let ticks = (end.as_millis() / TICK.as_millis()) as usize + 1;
    let mut out = Vec::with_capacity(ticks);
    let (mut i, mut last) = (0, 0);
    for k in 0..ticks {
        let tick_end = TICK * (k as u32 + 1);
        while i < samples.len() && samples[i].0 <= tick_end {
            i += 1;
        }
        let count = if i == 0 { 0 } else { samples[i - 1].1 };
        out.push(count.saturating_sub(last));
        last = count;
    }
    let first = out.iter().position(|n| *n > 0).unwrap_or(out.len());
    out.drain(..first);
    while out.last() == Some(&0) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_from_samples() {
        let ms = Duration::from_millis;
        let s = [
            (ms(0), 0),
            (ms(50), 0),
            (ms(150), 10),
            (ms(250), 30),
            (ms(260), 35),
        ];
        assert_eq!(timeline(&s), vec![10, 25]);
    }
}
