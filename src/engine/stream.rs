//! The committed-event stream. [`EventStream::commit`] hands a [`Commit`] to one writer task
//! that appends every commit waiting at that moment in one storage transaction and makes them
//! durable with one flush (group commit); only then does the stream's lead move on. Consumers
//! ([`Follower`]: the fan-out planner today, relays next) follow the lead from a sequence
//! number of their own, so each resumes where it stopped after a restart: a consumer never sees
//! an event the store has not made durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::health::Health;
use crate::storage::{Commit, EventLog, EventSummary, Storage, StorageError};

/// Commits waiting for the writer; a publisher beyond it waits its turn.
const QUEUE: usize = 4_096;
/// Most commits in one transaction.
const MAX_BATCH: usize = 1_024;

type Reply = oneshot::Sender<Result<Option<u64>, StorageError>>;

/// The writer's side of the stream and the lead that followers watch.
pub struct EventStream {
    tx: mpsc::Sender<(Commit, Reply)>,
    lead: watch::Receiver<u64>,
    log: Arc<dyn EventLog>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the hub is stopping; the update stays pending")]
    Stopping,
}

impl EventStream {
    /// Starts the writer. `lead` is the log's lead as stored.
    pub fn start(
        store: Storage,
        health: Arc<Health>,
        lead: u64,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> EventStream {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (lead_tx, lead_rx) = watch::channel(lead);
        let log = store.log.clone();
        tracker.spawn(writer(store, health, rx, lead_tx, stop));
        EventStream {
            tx,
            lead: lead_rx,
            log,
        }
    }

    /// Appends the commit to the log and returns its event's number once it is durable.
    pub async fn commit(&self, commit: Commit) -> Result<Option<u64>, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((commit, reply))
            .await
            .map_err(|_| CommitError::Stopping)?;
        Ok(answer.await.map_err(|_| CommitError::Stopping)??)
    }

    /// The newest durable event.
    pub fn lead(&self) -> u64 {
        *self.lead.borrow()
    }

    /// Follows the stream from the event after `after`.
    pub fn follow(&self, after: u64) -> Follower {
        Follower {
            log: self.log.clone(),
            lead: self.lead.clone(),
            next: after + 1,
        }
    }
}

async fn writer(
    store: Storage,
    health: Arc<Health>,
    mut rx: mpsc::Receiver<(Commit, Reply)>,
    lead: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut commits = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            next = rx.recv() => next,
            _ = stop.cancelled() => None,
        };
        let Some((commit, reply)) = first else { return };
        commits.push(commit);
        replies.push(reply);
        while commits.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((c, r)) => {
                    commits.push(c);
                    replies.push(r);
                }
                Err(_) => break,
            }
        }
        let append = health.persist("event log append", &stop, || store.log.append(&commits));
        let Some(numbers) = append.await else { return };
        // Nothing is told of these events before they are durable; a failed flush is retried
        // (the events are written, so appending them again would duplicate them).
        if health
            .persist("event log flush", &stop, || store.flush())
            .await
            .is_none()
        {
            return;
        }
        if let Some(newest) = numbers.iter().flatten().max() {
            lead.send_if_modified(|l| {
                let moved = *newest > *l;
                *l = (*l).max(*newest);
                moved
            });
        }
        for (reply, n) in replies.drain(..).zip(numbers) {
            let _ = reply.send(Ok(n));
        }
        commits.clear();
    }
}

/// A consumer's position in the stream.
pub struct Follower {
    log: Arc<dyn EventLog>,
    lead: watch::Receiver<u64>,
    next: u64,
}

impl Follower {
    /// The next events (at most `limit`, without bodies), waiting until there is one. Empty
    /// when the stream has closed. A follower that has fallen below the log's trail goes on
    /// from the trail.
    pub async fn next(&mut self, limit: usize) -> Result<Vec<EventSummary>, StorageError> {
        loop {
            let lead = *self.lead.borrow_and_update();
            if lead >= self.next {
                let events = self.log.summaries(self.next, lead + 1, limit).await?;
                if let Some(last) = events.last() {
                    self.next = last.seq + 1;
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
