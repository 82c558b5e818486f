//! The hub's stream served to peer hubs: a follower of the committed-event stream per reader,
//! writing the events that reader may read as lines ([`crate::relay::wire`]), with heartbeats;
//! and bounded ranges of the log for catch-up and repair.
//!
//! The lines are made on the engine's runtime and handed to the HTTP door through a bounded
//! channel: a slow reader holds its own producer back (it falls behind the in-memory window
//! and reads the log), never the others or the hub.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::stream::EventStream;
use crate::config::relay::PeerConfig;
use crate::relay::wire::{self, Beat, EventLine, Line};
use crate::storage::{EventLog, StorageError};
use crate::topic_prefix::TopicPrefix;

/// Events taken from the stream at once, and so the most in one chunk.
const EVENTS_PER_CHUNK: usize = 256;
/// Chunks made ahead of what the reader has taken.
const CHUNKS_AHEAD: usize = 8;
/// Most body bytes one range answers (it says how far it got).
const RANGE_BYTES: u64 = 16 << 20;

/// Who reads, and what: a peer's grants narrowed by the prefixes it asked for.
#[derive(Debug, Clone)]
pub struct Reader {
    pub peer: Arc<PeerConfig>,
    pub asked: Vec<TopicPrefix>,
}

impl Reader {
    pub fn reads(&self, topic: &str) -> bool {
        self.peer.may_read(topic)
            && (self.asked.is_empty() || self.asked.iter().any(|p| p.covers(topic)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("event {asked} is below the trail: the oldest event kept is {trail}")]
    BelowTrail { asked: u64, trail: u64 },
    #[error("event {asked} is beyond the lead {lead}: this hub has no such event yet")]
    BeyondLead { asked: u64, lead: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the hub is stopping")]
    Stopping,
}

/// A range of events as lines, and how far it got: every event up to `through` the reader may
/// read is in `body`.
pub struct Range {
    pub body: Vec<u8>,
    pub through: u64,
    pub events: usize,
    /// The range ends below the lead and was not cut short: its answer never changes.
    pub settled: bool,
}

/// Serves peers' streams and ranges.
pub struct PeerStreams {
    stream: Arc<EventStream>,
    log: Arc<dyn EventLog>,
    heartbeat: Duration,
    max_range: usize,
    /// Cancelled when the hub stops: every stream ends.
    stop: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    runtime: tokio::runtime::Handle,
    pub metrics: Arc<PeerMetrics>,
}

/// Per peer (by its configured name): streams open, events and bytes sent.
#[derive(Debug, Default)]
pub struct PeerMetrics {
    by_peer: std::sync::Mutex<std::collections::BTreeMap<String, PeerCounts>>,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PeerCounts {
    pub streams_open: u64,
    pub streams_total: u64,
    pub events_sent: u64,
    pub bytes_sent: u64,
    pub ranges_served: u64,
}

impl PeerMetrics {
    fn with(&self, peer: &str, f: impl FnOnce(&mut PeerCounts)) {
        let mut m = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(peer.to_owned()).or_default());
    }

    pub fn snapshot(&self) -> Vec<(String, PeerCounts)> {
        let m = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

impl PeerStreams {
    pub fn new(
        stream: Arc<EventStream>,
        log: Arc<dyn EventLog>,
        heartbeat: Duration,
        max_range: usize,
        stop: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> PeerStreams {
        PeerStreams {
            stream,
            log,
            heartbeat,
            max_range,
            stop,
            tracker,
            runtime: tokio::runtime::Handle::current(),
            metrics: Arc::default(),
        }
    }

    /// Ends every stream (the hub is stopping).
    pub fn end_all(&self) {
        self.stop.cancel();
    }

    /// The stream after `after` (default: the lead), as chunks of lines.
    pub async fn open(
        &self,
        reader: Reader,
        after: Option<u64>,
    ) -> Result<mpsc::Receiver<Bytes>, Refusal> {
        if self.stop.is_cancelled() {
            return Err(Refusal::Stopping);
        }
        let lead = self.stream.lead();
        let trail = self.log.bounds().await?.trail.min(lead + 1);
        let after = after.unwrap_or(lead);
        if after > lead {
            return Err(Refusal::BeyondLead { asked: after, lead });
        }
        if after + 1 < trail {
            return Err(Refusal::BelowTrail {
                asked: after + 1,
                trail,
            });
        }
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let producer = Producer {
            stream: self.stream.clone(),
            log: self.log.clone(),
            heartbeat: self.heartbeat,
            reader,
            tx,
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
        };
        self.runtime
            .spawn(self.tracker.track_future(producer.run(after)));
        Ok(rx)
    }

    /// Events `from..=to` the reader may read (at most `relay.max_range` events and
    /// [`RANGE_BYTES`] of content; `through` says how far it got).
    pub async fn range(&self, reader: &Reader, from: u64, to: u64) -> Result<Range, Refusal> {
        let lead = self.stream.lead();
        let trail = self.log.bounds().await?.trail.min(lead + 1);
        if from < trail {
            return Err(Refusal::BelowTrail { asked: from, trail });
        }
        let end = to.min(lead);
        let mut out = Range {
            body: Vec::new(),
            through: from - 1,
            events: 0,
            settled: false,
        };
        if from > end {
            return Ok(out);
        }
        let events = self.log.read(from, end + 1, self.max_range).await?;
        if events.first().is_none_or(|e| e.seq != from) {
            // Pruned between the check and the read.
            let trail = self.log.bounds().await?.trail;
            return Err(Refusal::BelowTrail { asked: from, trail });
        }
        let mut bytes = 0u64;
        let mut through = from - 1;
        for e in &events {
            if bytes >= RANGE_BYTES {
                break;
            }
            if reader.reads(&e.topic) {
                bytes += e.body.len() as u64;
                wire::write(&mut out.body, &Line::Event(EventLine::of(e)));
                out.events += 1;
            }
            through = e.seq;
        }
        out.through = through;
        out.settled = through == to && to <= lead;
        self.metrics.with(&reader.peer.name, |c| {
            c.ranges_served += 1;
            c.events_sent += out.events as u64;
            c.bytes_sent += out.body.len() as u64;
        });
        Ok(out)
    }
}

struct Producer {
    stream: Arc<EventStream>,
    log: Arc<dyn EventLog>,
    heartbeat: Duration,
    reader: Reader,
    tx: mpsc::Sender<Bytes>,
    stop: CancellationToken,
    metrics: Arc<PeerMetrics>,
}

impl Producer {
    async fn run(self, after: u64) {
        let name = self.reader.peer.name.clone();
        self.metrics.with(&name, |c| {
            c.streams_open += 1;
            c.streams_total += 1;
        });
        tracing::info!(peer = %name, after, "peer stream opened");
        let why = self.produce(after).await;
        self.metrics.with(&name, |c| c.streams_open -= 1);
        tracing::info!(peer = %name, why, "peer stream closed");
    }

    /// Writes lines until the reader goes or the hub stops; says why it ended.
    async fn produce(&self, after: u64) -> &'static str {
        let mut follower = self.stream.follow(after);
        let mut next = after + 1;
        // A heartbeat first: the reader learns where the stream stands at once.
        let mut due = Instant::now();
        loop {
            let events = tokio::select! {
                _ = self.stop.cancelled() => return "the hub is stopping",
                _ = self.tx.closed() => return "the reader went away",
                _ = tokio::time::sleep_until(due) => {
                    let Some(beat) = self.beat(next - 1).await else {
                        return "storage failed";
                    };
                    let mut line = Vec::with_capacity(80);
                    wire::write(&mut line, &Line::Heartbeat { heartbeat: beat });
                    if !self.send(line).await {
                        return "the reader went away";
                    }
                    due = Instant::now() + self.heartbeat;
                    continue;
                }
                r = follower.next(EVENTS_PER_CHUNK) => r,
            };
            let events = match events {
                Ok(events) if events.is_empty() => return "the stream closed",
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(peer = %self.reader.peer.name, error = %e,
                        "cannot read the event log for a peer stream");
                    return "storage failed";
                }
            };
            if events[0].event.seq != next {
                // Pruned before this reader took them: it reconnects from its cursor and
                // learns where the trail is.
                return "the reader fell below the trail";
            }
            let mut chunk = Vec::new();
            let mut sent = 0u64;
            for c in &events {
                if self.reader.reads(&c.event.topic) {
                    wire::write(&mut chunk, &Line::Event(EventLine::of(&c.event)));
                    sent += 1;
                }
            }
            next = events.last().map_or(next, |c| c.event.seq + 1);
            if chunk.is_empty() {
                continue;
            }
            let bytes = chunk.len() as u64;
            if !self.send(chunk).await {
                return "the reader went away";
            }
            self.metrics.with(&self.reader.peer.name, |c| {
                c.events_sent += sent;
                c.bytes_sent += bytes;
            });
            due = Instant::now() + self.heartbeat;
        }
    }

    async fn beat(&self, position: u64) -> Option<Beat> {
        let lead = self.stream.lead();
        let trail = self.log.bounds().await.ok()?.trail.min(lead + 1);
        Some(Beat {
            lead,
            trail,
            position,
        })
    }

    async fn send(&self, chunk: Vec<u8>) -> bool {
        tokio::select! {
            r = self.tx.send(Bytes::from(chunk)) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }
}
