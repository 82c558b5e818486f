//! The committed-event stream. [`EventStream::commit`] appends: the caller that finds nobody
//! appending appends every commit waiting at that moment in one storage transaction (group
//! commit, without a hop through another task); a flusher task makes appended batches durable,
//! all that wait with one flush, and only then does the stream's lead move on. Consumers
//! ([`Follower`]: the fan-out planner today, relays next) follow the lead from a sequence
//! number of their own, so each resumes where it stopped after a restart: a consumer never sees
//! an event the store has not made durable.
//!
//! The newest events are also kept in memory (a bounded window): a follower that keeps up takes
//! them from there without reading storage; one that falls behind the window reads the log.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::health::Health;
use super::snapshot::Snapshot;
use crate::storage::{Commit, Event, EventLog, Storage, StorageError};

/// What the stream's storage calls are called in the health report (`/readyz`).
pub const APPEND: &str = "event log append";
pub const FLUSH: &str = "event log flush";

/// Most commits in one transaction.
const MAX_BATCH: usize = 1_024;
/// The in-memory window of newest events: at most this many, and this many body bytes.
const RECENT_EVENTS: usize = 4_096;
const RECENT_BYTES: usize = 16 << 20;

type Reply = oneshot::Sender<Result<Option<u64>, StorageError>>;

/// A commit waiting to be appended: with the subscribers read for it, and who to answer.
struct Pending {
    commit: Commit,
    subscribers: Option<Snapshot>,
    reply: Reply,
}

/// One committed event as a follower gets it.
#[derive(Debug, Clone)]
pub struct Committed {
    pub event: Event,
    /// The destination servers its jobs were stored for, when it comes from the in-memory
    /// window (`None` when it was read back from the log).
    pub destinations: Option<Arc<[String]>>,
    /// The topic's subscribers read for it, when it comes from the window and they were few
    /// enough to keep.
    pub subscribers: Option<Snapshot>,
}

impl Committed {
    /// What it holds in memory: its body and its subscribers.
    fn bytes(&self) -> usize {
        self.event.body.len() + self.subscribers.as_ref().map_or(0, Snapshot::bytes)
    }
}

/// The newest committed events, contiguous in sequence order.
#[derive(Default)]
struct Recent {
    events: VecDeque<Committed>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, c: Committed) {
        // Contiguous or nothing: with several nodes on one store, this node's own events have
        // gaps between them (the others' events), and a follower must not skip those.
        if self
            .events
            .back()
            .is_some_and(|last| last.event.seq + 1 != c.event.seq)
        {
            self.events.clear();
            self.bytes = 0;
        }
        self.bytes += c.bytes();
        self.events.push_back(c);
        while self.events.len() > RECENT_EVENTS || self.bytes > RECENT_BYTES {
            match self.events.pop_front() {
                Some(old) => self.bytes -= old.bytes(),
                None => break,
            }
        }
    }

    /// Event `seq`, if the window holds it.
    fn get(&self, seq: u64) -> Option<&Event> {
        let first = self.events.front()?.event.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.events.get(i).map(|c| &c.event)
    }

    /// Events `next..=lead` (at most `limit`), if the window still starts at or before `next`.
    fn from(&self, next: u64, lead: u64, limit: usize) -> Option<Vec<Committed>> {
        let first = self.events.front()?.event.seq;
        if next < first {
            return None;
        }
        let skip = usize::try_from(next - first).ok()?;
        let taken: Vec<Committed> = self
            .events
            .iter()
            .skip(skip)
            .take_while(|c| c.event.seq <= lead)
            .take(limit)
            .cloned()
            .collect();
        (!taken.is_empty()).then_some(taken)
    }
}

/// The writing side of the stream and the lead that followers watch.
pub struct EventStream {
    writer: Arc<Writer>,
    /// Commits waiting to be appended.
    pending: Mutex<Vec<Pending>>,
    /// Held by the caller that appends: it takes every pending commit (its own and those that
    /// queued behind it) into one transaction. No task hop on the way.
    appending: tokio::sync::Mutex<mpsc::Sender<Appended>>,
    lead: watch::Receiver<u64>,
    log: Arc<dyn EventLog>,
    recent: Arc<Mutex<Recent>>,
    stop: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the hub is stopping; the update stays pending")]
    Stopping,
}

impl EventStream {
    /// Starts the flusher. `lead` is the log's lead as stored.
    pub fn start(
        store: Storage,
        health: Arc<Health>,
        lead: u64,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> EventStream {
        let (to_flush, appended) = mpsc::channel(IN_FLUSH);
        let (lead_tx, lead_rx) = watch::channel(lead);
        let log = store.log.clone();
        let recent: Arc<Mutex<Recent>> = Arc::default();
        let writer = Arc::new(Writer {
            store,
            health,
            lead: lead_tx,
            recent: recent.clone(),
        });
        tracker.spawn(writer.clone().flush_loop(appended, stop.clone()));
        EventStream {
            writer,
            pending: Mutex::new(Vec::new()),
            appending: tokio::sync::Mutex::new(to_flush),
            lead: lead_rx,
            log,
            recent,
            stop,
        }
    }

    /// Appends the commit to the log and returns its event's number once it is appended: the
    /// topic's new state is visible to the next diff, and the pings it answers are gone with
    /// it. It becomes durable with the next flush, before any follower sees it; a crash before
    /// that loses commit and ping removal together, so the ping is processed again. Every
    /// commit waiting when an append starts goes into the same transaction (group commit).
    /// `subscribers`, the topic's subscribers read for the commit, travel with its event.
    pub async fn commit(
        &self,
        commit: Commit,
        subscribers: Option<Snapshot>,
    ) -> Result<Option<u64>, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                commit,
                subscribers,
                reply,
            });
        self.answer(answer).await
    }

    /// [`EventStream::commit`] for several commits, appended in their order (in one
    /// transaction when they fit); returns once all are appended.
    pub async fn commit_all(
        &self,
        commits: Vec<(Commit, Option<Snapshot>)>,
    ) -> Result<Vec<Option<u64>>, CommitError> {
        let answers: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            commits
                .into_iter()
                .map(|(commit, subscribers)| {
                    let (reply, answer) = oneshot::channel();
                    pending.push(Pending {
                        commit,
                        subscribers,
                        reply,
                    });
                    answer
                })
                .collect()
        };
        let mut numbers = Vec::with_capacity(answers.len());
        for answer in answers {
            numbers.push(self.answer(answer).await?);
        }
        Ok(numbers)
    }

    /// Waits for a pending commit's answer, appending whatever is pending whenever nobody else
    /// is.
    async fn answer(
        &self,
        mut answer: oneshot::Receiver<Result<Option<u64>, StorageError>>,
    ) -> Result<Option<u64>, CommitError> {
        loop {
            tokio::select! {
                biased;
                r = &mut answer => {
                    return Ok(r.map_err(|_| CommitError::Stopping)??);
                }
                to_flush = self.appending.lock() => {
                    // This caller appends everything pending, its own commit included (unless
                    // the previous appender took it: then its answer is ready).
                    self.append_pending(&to_flush).await;
                }
            }
        }
    }

    async fn append_pending(&self, to_flush: &mpsc::Sender<Appended>) {
        loop {
            let batch: Vec<Pending> = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let n = pending.len().min(MAX_BATCH);
                pending.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let mut commits = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            let mut snapshots = Vec::with_capacity(batch.len());
            for p in batch {
                commits.push(p.commit);
                replies.push(p.reply);
                snapshots.push(p.subscribers);
            }
            let events = match self.writer.append(&commits, &self.stop).await {
                Some(Ok(events)) => events,
                Some(Err(e)) => {
                    // Everything pending fails with it: commits queued together (a follower's
                    // group) must not be stored past one that was not.
                    let rest: Vec<Pending> = {
                        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                        pending.drain(..).collect()
                    };
                    for reply in replies.into_iter().chain(rest.into_iter().map(|p| p.reply)) {
                        let _ = reply.send(Err(e.clone()));
                    }
                    continue;
                }
                None => return, // stopping: the replies are dropped, the pings stay stored
            };
            for (reply, e) in replies.into_iter().zip(&events) {
                let _ = reply.send(Ok(e.as_ref().map(|e| e.seq)));
            }
            let batch = Appended {
                events: events
                    .into_iter()
                    .zip(commits)
                    .zip(snapshots)
                    .filter_map(|((e, c), subscribers)| {
                        Some(Committed {
                            event: e?,
                            destinations: Some(Arc::from(c.destinations)),
                            subscribers,
                        })
                    })
                    .collect(),
            };
            if to_flush.send(batch).await.is_err() {
                return; // the flusher has stopped: the hub's final flush covers the batch
            }
        }
    }

    /// Waits until event `seq` is durable (the lead has reached it); `false` when the hub
    /// stops first.
    pub async fn durable(&self, seq: u64) -> bool {
        let mut lead = self.lead.clone();
        tokio::select! {
            r = lead.wait_for(|l| *l >= seq) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    /// A durable event from the in-memory window, if it is still there (callers read the log
    /// otherwise).
    pub fn recent(&self, seq: u64) -> Option<Event> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.get(seq).cloned()
    }

    /// The newest durable event.
    /// Moves the lead up to `lead`, the log's lead as stored: events other nodes sharing the
    /// store committed (followers read them from the log).
    pub fn observe(&self, lead: u64) {
        self.writer.lead.send_if_modified(|l| {
            let moved = lead > *l;
            *l = (*l).max(lead);
            moved
        });
    }

    pub fn lead(&self) -> u64 {
        *self.lead.borrow()
    }

    /// Follows the stream from the event after `after`.
    pub fn follow(&self, after: u64) -> Follower {
        Follower {
            log: self.log.clone(),
            lead: self.lead.clone(),
            recent: self.recent.clone(),
            next: after + 1,
        }
    }
}

struct Writer {
    store: Storage,
    health: Arc<Health>,
    lead: watch::Sender<u64>,
    recent: Arc<Mutex<Recent>>,
}

/// An appended batch on its way to the flush: the events of its commits, with their
/// destinations and subscribers.
struct Appended {
    events: Vec<Committed>,
}

/// Appended batches waiting for their flush; an appender beyond it waits. One: while a flush
/// runs, one more batch may wait for the next, and the commits arriving after it gather in
/// `pending` to be appended together once the flush is done. Every storage transaction costs
/// the store a write of its own (sled seals its I/O buffer around each), so appending in step
/// with the flushes, not as fast as commits arrive, keeps transactions few and large.
const IN_FLUSH: usize = 1;

impl Writer {
    /// Appends, retrying transient failures with backoff. A permanent failure is returned (the
    /// commits' pings stay stored); `None` when the hub stops first.
    async fn append(
        &self,
        commits: &[Commit],
        stop: &CancellationToken,
    ) -> Option<Result<Vec<Option<Event>>, StorageError>> {
        let append = || self.store.log.append(commits);
        self.health.persist_transient(APPEND, stop, append).await
    }

    /// Makes appended batches durable, every batch waiting at that moment with one flush, then
    /// tells followers, in order. Nothing is told of an event before it is
    /// durable; a failed flush is retried (the events are written: appending them again would
    /// duplicate them). Once the hub stops, the batches still waiting get one flush.
    async fn flush_loop(
        self: Arc<Self>,
        mut appended: mpsc::Receiver<Appended>,
        stop: CancellationToken,
    ) {
        let mut waiting = Vec::new();
        loop {
            let first = tokio::select! {
                first = appended.recv() => first,
                // Stopping: what was appended by then still gets its flush, below.
                _ = stop.cancelled() => appended.try_recv().ok(),
            };
            let Some(first) = first else { return };
            waiting.push(first);
            while let Ok(more) = appended.try_recv() {
                waiting.push(more);
            }
            let flushed = if stop.is_cancelled() {
                self.store.flush().await.is_ok()
            } else {
                let flush = || self.store.flush();
                self.health.persist(FLUSH, &stop, flush).await.is_some()
            };
            if !flushed {
                waiting.clear(); // stopping: the hub's final flush tries again
                continue;
            }
            for batch in waiting.drain(..) {
                self.publish(batch.events);
            }
        }
    }

    /// Durable events: into the in-memory window, then the lead moves.
    fn publish(&self, events: Vec<Committed>) {
        let mut newest = None;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for c in events {
                newest = Some(c.event.seq);
                recent.push(c);
            }
        }
        if let Some(newest) = newest {
            self.lead.send_if_modified(|l| {
                let moved = newest > *l;
                *l = (*l).max(newest);
                moved
            });
        }
    }
}

/// A consumer's position in the stream.
pub struct Follower {
    log: Arc<dyn EventLog>,
    lead: watch::Receiver<u64>,
    recent: Arc<Mutex<Recent>>,
    next: u64,
}

impl Follower {
    /// The next events (at most `limit`), waiting until there is one. Empty when the stream
    /// has closed. A follower that has fallen below the log's trail goes on from the trail.
    pub async fn next(&mut self, limit: usize) -> Result<Vec<Committed>, StorageError> {
        loop {
            let lead = *self.lead.borrow_and_update();
            if lead >= self.next {
                let window = {
                    let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                    recent.from(self.next, lead, limit)
                };
                let events = match window {
                    Some(events) => events,
                    None => self
                        .log
                        .read(self.next, lead + 1, limit)
                        .await?
                        .into_iter()
                        .map(|event| Committed {
                            event,
                            destinations: None,
                            subscribers: None,
                        })
                        .collect(),
                };
                if let Some(last) = events.last() {
                    self.next = last.event.seq + 1;
                    return Ok(events);
                }
                let trail = self.log.bounds().await?.trail;
                if trail > self.next {
                    tracing::warn!(
                        from = self.next,
                        trail,
                        "events pruned before they were followed"
                    );
                    self.next = trail;
                    continue;
                }
            }
            if self.lead.changed().await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// The last event taken.
    pub fn position(&self) -> u64 {
        self.next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(seq: u64, bytes: usize) -> Committed {
        Committed {
            event: Event {
                seq,
                topic: "t".into(),
                topic_seq: seq,
                origin: "o".into(),
                content_type: "text/plain".into(),
                body: vec![0; bytes].into(),
                created_ms: 0,
                ..Default::default()
            },
            destinations: Some(Arc::from(vec!["http://d:80".to_owned()])),
            subscribers: None,
        }
    }

    #[test]
    fn the_window_serves_contiguous_ranges_and_forgets_the_oldest() {
        let mut r = Recent::default();
        for seq in 1..=RECENT_EVENTS as u64 + 2 {
            r.push(committed(seq, 1));
        }
        assert!(
            r.from(1, 100, 10).is_none(),
            "1 and 2 fell out of the window"
        );
        let got = r.from(3, 5, 10).unwrap();
        assert_eq!(
            got.iter().map(|c| c.event.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(r.from(3, 100, 2).unwrap().len(), 2, "limit");
        assert!(
            r.from(RECENT_EVENTS as u64 + 3, u64::MAX, 1).is_none(),
            "past the newest"
        );
        let mut big = Recent::default();
        big.push(committed(1, RECENT_BYTES));
        big.push(committed(2, 1));
        assert!(big.from(1, 2, 10).is_none(), "bounded by bytes too");
        assert_eq!(big.from(2, 2, 10).unwrap().len(), 1);
        // A gap (another node's event in between) starts the window afresh.
        big.push(committed(4, 1));
        assert!(big.from(2, 4, 10).is_none());
        assert_eq!(big.from(4, 4, 10).unwrap().len(), 1);
    }
}
