//! This hub as another hub's relay: a batch taken at `POST /relay/batch` is stored as one
//! event of [`FORWARD_TOPIC`] (the content once) and one [`Retry`] record per delivery, due at
//! once, carrying the origin's `Link` header and signature ([`Forward`]). The retry loop then
//! sends each through the destination's window and retry schedule, like any other delivery,
//! and a delivery that exhausts the schedule is a dead letter, replayable one by one.
//!
//! Callbacks that answer `410 Gone` are remembered per origin hub and listed in the answer to
//! that hub's next batch (`{"gone": [...]}`), so the origin removes those subscriptions.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::bounded_set::BoundedSet;
use super::shared::Shared;
use super::stream::{CommitError, EventStream};
use crate::storage::{Commit, FORWARD_TOPIC, Forward, NewEvent, Relayed, Retry, StorageError};

/// Gone callbacks remembered (over all origin hubs and topics) until a batch lists them; beyond
/// this the oldest are forgotten (the origin learns of them again on a later delivery).
const MAX_GONE: usize = 100_000;
/// Most gone callbacks in one answer (a hub reads a batch's answer to a bound: 64 KiB for
/// hubcast).
const MAX_ANSWERED: usize = 256;

/// A batch as validated by the HTTP door.
#[derive(Debug, Clone)]
pub struct TakenBatch {
    /// The origin hub, as the batch names it.
    pub hub: String,
    /// `ORIGIN:SEQ` of the event.
    pub event: String,
    pub topic: String,
    pub content_type: String,
    pub link: String,
    pub body: Bytes,
    /// Callback and the signature its subscriber is to receive.
    pub deliveries: Vec<(String, Option<String>)>,
    /// SHA-256 of the batch as received: a batch taken before (a resend after a lost answer,
    /// or a replay) is answered again without being stored twice.
    pub digest: [u8; 32],
}

/// Batches remembered as taken (their digests), newest last.
const TAKEN_REMEMBERED: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the hub is stopping; send the batch again shortly")]
    Stopping,
}

impl From<CommitError> for ForwardError {
    fn from(e: CommitError) -> ForwardError {
        match e {
            CommitError::Storage(e) => ForwardError::Storage(e),
            CommitError::Stopping => ForwardError::Stopping,
        }
    }
}

/// Callbacks that answered `410 Gone` to forwarded deliveries, by origin hub and topic (the
/// origin removes a gone callback only when the batch answered lists it). The newest
/// [`MAX_GONE`] are kept, over all hubs and topics.
pub struct GoneList {
    set: Mutex<BoundedSet<(String, String, String)>>,
}

impl Default for GoneList {
    fn default() -> GoneList {
        GoneList {
            set: Mutex::new(BoundedSet::new(MAX_GONE)),
        }
    }
}

impl GoneList {
    pub fn add(&self, hub: &str, topic: &str, callback: &str) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.insert((hub.to_owned(), topic.to_owned(), callback.to_owned()));
    }

    /// The gone callbacks of the hub's topic among `listed` (the batch being answered: the
    /// hub acts on those only), at most [`MAX_ANSWERED`]; forgotten here once taken, the
    /// others kept for a later batch.
    pub fn take(&self, hub: &str, topic: &str, listed: &HashSet<&str>) -> Vec<String> {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if set.is_empty() {
            return Vec::new();
        }
        let mut taken = Vec::new();
        for callback in listed {
            if taken.len() >= MAX_ANSWERED {
                break;
            }
            let key = (hub.to_owned(), topic.to_owned(), (*callback).to_owned());
            if set.contains(&key) {
                set.remove(&key);
                taken.push(key.2);
            }
        }
        taken.sort();
        taken
    }
}

pub struct Forwarder {
    shared: Arc<Shared>,
    stream: Arc<EventStream>,
    /// Digests of the batches taken lately (in memory: after a restart a resend of a batch
    /// taken before is taken again).
    taken: Mutex<BoundedSet<[u8; 32]>>,
}

impl Forwarder {
    pub fn new(shared: Arc<Shared>, stream: Arc<EventStream>) -> Forwarder {
        Forwarder {
            shared,
            stream,
            taken: Mutex::new(BoundedSet::new(TAKEN_REMEMBERED)),
        }
    }

    fn seen(&self, digest: &[u8; 32]) -> bool {
        let g = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        g.contains(digest)
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut g = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(digest);
    }

    /// Stores the batch durably (its event, then a due delivery record for each callback) and
    /// wakes the retry loop; returns the callbacks of the batch's topic that have gone since
    /// the origin's last batch of that topic. An error leaves nothing to deliver: the origin sends the batch again.
    pub async fn take(&self, batch: TakenBatch) -> Result<Vec<String>, ForwardError> {
        let gone = {
            let listed: HashSet<&str> = batch.deliveries.iter().map(|(c, _)| c.as_str()).collect();
            self.shared
                .relay_gone
                .take(&batch.hub, &batch.topic, &listed)
        };
        if self.seen(&batch.digest) {
            self.shared.metrics.batch_repeated();
            tracing::info!(hub = %batch.hub, event = %batch.event,
                "relay batch taken before: answered again, not stored twice");
            return Ok(gone);
        }
        let now = self.shared.clock.now_ms();
        let relayed = batch
            .event
            .rsplit_once(':')
            .and_then(|(origin, seq)| Some((origin, seq.parse::<u64>().ok()?)))
            .filter(|(origin, _)| !origin.is_empty())
            .map(|(origin, origin_seq)| Relayed {
                origin: origin.to_owned(),
                origin_seq,
                path: vec![origin.to_owned()],
            });
        let commit = Commit {
            topic: FORWARD_TOPIC.to_owned(),
            state: None,
            ping_ids: Vec::new(),
            event: Some(NewEvent {
                content_type: batch.content_type.clone(),
                body: batch.body.clone(),
                created_ms: now,
                relayed,
            }),
            destinations: Vec::new(),
            cursor: None,
            hosted: None,
        };
        let seq =
            self.stream.commit(commit, None).await?.ok_or_else(|| {
                StorageError::Permanent("the batch's event was not appended".into())
            })?;
        if !self.stream.durable(seq).await {
            return Err(ForwardError::Stopping);
        }
        let store = &self.shared.store;
        let n = batch.deliveries.len();
        for (callback, signature) in batch.deliveries {
            let retry = Retry {
                event: seq,
                topic: FORWARD_TOPIC.to_owned(),
                destination: crate::urls::destination_of_endpoint(&callback),
                callback,
                attempts: 0,
                due_ms: now,
                last_error: String::new(),
                forward: Some(Forward {
                    hub: batch.hub.clone(),
                    topic: batch.topic.clone(),
                    link: batch.link.clone(),
                    signature,
                }),
            };
            store.delivery.put_retry(retry).await?;
        }
        store.flush().await?;
        self.remember(batch.digest);
        self.shared.metrics.forwarded(n as u64);
        self.shared.retry_wake.notify_one();
        tracing::debug!(hub = %batch.hub, event = %batch.event, deliveries = n, "relay batch taken");
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_callbacks_wait_for_a_batch_that_lists_them() {
        let g = GoneList::default();
        let listed = |cs: &[&'static str]| cs.iter().copied().collect::<HashSet<&str>>();
        g.add("http://o/", "http://t/a", "http://d/1");
        g.add("http://o/", "http://t/a", "http://d/1");
        g.add("http://o/", "http://t/a", "http://d/3");
        g.add("http://o/", "http://t/b", "http://d/2");
        let all = listed(&["http://d/1", "http://d/2", "http://d/3"]);
        assert!(g.take("http://o/", "http://t/c", &all).is_empty());
        assert!(g.take("http://other/", "http://t/a", &all).is_empty());
        assert_eq!(
            g.take("http://o/", "http://t/a", &listed(&["http://d/1"])),
            vec!["http://d/1"],
            "only what the batch lists"
        );
        assert!(
            g.take("http://o/", "http://t/a", &listed(&["http://d/1"]))
                .is_empty()
        );
        assert_eq!(
            g.take("http://o/", "http://t/a", &all),
            vec!["http://d/3"],
            "kept"
        );
        assert_eq!(g.take("http://o/", "http://t/b", &all), vec!["http://d/2"]);
    }
}
