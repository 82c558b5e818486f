//! Following another hub's stream (`[[upstreams]]`): each event taken (by [`super::taker`])
//! goes into this hub's own log, with this hub added to its path and the follower's cursor
//! stored in the same transaction, so a crash at any moment loses nothing and takes nothing
//! twice; its jobs go to this hub's subscribers of the topic as a fat ping's would (the origin
//! already diffed it). An event whose path already names this hub is refused (mutual peers do
//! not loop). The follower reconnects with jittered backoff; below the upstream's trail
//! (`410`) it fetches the followed topics that have subscribers here (the light-ping path), so
//! they converge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use serde::Serialize;
use tokio::sync::mpsc;

use super::bounded_set::BoundedSet;
use super::client::{Clients, classify};
use super::keyed::KeyedQueue;
use super::shared::Shared;
use super::stream::{CommitError, EventStream};
use super::taker::Taker;
use crate::config::relay::UpstreamConfig;
use crate::relay::wire::{self, Beat, EventLine, Line, LineError, MEDIA_TYPE};
use crate::storage::{Ping, StorageError};
use crate::topic_prefix::TopicPrefix;

/// The first pause before reconnecting; it doubles up to `relay.reconnect_max`.
pub(super) const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Events committed at once (one group commit when the stream is idle).
const BATCH: usize = 512;
/// Most topics a reconciliation fetches.
const MAX_RECONCILE: usize = 100_000;

/// What a follower is doing, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub url: String,
    /// "starting", "connecting", "streaming", "waiting" (to reconnect), "reconciling".
    pub state: &'static str,
    /// The last upstream event taken (or passed over).
    pub cursor: u64,
    /// The upstream's lead, from its last heartbeat.
    pub upstream_lead: u64,
    /// Events the upstream has that this hub has not yet taken (of any topic).
    pub lag_events: u64,
    /// Age of the last event taken when it was taken.
    pub lag_ms: u64,
    pub events_taken: u64,
    pub bytes_taken: u64,
    /// Events refused because their path already named this hub.
    pub loops_refused: u64,
    /// Events passed over because another upstream brought the same origin event first.
    pub duplicates: u64,
    /// Times the follower fell below the upstream's trail and fetched its topics instead.
    pub reconciles: u64,
    pub connects: u64,
    pub last_error: Option<String>,
    pub last_error_ms: u64,
    /// `http` or `multicast`.
    pub transport: &'static str,
    /// The upstream's hub id, from its answers.
    pub upstream_hub: Option<String>,
    /// A multicast receiver's counts.
    pub multicast: Option<super::multicast_rx::ReceiverCounts>,
}

/// One upstream and its follower's state.
pub struct Upstream {
    pub cfg: UpstreamConfig,
    status: Mutex<UpstreamStatus>,
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig) -> Arc<Upstream> {
        let status = UpstreamStatus {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            state: "starting",
            cursor: 0,
            upstream_lead: 0,
            lag_events: 0,
            lag_ms: 0,
            events_taken: 0,
            bytes_taken: 0,
            loops_refused: 0,
            duplicates: 0,
            reconciles: 0,
            connects: 0,
            last_error: None,
            last_error_ms: 0,
            transport: if cfg.multicast.is_some() {
                "multicast"
            } else {
                "http"
            },
            upstream_hub: None,
            multicast: cfg.multicast.as_ref().map(|_| Default::default()),
        };
        Arc::new(Upstream {
            cfg,
            status: Mutex::new(status),
        })
    }

    pub fn status(&self) -> UpstreamStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the follower's last error, for operators.
    pub(super) fn note_error(&self, shared: &Shared, e: String) {
        let now = shared.clock.now_ms();
        self.update(|s| {
            s.last_error = Some(e);
            s.last_error_ms = now;
        });
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut UpstreamStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// What a follower needs from the engine.
pub struct Follow {
    pub shared: Arc<Shared>,
    pub stream: Arc<EventStream>,
    pub clients: Clients,
    /// Where reconciliation's pings go (the fetcher's per-topic queue).
    pub pings: Arc<KeyedQueue<Ping>>,
    /// Origin events recently taken from any upstream.
    pub seen: Seen,
}

/// Origin events (origin, number) recently taken, shared by the followers of all upstreams:
/// the same event reaching this hub by two paths (A → B → D and A → C → D) is taken once.
/// Bounded and in memory: after a restart, or past [`SEEN`] newer events, a second copy is
/// taken again.
pub struct Seen {
    inner: Mutex<BoundedSet<(String, u64)>>,
}

/// Origin events remembered by [`Seen`].
const SEEN: usize = 200_000;

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            inner: Mutex::new(BoundedSet::new(SEEN)),
        }
    }
}

impl Seen {
    /// Claims the event for the caller: `false` when another follower has it (taken, or
    /// being taken).
    pub(super) fn claim(&self, origin: &str, seq: u64) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.insert((origin.to_owned(), seq))
    }

    /// Lets go of claims whose events were not committed after all.
    pub(super) fn release(&self, claimed: &[(String, u64)]) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for k in claimed {
            g.remove(k);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    #[error("{0}")]
    Http(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("the hub is stopping")]
    Stopping,
}

impl From<CommitError> for SessionError {
    fn from(e: CommitError) -> SessionError {
        match e {
            CommitError::Storage(e) => SessionError::Storage(e),
            CommitError::Stopping => SessionError::Stopping,
        }
    }
}

/// How a session ended without an error.
pub(super) enum Ended {
    /// The upstream closed the stream (e.g. it is restarting).
    Closed,
    /// Below the trail: the topics were fetched and the cursor moved to the trail.
    Reconciled,
    /// Caught up with the upstream's lead while the caller's condition held: everything up to
    /// `position` is taken; `hub` is the upstream's id.
    CaughtUp { position: u64, hub: Option<String> },
}

/// A condition under which a session that has caught up ends (multicast is flowing again).
pub(super) type Until<'a> = Option<&'a (dyn Fn() -> bool + Sync)>;

/// Follows `up` until the hub stops.
pub async fn run(follow: Arc<Follow>, up: Arc<Upstream>) {
    let stop = follow.shared.shutdown.clone();
    let max = follow.shared.cfg.relay.reconnect_max;
    let mut pause = FIRST_PAUSE;
    loop {
        up.update(|s| {
            s.state = "connecting";
            s.connects += 1;
        });
        let ended = tokio::select! {
            r = session(&follow, &up, None) => r,
            _ = stop.cancelled() => return,
        };
        match ended {
            Ok(Ended::Reconciled | Ended::CaughtUp { .. }) => {
                pause = FIRST_PAUSE;
                continue;
            }
            Ok(Ended::Closed) => {
                tracing::info!(upstream = %up.cfg.name, "upstream closed its stream; reconnecting");
                pause = FIRST_PAUSE;
            }
            Err(SessionError::Stopping) => return,
            Err(e) => {
                tracing::warn!(upstream = %up.cfg.name, error = %e, retry_in = ?pause,
                    "following the upstream failed");
                up.note_error(&follow.shared, e.to_string());
            }
        }
        up.update(|s| s.state = "waiting");
        if !pause_before_reconnecting(&stop, &mut pause, max).await {
            return;
        }
    }
}

/// Waits `pause`, with full jitter on its upper half (followers of one upstream do not come
/// back together), and doubles it up to `max`; `false` when the hub stops first.
pub(super) async fn pause_before_reconnecting(
    stop: &tokio_util::sync::CancellationToken,
    pause: &mut Duration,
    max: Duration,
) -> bool {
    let jittered = pause.mul_f64(rand::rng().random_range(0.5..=1.0));
    let waited = tokio::select! {
        _ = tokio::time::sleep(jittered) => true,
        _ = stop.cancelled() => false,
    };
    *pause = (*pause * 2).min(max);
    waited
}

/// Follows the upstream's stream over HTTP from the stored cursor; with `until`, ends once a
/// heartbeat says everything is taken and `until()` holds.
pub(super) async fn session(
    follow: &Arc<Follow>,
    up: &Arc<Upstream>,
    until: Until<'_>,
) -> Result<Ended, SessionError> {
    let s = &follow.shared;
    let name = up.cfg.cursor_name();
    let cursor = s
        .health
        .persist("upstream cursor", &s.shutdown, || s.store.log.cursor(&name))
        .await
        .ok_or(SessionError::Stopping)?
        .unwrap_or(0);
    up.update(|st| st.cursor = cursor);
    let url = relay_url(
        up.cfg.base(),
        "stream",
        &[("after", cursor)],
        &up.cfg.topics,
    );
    follow
        .clients
        .topic_policy
        .check_literal(&url)
        .map_err(|e| SessionError::Http(format!("blocked: {e} (see ssrf.topic_allow)")))?;
    let resp = follow
        .clients
        .topics
        .get(url)
        .bearer_auth(&up.cfg.token)
        .header(reqwest::header::ACCEPT, MEDIA_TYPE)
        .timeout(Duration::from_secs(365 * 24 * 3600))
        .send()
        .await
        .map_err(|e| SessionError::Http(classify(&e).to_string()))?;
    let status = resp.status();
    if status == reqwest::StatusCode::GONE {
        let body = resp.bytes().await.unwrap_or_default();
        let trail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("trail")?.as_u64())
            .ok_or_else(|| SessionError::Http("410 without a trail".into()))?;
        reconcile(follow, up, cursor, trail).await?;
        return Ok(Ended::Reconciled);
    }
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        let why = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned();
        return Err(SessionError::Http(format!("HTTP {status}: {why}")));
    }
    let hub = resp
        .headers()
        .get(wire::HUB_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(h) = &hub {
        up.update(|st| st.upstream_hub = Some(h.clone()));
    }
    up.update(|st| st.state = "streaming");
    tracing::info!(upstream = %up.cfg.name, after = cursor, "following the upstream's stream");
    let mut taker = Taker::new(follow, up, cursor);
    let idle = (s.cfg.relay.heartbeat * 5).max(Duration::from_secs(5));
    // Lines are read and decoded on a task of their own while the previous group commits.
    let (lines, mut read) = mpsc::channel(READ_AHEAD);
    let reader = AbortOnDrop(tokio::spawn(read_lines(
        resp,
        idle,
        s.cfg.relay.max_line,
        cursor,
        lines,
    )));
    let ended = loop {
        let Some(first) = read.recv().await else {
            break Ok(Ended::Closed);
        };
        let mut items = match first {
            Ok(items) => items,
            Err(e) => break Err(e),
        };
        let mut failed = None;
        while items.len() < BATCH {
            match read.try_recv() {
                Ok(Ok(more)) => items.extend(more),
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        // What was read before a failure is still taken.
        let beat = items.iter().rev().find_map(|i| match i {
            Item::Beat(b) => Some(*b),
            Item::Event(..) => None,
        });
        taker.take(items).await?;
        if let Some(e) = failed {
            break Err(e);
        }
        if let (Some(until), Some(b)) = (until, beat)
            && taker.position >= b.lead
            && until()
        {
            break Ok(Ended::CaughtUp {
                position: taker.position,
                hub,
            });
        }
    };
    drop(reader);
    ended
}

/// Lines read ahead of the commits, in groups of up to a chunk's lines.
const READ_AHEAD: usize = 64;

/// A line as the reader hands it over: a heartbeat, or an event with its content decoded.
pub(super) enum Item {
    Beat(Beat),
    Event(EventLine, Bytes),
}

/// Aborts the task when dropped (a session ending stops its reader).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the stream's lines, parses and decodes them, and hands them over in the order read;
/// ends (dropping `out`) when the upstream closes the stream, after handing over an error.
async fn read_lines(
    mut resp: reqwest::Response,
    idle: Duration,
    max_line: usize,
    mut position: u64,
    out: mpsc::Sender<Result<Vec<Item>, SessionError>>,
) {
    let mut buf = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => Err(SessionError::Http(format!(
                "nothing from the upstream for {idle:?} (not even a heartbeat)"
            ))),
            Ok(Err(e)) => Err(SessionError::Http(classify(&e).to_string())),
            Ok(Ok(None)) => return,
            Ok(Ok(Some(chunk))) => Ok(chunk),
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        buf.extend_from_slice(&chunk);
        let mut items = Vec::new();
        let mut failed = None;
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(end + 1);
            let text = &line[..end];
            if text.is_empty() {
                continue;
            }
            match decode(text) {
                Ok(Item::Event(e, body)) => {
                    position = position.max(e.seq);
                    items.push(Item::Event(e, body));
                }
                Ok(beat) => items.push(beat),
                Err(e) => {
                    failed = Some(SessionError::Http(format!("after event {position}: {e}")));
                    break;
                }
            }
        }
        if failed.is_none() && buf.len() > max_line {
            failed = Some(SessionError::Http(format!(
                "a line longer than relay.max_line ({max_line} bytes)"
            )));
        }
        if !items.is_empty() && out.send(Ok(items)).await.is_err() {
            return;
        }
        if let Some(e) = failed {
            let _ = out.send(Err(e)).await;
            return;
        }
    }
}

pub(super) fn decode(text: &[u8]) -> Result<Item, LineError> {
    Ok(match wire::parse(text)? {
        Line::Heartbeat { heartbeat } => Item::Beat(heartbeat),
        Line::Event(e) => {
            let body = e.body()?;
            Item::Event(e, body)
        }
    })
}

/// `BASE/relay/{what}?name=value…&topic=…` of an upstream.
pub(super) fn relay_url(
    base: &url::Url,
    what: &str,
    numbers: &[(&str, u64)],
    topics: &[String],
) -> url::Url {
    let mut url = base.clone();
    url.set_path(&format!(
        "{}/relay/{what}",
        url.path().trim_end_matches('/')
    ));
    url.set_query(None);
    {
        let mut q = url.query_pairs_mut();
        for (name, value) in numbers {
            q.append_pair(name, &value.to_string());
        }
        for t in topics {
            q.append_pair("topic", t);
        }
    }
    url
}

/// Below the upstream's trail: every topic with subscribers here that this follower asks for
/// is fetched (a light ping each, through the fetcher), and the cursor moves to just below
/// the trail.
pub(super) async fn reconcile(
    follow: &Follow,
    up: &Upstream,
    cursor: u64,
    trail: u64,
) -> Result<(), SessionError> {
    let s = &follow.shared;
    up.update(|st| {
        st.state = "reconciling";
        st.reconciles += 1;
    });
    let prefixes: Vec<TopicPrefix> = up
        .cfg
        .topics
        .iter()
        .filter_map(|t| TopicPrefix::parse(t).ok())
        .collect();
    let mut topics: Vec<String> = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = s
            .store
            .subs
            .scan(
                None,
                after.as_ref().map(|(t, c)| (t.as_str(), c.as_str())),
                1_000,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.topic.clone(), last.callback.clone()));
        for sub in &page {
            let wanted = prefixes.is_empty() || prefixes.iter().any(|p| p.covers(&sub.topic));
            if wanted && topics.last() != Some(&sub.topic) {
                topics.push(sub.topic.clone());
            }
        }
        if page.len() < 1_000 || topics.len() >= MAX_RECONCILE {
            break;
        }
    }
    topics.dedup();
    tracing::warn!(upstream = %up.cfg.name, cursor, trail, topics = topics.len(),
        "fell below the upstream's trail: fetching the followed topics instead");
    let now = s.clock.now_ms();
    let mut pings = Vec::with_capacity(topics.len());
    for topic in topics {
        pings.push(Ping {
            id: s.store.next_id().await?,
            topic,
            fat: None,
            received_ms: now,
        });
    }
    if !pings.is_empty() {
        s.store.publish.put_pings(pings.clone()).await?;
    }
    // The pings and the cursor below the trail are durable together before going on.
    // Never backwards: events already taken stay taken.
    let moved_to = trail.saturating_sub(1).max(cursor);
    s.store
        .log
        .put_cursor(&up.cfg.cursor_name(), moved_to)
        .await?;
    s.store.flush().await?;
    for p in pings {
        follow.pings.submit(p);
    }
    up.update(|st| st.cursor = moved_to);
    Ok(())
}
