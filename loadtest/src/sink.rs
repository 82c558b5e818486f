//! The sink: subscriber callbacks on many loopback addresses, one listener per simulated
//! destination server. It echoes verification challenges, checks every delivery's signature,
//! counts deliveries per (callback, event), records publish→delivery latency (the publish time
//! travels in the content) and a delivery timeline. Each destination can be made slow, failing
//! (500), hanging (accepts and never answers) or refusing (its listener closes).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::histogram::Histogram;
use crate::payload;

/// Timeline resolution, and how much of it is kept.
pub const TICK: Duration = Duration::from_millis(100);
const TICKS: usize = 36_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal = 0,
    /// Answers after [`SLOW`].
    Slow = 1,
    /// Answers 500.
    Failing = 2,
    /// Accepts the request and never answers.
    Hang = 3,
    /// Stops listening: connections are refused.
    Refuse = 4,
}

/// How long a slow destination takes to answer.
pub const SLOW: Duration = Duration::from_millis(200);

impl Behaviour {
    fn from_u8(v: u8) -> Behaviour {
        match v {
            1 => Behaviour::Slow,
            2 => Behaviour::Failing,
            3 => Behaviour::Hang,
            4 => Behaviour::Refuse,
            _ => Behaviour::Normal,
        }
    }
}

/// What the sink saw. `subscribers × events` counters, one per (callback, event of its topic).
pub struct SinkStats {
    epoch: Instant,
    events: usize,
    seen: Vec<AtomicU8>,
    /// Per subscriber: 1 + the highest event received (0: none yet).
    highest: Vec<AtomicU32>,
    /// 2xx answers given to deliveries.
    pub deliveries: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub unknown: AtomicU64,
    pub verifications: AtomicU64,
    pub latency: Histogram,
    timeline: Vec<AtomicU64>,
    /// µs since `epoch` of the last counted delivery.
    pub last_delivery_us: AtomicU64,
}

impl SinkStats {
    pub fn new(subscribers: usize, events: usize) -> SinkStats {
        SinkStats {
            epoch: Instant::now(),
            events,
            seen: (0..subscribers * events)
                .map(|_| AtomicU8::new(0))
                .collect(),
            highest: (0..subscribers).map(|_| AtomicU32::new(0)).collect(),
            deliveries: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
            latency: Histogram::default(),
            timeline: (0..TICKS).map(|_| AtomicU64::new(0)).collect(),
            last_delivery_us: AtomicU64::new(0),
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Counts a delivery. Returns by how much it advanced the subscriber's coverage: the events
    /// up to the highest one received, each either received or superseded by a later one.
    fn record(&self, subscriber: usize, event: usize, sent_us: u64) -> u64 {
        let slot = (event < self.events)
            .then(|| self.seen.get(subscriber * self.events + event))
            .flatten();
        let Some(slot) = slot else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        let before = slot.fetch_add(1, Ordering::Relaxed);
        if before == u8::MAX {
            slot.store(u8::MAX, Ordering::Relaxed);
        }
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.latency.record(now_us().saturating_sub(sent_us));
        let since = self.epoch.elapsed();
        let tick = (since.as_millis() / TICK.as_millis()) as usize;
        if let Some(t) = self.timeline.get(tick) {
            t.fetch_add(1, Ordering::Relaxed);
        }
        self.last_delivery_us
            .fetch_max(since.as_micros() as u64, Ordering::Relaxed);
        let reached = event as u32 + 1;
        let before = self.highest[subscriber].fetch_max(reached, Ordering::Relaxed);
        u64::from(reached.saturating_sub(before))
    }

    /// Deliveries per tick from the first non-empty tick to the last.
    pub fn timeline(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .timeline
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .skip_while(|n| *n == 0)
            .collect();
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    }

    /// For the callbacks in `subscribers`: (received at least once, never received but a later
    /// event of the same topic was (superseded by coalescing), lost, received more than once).
    pub fn tally(&self, subscribers: impl Iterator<Item = usize>) -> Tally {
        self.tally_upto(subscribers.map(|s| (s, self.events)))
    }

    /// [`SinkStats::tally`] over the first `n` events of each `(subscriber, n)`: the events
    /// published to its topic when publishing stopped early.
    pub fn tally_upto(&self, rows: impl Iterator<Item = (usize, usize)>) -> Tally {
        let mut t = Tally::default();
        for (s, n) in rows {
            let row = &self.seen[s * self.events..s * self.events + n.min(self.events)];
            let mut later_seen = false;
            for c in row.iter().rev() {
                let c = c.load(Ordering::Relaxed);
                match c {
                    0 if later_seen => t.superseded += 1,
                    0 => t.lost += 1,
                    n => {
                        t.received += 1;
                        t.duplicates += u64::from(n - 1);
                        later_seen = true;
                    }
                }
            }
        }
        t
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub received: u64,
    pub superseded: u64,
    pub lost: u64,
    pub duplicates: u64,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One destination server.
pub struct Destination {
    pub addr: SocketAddr,
    /// Sum over this destination's subscribers of the events received or superseded: a cheap
    /// completion measure (the full [`SinkStats::tally`] scans every counter).
    pub covered: AtomicU64,
    /// µs since the stats' epoch of this destination's last counted delivery.
    pub last_us: AtomicU64,
    behaviour: AtomicU8,
    refuse: CancellationToken,
}

impl Destination {
    pub fn set(&self, b: Behaviour) {
        self.behaviour.store(b as u8, Ordering::Relaxed);
        if b == Behaviour::Refuse {
            self.refuse.cancel();
        }
    }

    fn behaviour(&self) -> Behaviour {
        Behaviour::from_u8(self.behaviour.load(Ordering::Relaxed))
    }
}

pub struct Sink {
    pub destinations: Vec<Arc<Destination>>,
    pub stats: Arc<SinkStats>,
    shutdown: CancellationToken,
}

impl Sink {
    /// Listens on each address (port 0) and serves until dropped.
    pub async fn start(ips: &[IpAddr], stats: Arc<SinkStats>) -> std::io::Result<Sink> {
        let shutdown = CancellationToken::new();
        let mut destinations = Vec::with_capacity(ips.len());
        for ip in ips {
            let listener = TcpListener::bind((*ip, 0)).await?;
            let dest = Arc::new(Destination {
                addr: listener.local_addr()?,
                covered: AtomicU64::new(0),
                last_us: AtomicU64::new(0),
                behaviour: AtomicU8::new(Behaviour::Normal as u8),
                refuse: shutdown.child_token(),
            });
            tokio::spawn(accept(listener, dest.clone(), stats.clone()));
            destinations.push(dest);
        }
        Ok(Sink {
            destinations,
            stats,
            shutdown,
        })
    }

    /// The callback URL of subscriber `i` at destination `d`.
    pub fn callback(&self, d: usize, i: usize) -> String {
        format!("http://{}/c/{i}", self.destinations[d].addr)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept(listener: TcpListener, dest: Arc<Destination>, stats: Arc<SinkStats>) {
    loop {
        let stream = tokio::select! {
            _ = dest.refuse.cancelled() => return, // the listener closes: refused from now on
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (dest, stats) = (dest.clone(), stats.clone());
        tokio::spawn(async move {
            let svc = service_fn(|req| {
                let (dest, stats) = (dest.clone(), stats.clone());
                async move { Ok::<_, hyper::Error>(handle(req, &dest, &stats).await) }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = dest.refuse.cancelled() => {}
            }
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    dest: &Destination,
    stats: &SinkStats,
) -> Response<Full<Bytes>> {
    if req.method() == Method::GET {
        let challenge = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "hub.challenge")
                .map(|(_, v)| v.into_owned())
        });
        stats.verifications.fetch_add(1, Ordering::Relaxed);
        return match challenge {
            Some(c) => reply(StatusCode::OK, c),
            None => reply(StatusCode::OK, ""), // a denial notice
        };
    }
    let subscriber: Option<usize> = req
        .uri()
        .path()
        .strip_prefix("/c/")
        .and_then(|s| s.parse().ok());
    let signature = req
        .headers()
        .get("x-hub-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, "");
    };
    match dest.behaviour() {
        Behaviour::Normal => {}
        Behaviour::Slow => tokio::time::sleep(SLOW).await,
        Behaviour::Failing => return reply(StatusCode::INTERNAL_SERVER_ERROR, ""),
        Behaviour::Hang | Behaviour::Refuse => std::future::pending::<()>().await,
    }
    let (Some(subscriber), Some((event, sent_us))) = (subscriber, payload::parse(&body)) else {
        stats.unknown.fetch_add(1, Ordering::Relaxed);
        return reply(StatusCode::OK, "");
    };
    let expected = payload::sign(subscriber, &body);
    if signature.as_deref() != Some(expected.as_str()) {
        stats.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return reply(StatusCode::FORBIDDEN, "bad signature");
    }
    let advanced = stats.record(subscriber, event, sent_us);
    dest.covered.fetch_add(advanced, Ordering::Relaxed);
    dest.last_us
        .fetch_max(stats.epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
    reply(StatusCode::OK, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_counts_received_and_superseded_events_once() {
        let stats = SinkStats::new(2, 3);
        assert_eq!(stats.record(0, 1, 0), 2, "event 0 is superseded by event 1");
        assert_eq!(
            stats.record(0, 0, 0),
            0,
            "an older event arriving late adds nothing"
        );
        assert_eq!(stats.record(0, 1, 0), 0, "nor does a duplicate");
        assert_eq!(stats.record(0, 2, 0), 1);
        assert_eq!(stats.record(1, 3, 0), 0, "an unknown event");
        let t = stats.tally(0..2);
        assert_eq!(
            (t.received, t.superseded, t.lost, t.duplicates),
            (3, 0, 3, 1)
        );
        assert_eq!(stats.unknown.load(Ordering::Relaxed), 1);
    }
}
