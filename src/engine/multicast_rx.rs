//! A `[[upstreams]]` entry received by IP multicast (`transport = "multicast"`): the group is
//! joined on the configured interface; datagrams are checked (tag, then origin) and go into a
//! reorder window ([`crate::multicast::reorder`]); events are taken into this hub's log in
//! sequence order, with the cursor, exactly once, as the HTTP follower takes them. Gaps are
//! repaired through the upstream's `GET /relay/events` (adjacent ones in one request, a few at
//! once). The receiver starts on the upstream's HTTP stream, and goes back to it when it falls
//! further behind than its window or the group falls silent; once the stream has caught up and
//! datagrams are flowing, it switches to multicast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::client::classify;
use super::taker::Taker;
use super::upstream::{self, Ended, Follow, Item, SessionError, Upstream};
use crate::config::multicast::UpstreamMulticast;
use crate::multicast::datagram::{self, DatagramError, MAX_DATAGRAM};
use crate::multicast::reorder::{Reorder, ReorderConfig, Taken};
use crate::relay::wire::{Beat, EventLine, MEDIA_TYPE};

/// Repair requests in flight at once.
const REPAIRS_IN_FLIGHT: usize = 8;
/// Pages one repair reads at most (each up to the upstream's `relay.max_range` events).
const REPAIR_PAGES: usize = 16;
/// Bytes of answers one repair reads at most (the rest of its range is asked for again).
const REPAIR_BYTES: usize = 32 << 20;
/// Longest a repair request may take (a hung answer would keep its range asked for).
const REPAIR_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the window may hold events behind a gap without its cursor moving before the
/// receiver follows over HTTP instead (whatever holds it up, the receiver does not stall).
const STUCK: Duration = Duration::from_secs(10);
/// Datagrams read in one go before the events they completed are taken.
const DRAIN: usize = 512;
/// Upper bounds (ms) of the repair latency histogram's buckets.
pub const LATENCY_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// What a multicast receiver saw, for operators.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiverCounts {
    pub group: String,
    /// `joining`, `http` (catching up, or the group is silent) or `multicast`.
    pub mode: &'static str,
    /// The receive buffer the kernel granted (bytes).
    pub receive_buffer: usize,
    pub datagrams: u64,
    pub bad_tags: u64,
    pub unknown_origin: u64,
    pub malformed: u64,
    /// Datagrams inconsistent with what was held, or records that did not decode (repaired).
    pub refused: u64,
    pub duplicates: u64,
    /// Datagrams past the window (the receiver was too far behind).
    pub beyond_window: u64,
    pub gaps: u64,
    pub events_repaired: u64,
    pub repair_requests: u64,
    pub repair_errors: u64,
    /// Switches to the HTTP stream (too far behind, or the group silent).
    pub fallbacks: u64,
    pub events_by_multicast: u64,
    /// Repairs by latency (from the gap noticed to it filled): counts per bucket of
    /// [`LATENCY_BUCKETS_MS`], then above the last.
    pub repair_latency_buckets: Vec<u64>,
    pub repair_latency_sum_ms: f64,
}

/// The receiving socket: bound to the group's address and port (only that group's datagrams,
/// several receivers on one machine), joined on `interface` only.
pub fn open(
    m: &UpstreamMulticast,
    buffer: usize,
) -> std::io::Result<(tokio::net::UdpSocket, usize)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_recv_buffer_size(buffer)?;
    s.bind(&SocketAddr::V4(m.group).into())?;
    s.join_multicast_v4(m.group.ip(), &m.interface)?;
    s.set_multicast_all_v4(false)?;
    let granted = s.recv_buffer_size().unwrap_or(0);
    s.set_nonblocking(true)?;
    Ok((tokio::net::UdpSocket::from_std(s.into())?, granted))
}

struct Receiver<'a> {
    follow: &'a Arc<Follow>,
    up: &'a Arc<Upstream>,
    m: UpstreamMulticast,
    socket: tokio::net::UdpSocket,
    window: Reorder,
    /// The upstream's id (from its HTTP answers): datagrams of other origins are dropped.
    origin: Option<String>,
    /// When the last datagram of the upstream arrived (ms of the hub's clock; 0: never).
    last_datagram_ms: Arc<AtomicU64>,
    counts: ReceiverCounts,
    buf: Vec<u8>,
    /// The upstream entry's `topics` (empty: all).
    wanted: Vec<crate::topic_prefix::TopicPrefix>,
}

enum Fallback {
    /// Further behind than the window.
    Behind,
    /// No datagram (not even a heartbeat) for a while.
    Silent,
    /// Events held behind a gap that was not filled for [`STUCK`].
    Stuck,
    /// Below the upstream's trail: reconciled by fetching, the cursor moved.
    Reconciled,
}

/// Receives `up` until the hub stops.
pub async fn run(follow: Arc<Follow>, up: Arc<Upstream>) {
    let m = up.cfg.multicast.clone().expect("a multicast upstream");
    let cfg = follow.shared.cfg.relay.multicast.clone();
    let stop = follow.shared.shutdown.clone();
    let mut pause = upstream::FIRST_PAUSE;
    let max = follow.shared.cfg.relay.reconnect_max;
    let (socket, granted) = loop {
        match open(&m, cfg.receive_buffer) {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(upstream = %up.cfg.name, group = %m.group, error = %e,
                    "joining the multicast group failed");
                up.note_error(&follow.shared, format!("joining {}: {e}", m.group));
                if !upstream::pause_before_reconnecting(&stop, &mut pause, max).await {
                    return;
                }
            }
        }
    };
    // The kernel reports twice what it keeps for data.
    tracing::info!(upstream = %up.cfg.name, group = %m.group, interface = %m.interface,
        asked = cfg.receive_buffer, granted, "joined the multicast group");
    if granted / 2 < cfg.receive_buffer {
        tracing::warn!(upstream = %up.cfg.name, asked = cfg.receive_buffer, granted,
            "the kernel granted a smaller receive buffer than multicast.receive_buffer \
             (net.core.rmem_max): bursts may be lost and repaired");
    }
    let window = Reorder::new(
        ReorderConfig {
            window: cfg.window,
            max_bytes: 256 << 20,
            repair_delay: cfg.repair_delay,
            retry: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            // Whatever the sender's own limit (at most 16 MiB), with the record's fields.
            max_record: (16 << 20) + 128 * 1024,
            merge_within: 8,
        },
        0,
    );
    let mut rx = Receiver {
        follow: &follow,
        up: &up,
        counts: ReceiverCounts {
            group: m.group.to_string(),
            mode: "http",
            receive_buffer: granted,
            repair_latency_buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1],
            ..Default::default()
        },
        m,
        socket,
        window,
        origin: None,
        last_datagram_ms: Arc::new(AtomicU64::new(0)),
        buf: vec![0u8; MAX_DATAGRAM + 1],
        wanted: up
            .cfg
            .topics
            .iter()
            .filter_map(|t| crate::topic_prefix::TopicPrefix::parse(t).ok())
            .collect(),
    };
    let mut pause = upstream::FIRST_PAUSE;
    loop {
        rx.publish();
        let caught_up = tokio::select! {
            r = rx.over_http() => r,
            _ = stop.cancelled() => return,
        };
        match caught_up {
            Ok(position) => {
                pause = upstream::FIRST_PAUSE;
                let now = Instant::now();
                rx.window.resume(position, now);
                rx.counts.mode = "multicast";
                rx.publish();
                up.update(|s| s.state = "streaming");
                tracing::info!(upstream = %up.cfg.name, position, "receiving by multicast");
                let r = tokio::select! {
                    r = rx.over_multicast() => r,
                    _ = stop.cancelled() => return,
                };
                rx.counts.mode = "http";
                // What was held is fetched over HTTP now: the memory goes.
                let cursor = rx.window.cursor();
                rx.window.reset(cursor, Instant::now());
                match r {
                    Ok(Fallback::Reconciled) => {}
                    Ok(why) => {
                        rx.counts.fallbacks += 1;
                        let why = match why {
                            Fallback::Behind => "further behind than multicast.window",
                            Fallback::Stuck => "a gap was not repaired in 10 s",
                            _ => "the group fell silent",
                        };
                        tracing::warn!(upstream = %up.cfg.name, why,
                            "following the upstream over HTTP until caught up");
                    }
                    Err(SessionError::Stopping) => return,
                    Err(e) => {
                        tracing::warn!(upstream = %up.cfg.name, error = %e, "multicast receiving failed");
                        up.note_error(&follow.shared, e.to_string());
                    }
                }
            }
            Err(SessionError::Stopping) => return,
            Err(e) => {
                tracing::warn!(upstream = %up.cfg.name, error = %e, retry_in = ?pause,
                    "following the upstream failed");
                up.note_error(&follow.shared, e.to_string());
                up.update(|s| s.state = "waiting");
                if !upstream::pause_before_reconnecting(&stop, &mut pause, max).await {
                    return;
                }
            }
        }
    }
}

/// A repair's answer to `from..=to`: the events of `from..=through`.
type Repaired = Result<(u64, u64, u64, Vec<(EventLine, Bytes)>), RepairError>;

#[derive(Debug, thiserror::Error)]
enum RepairError {
    #[error("below the upstream's trail ({1})")]
    Gone((u64, u64), u64),
    /// The range asked for, and why it failed.
    #[error("{1}")]
    Http((u64, u64), String),
}

impl Receiver<'_> {
    /// Publishes the counts to the upstream's status.
    fn publish(&mut self) {
        let w = self.window.counts();
        self.counts.duplicates = w.duplicates;
        self.counts.gaps = w.gaps;
        self.counts.events_repaired = w.repaired;
        self.counts.repair_requests = w.repair_requests;
        self.counts.refused = w.refused;
        for l in self.window.take_latencies() {
            let ms = l.as_secs_f64() * 1000.0;
            let i = LATENCY_BUCKETS_MS
                .iter()
                .position(|b| ms <= *b as f64)
                .unwrap_or(LATENCY_BUCKETS_MS.len());
            self.counts.repair_latency_buckets[i] += 1;
            self.counts.repair_latency_sum_ms += ms;
        }
        let c = self.counts.clone();
        self.up.update(|s| s.multicast = Some(c));
    }

    /// Follows the HTTP stream until it has caught up while datagrams flow; datagrams that
    /// arrive meanwhile are held. The position reached.
    async fn over_http(&mut self) -> Result<u64, SessionError> {
        let clock = self.follow.shared.clock;
        let fresh = (self.follow.shared.cfg.relay.multicast.heartbeat * 3)
            .max(Duration::from_millis(300))
            .as_millis() as u64;
        let last = self.last_datagram_ms.clone();
        let flowing = move || {
            let at = last.load(Ordering::Relaxed);
            at != 0 && clock.now_ms().saturating_sub(at) <= fresh
        };
        let (follow, up) = (self.follow, self.up);
        loop {
            let session = upstream::session(follow, up, Some(&flowing));
            tokio::pin!(session);
            let mut moved = Instant::now();
            let ended = loop {
                tokio::select! {
                    r = &mut session => break r,
                    r = self.socket.recv_from(&mut self.buf) => {
                        if let Ok((n, _)) = r {
                            let now = Instant::now();
                            // The window follows the HTTP stream's progress, so what it holds
                            // is what comes next.
                            if self.origin.is_none() || now - moved >= Duration::from_millis(100) {
                                let st = up.status();
                                if self.origin.is_none() {
                                    self.origin = st.upstream_hub;
                                }
                                self.window.resume(st.cursor, now);
                                moved = now;
                            }
                            self.received(n, now);
                        }
                    }
                }
            };
            match ended? {
                Ended::CaughtUp { position, hub } => {
                    if hub.is_some() {
                        self.origin = hub;
                    }
                    return Ok(position);
                }
                Ended::Reconciled => continue,
                Ended::Closed => {
                    return Err(SessionError::Http("the upstream closed its stream".into()));
                }
            }
        }
    }

    /// The datagram of `n` bytes just read into the buffer (taken out for the call, so no
    /// copy is made); `true` when it is the upstream's.
    fn received(&mut self, n: usize, now: Instant) -> bool {
        let buf = std::mem::take(&mut self.buf);
        let heard = self.datagram(&buf[..n], now);
        self.buf = buf;
        heard
    }

    /// Checks and holds one datagram; `true` when it is the upstream's.
    fn datagram(&mut self, bytes: &[u8], now: Instant) -> bool {
        self.counts.datagrams += 1;
        let d = match datagram::decode(&self.m.key, bytes) {
            Ok(d) => d,
            Err(DatagramError::Tag) => {
                self.counts.bad_tags += 1;
                return false;
            }
            Err(_) => {
                self.counts.malformed += 1;
                return false;
            }
        };
        if self.origin.as_deref() != Some(d.origin.as_str()) {
            self.counts.unknown_origin += 1;
            return false;
        }
        self.last_datagram_ms
            .store(self.follow.shared.clock.now_ms().max(1), Ordering::Relaxed);
        if self.window.datagram(d.body, now) == Taken::Beyond {
            self.counts.beyond_window += 1;
        }
        true
    }

    /// Takes what waits in the socket (at most [`DRAIN`] datagrams) without waiting; `true`
    /// when any was the upstream's.
    fn drain(&mut self, now: Instant) -> bool {
        let mut heard = false;
        for _ in 0..DRAIN {
            match self.socket.try_recv_from(&mut self.buf) {
                Ok((n, _)) => heard |= self.received(n, now),
                Err(_) => break,
            }
        }
        heard
    }

    /// Takes events from the group until the receiver falls behind or the group falls silent.
    /// Events go into the log one batch at a time while datagrams and repairs go on being
    /// taken: a slow append (or a flush) fills the window, not the socket's buffer.
    async fn over_multicast(&mut self) -> Result<Fallback, SessionError> {
        let mut taking = None;
        let r = self.receive(&mut taking).await;
        // However receiving ended, the batch on its way is stored (or failed) before anything
        // else follows the upstream.
        let finished = finish(&mut taking).await;
        let fallback = r?;
        finished?;
        Ok(fallback)
    }

    async fn receive(&mut self, taking: &mut Option<Taking>) -> Result<Fallback, SessionError> {
        let (follow, up) = (self.follow, self.up);
        let mut taker = Some(Taker::new(follow, up, self.window.cursor()));
        let mut repairs: FuturesUnordered<BoxFuture<'static, Repaired>> = FuturesUnordered::new();
        let mut wanted: std::collections::VecDeque<(u64, u64)> = Default::default();
        // Ranges asked for and not answered yet: a gap asked for again meanwhile (its backoff
        // ran out while the answer was on its way, or queued) is not asked twice.
        let mut asked: Vec<(u64, u64)> = Vec::new();
        let heartbeat = follow.shared.cfg.relay.multicast.heartbeat;
        let silence = (heartbeat * 20).max(Duration::from_secs(2));
        let mut last_heard = Instant::now();
        let mut published = Instant::now();
        let (mut progress_at, mut progress) = (Instant::now(), self.window.cursor());
        loop {
            if self.window.cursor() != progress || self.window.lead() <= progress {
                (progress_at, progress) = (Instant::now(), self.window.cursor());
            }
            if taking.is_none()
                && let Some(t) = taker.take()
            {
                match self.ready_items(t.position) {
                    Some(items) => *taking = Some(take(&follow.shared.tracker, t, items)),
                    None => taker = Some(t),
                }
            }
            if self.window.behind() {
                return Ok(Fallback::Behind);
            }
            while repairs.len() < REPAIRS_IN_FLIGHT
                && let Some((from, to)) = wanted.pop_front()
            {
                if to <= self.window.cursor() || asked.iter().any(|a| a.0 <= from && to <= a.1) {
                    continue;
                }
                asked.push((from, to));
                repairs.push(Box::pin(repair(follow, up, from, to)));
            }
            let due_at = self.window.next_due();
            tokio::select! {
                r = self.socket.recv_from(&mut self.buf) => {
                    let Ok((n, _)) = r else { continue };
                    let now = Instant::now();
                    let mut heard = self.received(n, now);
                    heard |= self.drain(now);
                    if heard {
                        last_heard = now;
                    }
                }
                r = async { taking.as_mut().expect("checked").await }, if taking.is_some() => {
                    *taking = None;
                    taker = Some(taken(r)?);
                }
                _ = tokio::time::sleep_until(due_at.unwrap_or_else(Instant::now)), if due_at.is_some() => {
                    // What waits in the socket first: a gap its datagrams fill needs no repair.
                    let now = Instant::now();
                    if self.drain(now) {
                        last_heard = now;
                    }
                    for r in self.window.due(now) {
                        if !wanted.contains(&r) {
                            wanted.push_back(r);
                        }
                    }
                }
                Some(r) = repairs.next(), if !repairs.is_empty() => {
                    match r {
                        Ok((from, to, through, events)) => {
                            asked.retain(|a| *a != (from, to));
                            self.window.repaired(from, through, events, Instant::now());
                        }
                        Err(RepairError::Gone(range, trail)) => {
                            asked.retain(|a| *a != range);
                            // An answer to a range already taken (a late datagram filled it)
                            // says nothing about what is still wanted.
                            if let Some(t) = finish(taking).await? {
                                taker = Some(t);
                            }
                            let position = taker.as_ref().expect("back").position;
                            if trail > position + 1 {
                                upstream::reconcile(follow, up, position, trail).await?;
                                return Ok(Fallback::Reconciled);
                            }
                        }
                        Err(RepairError::Http(range, e)) => {
                            asked.retain(|a| *a != range);
                            // The gap stays open and is asked for again after its backoff.
                            self.counts.repair_errors += 1;
                            tracing::debug!(upstream = %up.cfg.name, error = %e, "a repair failed");
                            up.note_error(&follow.shared, format!("repair: {e}"));
                        }
                    }
                }
                _ = tokio::time::sleep_until(last_heard + silence) => {
                    return Ok(Fallback::Silent);
                }
                _ = tokio::time::sleep_until(progress_at + STUCK) => {
                    if self.window.cursor() == progress && self.window.lead() > progress {
                        return Ok(Fallback::Stuck);
                    }
                }
            }
            if published.elapsed() >= Duration::from_millis(200) {
                self.publish();
                published = Instant::now();
            }
        }
    }

    /// The events ready in the window, and its cursor, to take into the log after
    /// `position`; `None` when there is nothing to take.
    fn ready_items(&mut self, position: u64) -> Option<Vec<Item>> {
        let ready = self.window.ready();
        let cursor = self.window.cursor();
        if ready.is_empty() && cursor <= position {
            return None;
        }
        self.counts.events_by_multicast += ready.len() as u64;
        // The group may carry topics this upstream entry does not ask for: passed over (the
        // cursor moves past them), as the HTTP stream would not have sent them.
        let wanted = &self.wanted;
        let mut items: Vec<Item> = ready
            .into_iter()
            .filter(|(l, _)| wanted.is_empty() || wanted.iter().any(|p| p.covers(&l.topic)))
            .map(|(l, b)| Item::Event(l, b))
            .collect();
        items.push(Item::Beat(Beat {
            lead: self.window.lead(),
            trail: 0,
            position: cursor,
        }));
        Some(items)
    }
}

/// A batch of events on its way into the log, on a task of its own: the receiving loop goes on
/// while the append runs (a storage write may block its thread). The taker comes back with
/// the outcome.
type Taking = tokio::task::JoinHandle<(Taker, Result<(), SessionError>)>;

fn take(tracker: &TaskTracker, mut taker: Taker, items: Vec<Item>) -> Taking {
    tracker.spawn(async move {
        let r = taker.take(items).await;
        (taker, r)
    })
}

/// The taker back from a finished batch, or the batch's error.
fn taken(
    joined: Result<(Taker, Result<(), SessionError>), tokio::task::JoinError>,
) -> Result<Taker, SessionError> {
    let (t, r) = joined.map_err(|e| SessionError::Http(format!("taking events failed: {e}")))?;
    r.map(|()| t)
}

/// Waits for the batch on its way into the log, if any: the taker, or the batch's error.
async fn finish(taking: &mut Option<Taking>) -> Result<Option<Taker>, SessionError> {
    match taking.take() {
        Some(f) => taken(f.await).map(Some),
        None => Ok(None),
    }
}

/// Fetches `from..=to` from the upstream's `/relay/events`, page after page (at most
/// [`REPAIR_PAGES`]); the answer covers `from..=through`.
fn repair(
    follow: &Follow,
    up: &Upstream,
    from: u64,
    to: u64,
) -> impl std::future::Future<Output = Repaired> + Send + 'static {
    let client = follow.clients.topics.clone();
    let policy = follow.clients.topic_policy.clone();
    let base = up.cfg.base().clone();
    let token = up.cfg.token.clone();
    let topics = up.cfg.topics.clone();
    async move {
        let mut events = Vec::new();
        let mut taken_bytes = 0usize;
        let mut at = from;
        let mut through = from - 1;
        for _ in 0..REPAIR_PAGES {
            let url = upstream::relay_url(&base, "events", &[("from", at), ("to", to)], &topics);
            policy.check_literal(&url).map_err(|e| {
                RepairError::Http((from, to), format!("blocked: {e} (see ssrf.topic_allow)"))
            })?;
            let resp = client
                .get(url)
                .timeout(REPAIR_TIMEOUT)
                .bearer_auth(&token)
                .header(reqwest::header::ACCEPT, MEDIA_TYPE)
                .send()
                .await
                .map_err(|e| RepairError::Http((from, to), classify(&e).to_string()))?;
            let status = resp.status();
            if status == reqwest::StatusCode::GONE {
                let body = resp.bytes().await.unwrap_or_default();
                let trail = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("trail")?.as_u64())
                    .ok_or_else(|| RepairError::Http((from, to), "410 without a trail".into()))?;
                return Err(RepairError::Gone((from, to), trail));
            }
            if !status.is_success() {
                return Err(RepairError::Http((from, to), format!("HTTP {status}")));
            }
            let page_through = resp
                .headers()
                .get("x-hubcast-through")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    RepairError::Http(
                        (from, to),
                        "a range answer without X-Hubcast-Through".into(),
                    )
                })?;
            if page_through > to {
                return Err(RepairError::Http(
                    (from, to),
                    format!("X-Hubcast-Through {page_through} is past the range asked ({to})"),
                ));
            }
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| RepairError::Http((from, to), classify(&e).to_string()))?
            {
                if body.len() + chunk.len() > REPAIR_BYTES {
                    return Err(RepairError::Http(
                        (from, to),
                        format!("a range answer larger than {REPAIR_BYTES} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            taken_bytes += body.len();
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match upstream::decode(line)
                    .map_err(|e| RepairError::Http((from, to), e.to_string()))?
                {
                    Item::Event(e, b) => events.push((e, b)),
                    Item::Beat(_) => {}
                }
            }
            if page_through < at {
                break;
            }
            through = page_through;
            // A long range is taken in parts: the rest is asked for again as a gap.
            if through >= to || taken_bytes >= REPAIR_BYTES {
                break;
            }
            at = through + 1;
        }
        if through < from {
            return Err(RepairError::Http(
                (from, to),
                "the range answer covered nothing".into(),
            ));
        }
        Ok((from, to, through, events))
    }
}
