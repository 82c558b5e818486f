//! Storage behind domain-level traits, held as `Arc<dyn …>`.
//!
//! - [`SubscriptionStore`]: active subscriptions (indexed by topic, destination, callback) and
//!   pending verifications of intent.
//! - [`PublishStore`]: accepted pings waiting to be processed, per-topic fetch/diff state.
//! - [`EventLog`]: the numbered stream of committed updates; [`EventLog::append`] records the
//!   outcome of many pings in one transaction.
//! - [`DeliveryStore`]: one job per (event, destination) with a cursor (a backend may keep an
//!   event's jobs in one record), retry records for single failed deliveries, dead letters.
//!
//! - [`NodeStore`]: the nodes sharing the store (heartbeats, what each holds).
//!
//! Backends: [`sled_backend::SledStore`] (the default, embedded), [`postgres::PgStore`] (one
//! database shared by several hub nodes) and [`memory::MemoryStore`]. The same conformance
//! suite (`tests/it/storage_conformance/`) runs against each.

mod claims;
pub mod codec;
mod event_log;
pub mod hosted;
pub mod memory;
pub mod nodes;
pub mod postgres;
pub mod sled_backend;
mod sub_changes;

pub use claims::{Claim, ClaimStore, RetryKey, WorkKey};
pub use event_log::{Commit, DELIVERY_DOC, EventLog, LogBounds, Retention};
pub use hosted::HostedStore;
pub use nodes::{NodeInfo, NodeStore};
pub use sub_changes::SubChanges;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A storage failure, classified so that callers know whether waiting helps.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The store could not be reached or written just now (I/O, a full disk, a lost
    /// connection): the same call may succeed later.
    #[error("storage unavailable: {0}")]
    Transient(String),
    /// Another writer changed the same records, or a lease was lost: re-read and retry.
    #[error("storage conflict: {0}")]
    Conflict(String),
    /// The store refuses the operation for good (unsupported, a bug in the backend).
    #[error("storage failure: {0}")]
    Permanent(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// Whether trying the same call again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient(_) | StorageError::Conflict(_))
    }

    /// `transient`, `conflict`, `permanent` or `corrupt`: the label of metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            StorageError::Transient(_) => "transient",
            StorageError::Conflict(_) => "conflict",
            StorageError::Permanent(_) => "permanent",
            StorageError::Corrupt(_) => "corrupt",
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// An active (verified) subscription.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub topic: String,
    pub callback: String,
    /// Destination server of the callback (`scheme://host:port`).
    pub destination: String,
    pub secret: Option<String>,
    pub lease_seconds: u64,
    pub expires_ms: u64,
    pub created_ms: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("callback", &self.callback)
            .field("has_secret", &self.secret.is_some())
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntentMode {
    Subscribe,
    Unsubscribe,
    /// A relay registration: its callback speaks for every callback of its destination server
    /// (stored as a subscription to [`RELAY_TOPIC`]).
    Relay,
    Unrelay,
}

impl IntentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentMode::Subscribe => "subscribe",
            IntentMode::Unsubscribe => "unsubscribe",
            IntentMode::Relay => "relay",
            IntentMode::Unrelay => "unrelay",
        }
    }

    /// Whether it adds (or renews) a subscription or registration, rather than ending one.
    pub fn adds(self) -> bool {
        matches!(self, IntentMode::Subscribe | IntentMode::Relay)
    }

    pub fn is_relay(self) -> bool {
        matches!(self, IntentMode::Relay | IntentMode::Unrelay)
    }
}

/// The topic relay registrations are stored under, as subscriptions (lease, expiry, secret,
/// destination): no topic URL can be equal to it.
pub const RELAY_TOPIC: &str = "hubcast:relay";

/// The topic of an event that holds a batch this hub took as another hub's relay: no
/// subscription and no peer reads it; its deliveries are [`Retry`] records with a
/// [`Forward`].
pub const FORWARD_TOPIC: &str = "hubcast:forward";

/// A delivery this hub makes for another hub that registered it as a relay: what the origin
/// computed, sent byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The origin hub (the batch's `hub`), told when the callback is gone.
    pub hub: String,
    /// The origin's topic (the batch's `topic`): a gone callback is reported with a batch of
    /// that topic, whose deliveries the origin matches it against.
    #[serde(default)]
    pub topic: String,
    /// The origin's `Link` header.
    pub link: String,
    /// The origin's `X-Hub-Signature`, if the subscription has a secret.
    pub signature: Option<String>,
}

/// A (un)subscription request accepted with 202 and waiting for verification of intent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub id: u64,
    pub mode: IntentMode,
    pub topic: String,
    pub callback: String,
    pub secret: Option<String>,
    pub lease_seconds: u64,
    pub created_ms: u64,
}

impl std::fmt::Debug for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intent")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .field("topic", &self.topic)
            .field("callback", &self.callback)
            .field("has_secret", &self.secret.is_some())
            .finish()
    }
}

/// Content pushed by a publisher (fat ping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatContent {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// An accepted publish notification, durable until processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub id: u64,
    pub topic: String,
    /// `None`: a light ping (the hub fetches the topic).
    pub fat: Option<FatContent>,
    pub received_ms: u64,
}

/// What the hub remembers of a topic between fetches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// SHA-256 (hex) of the last content seen.
    pub content_hash: Option<String>,
    /// Fingerprints of the entries of the last feed seen (Atom, RSS, JSON Feed items).
    pub entries: Vec<String>,
    pub last_fetch_ms: u64,
    /// When the last fetch started: it answered every ping received before (with several
    /// nodes, one may find its pings answered by another's fetch).
    #[serde(default)]
    pub fetch_started_ms: u64,
    /// Outcome of the last fetch, for operators ("200", "304", "error: …").
    pub last_result: String,
}

/// A piece of content to distribute to every subscriber of `topic`: an entry of the event log
/// (`seq` is its number in the hub's stream), or a document merged for one lagging destination
/// (`seq` has [`DELIVERY_DOC`] set; it is no log entry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub seq: u64,
    pub topic: String,
    /// The event's number among its topic's events (1, 2, 3, …); 0 for merged documents.
    pub topic_seq: u64,
    /// Id of the hub where the update entered the network.
    pub origin: String,
    /// The event's number in its origin's stream (`seq` for an event that entered here; 0 when
    /// not recorded, by earlier versions).
    pub origin_seq: u64,
    /// The hubs the event passed through, its origin first and this hub last (empty when not
    /// recorded, by earlier versions: then it is the origin alone). A relayed event whose path
    /// already names this hub is refused, so mutual peers do not loop.
    pub path: Vec<String>,
    pub content_type: String,
    pub body: bytes::Bytes,
    pub created_ms: u64,
}

impl Event {
    pub fn summary(&self) -> EventSummary {
        EventSummary {
            seq: self.seq,
            topic: self.topic.clone(),
            topic_seq: self.topic_seq,
            origin: self.origin.clone(),
            origin_seq: self.origin_number(),
            path: self.hops(),
            content_type: self.content_type.clone(),
            created_ms: self.created_ms,
            bytes: self.body.len(),
        }
    }

    /// The hubs it passed through (see [`Event::path`]), never empty for a log entry.
    pub fn hops(&self) -> Vec<String> {
        if self.path.is_empty() {
            vec![self.origin.clone()]
        } else {
            self.path.clone()
        }
    }

    /// Its number in its origin's stream.
    pub fn origin_number(&self) -> u64 {
        if self.origin_seq == 0 {
            self.seq
        } else {
            self.origin_seq
        }
    }
}

/// What operators and planners see of an event: everything but its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventSummary {
    pub seq: u64,
    pub topic: String,
    pub topic_seq: u64,
    pub origin: String,
    /// Its number in its origin's stream.
    pub origin_seq: u64,
    /// The hubs it passed through, its origin first and this hub last.
    pub path: Vec<String>,
    pub content_type: String,
    pub created_ms: u64,
    /// Size of the body.
    pub bytes: usize,
}

/// Fan-out of one event to one destination server. `cursor` is the last callback done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub event: u64,
    pub destination: String,
    pub cursor: Option<String>,
    /// The event's topic (so a destination's backlog can be coalesced without reading events).
    #[serde(default)]
    pub topic: String,
}

impl Job {
    /// A fan-out of `event` (of `topic`) to `destination`, not started.
    pub fn new(event: u64, destination: &str, topic: &str) -> Job {
        Job {
            event,
            destination: destination.to_owned(),
            cursor: None,
            topic: topic.to_owned(),
        }
    }
}

/// A single failed delivery, to be attempted again at `due_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    pub event: u64,
    pub topic: String,
    pub callback: String,
    pub destination: String,
    /// Failed attempts so far.
    pub attempts: u32,
    pub due_ms: u64,
    pub last_error: String,
    /// Set for a delivery forwarded for another hub (its event is a [`FORWARD_TOPIC`] batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Forward>,
}

impl Retry {
    /// The dead letter `id` this retry becomes once its schedule has run out, at `failed_ms`.
    pub fn dead(&self, id: u64, failed_ms: u64) -> DeadLetter {
        DeadLetter {
            id,
            event: self.event,
            topic: self.topic.clone(),
            callback: self.callback.clone(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            failed_ms,
            forward: self.forward.clone(),
        }
    }
}

impl DeadLetter {
    /// The retry a replay starts: due at `now_ms`, no attempts counted.
    pub fn replayed(&self, now_ms: u64) -> Retry {
        Retry {
            event: self.event,
            topic: self.topic.clone(),
            callback: self.callback.clone(),
            destination: destination_of(&self.callback),
            attempts: 0,
            due_ms: now_ms,
            last_error: format!("replayed dead letter {}", self.id),
            forward: self.forward.clone(),
        }
    }
}

/// A delivery that failed on every attempt of the retry schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub event: u64,
    pub topic: String,
    pub callback: String,
    pub attempts: u32,
    pub last_error: String,
    pub failed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Forward>,
}

#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub content_type: String,
    pub body: bytes::Bytes,
    pub created_ms: u64,
    /// Set when the event comes from another hub's stream.
    pub relayed: Option<Relayed>,
}

/// Where a relayed event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub origin: String,
    pub origin_seq: u64,
    /// The hubs it passed through before this one, its origin first.
    pub path: Vec<String>,
}

impl NewEvent {
    /// The event as stored by hub `hub_id`, once the backend has numbered it.
    pub fn stored(self, seq: u64, topic: &str, topic_seq: u64, hub_id: &str) -> Event {
        let (origin, origin_seq, mut path) = match self.relayed {
            Some(r) => (r.origin, r.origin_seq, r.path),
            None => (hub_id.to_owned(), seq, Vec::new()),
        };
        path.push(hub_id.to_owned());
        Event {
            seq,
            topic: topic.to_owned(),
            topic_seq,
            origin,
            origin_seq,
            path,
            content_type: self.content_type,
            body: self.body,
            created_ms: self.created_ms,
        }
    }
}

#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Inserts or replaces the subscription of (topic, callback).
    async fn upsert(&self, sub: Subscription) -> Result<()>;
    async fn get(&self, topic: &str, callback: &str) -> Result<Option<Subscription>>;
    /// Removes it; `true` when it existed.
    async fn remove(&self, topic: &str, callback: &str) -> Result<bool>;
    async fn count_for_topic(&self, topic: &str) -> Result<u64>;
    /// Distinct destination servers with subscribers of `topic`, in order.
    async fn destinations(&self, topic: &str) -> Result<Vec<String>>;
    /// Subscriptions of `topic` at `destination` with callback after `after`, in callback order.
    async fn page(
        &self,
        topic: &str,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>>;
    /// Subscriptions whose lease ended before `now_ms`.
    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>>;
    /// (topics with subscribers, subscriptions).
    async fn totals(&self) -> Result<(u64, u64)>;
    /// Subscriptions in (topic, destination, callback) order, of `topic` only when given,
    /// starting after the subscription (topic, callback) `after`.
    async fn scan(
        &self,
        topic: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Subscription>>;
    /// Subscriptions of one callback URL, over all topics. Reads every subscription (there is
    /// no callback index): for operators, not for the delivery path.
    async fn for_callback(&self, callback: &str, limit: usize) -> Result<Vec<Subscription>>;

    async fn put_intent(&self, intent: Intent) -> Result<()>;
    async fn remove_intent(&self, id: u64) -> Result<()>;
    async fn intents(&self) -> Result<Vec<Intent>>;
}

#[async_trait]
pub trait PublishStore: Send + Sync {
    async fn put_pings(&self, pings: Vec<Ping>) -> Result<()>;
    async fn pings(&self) -> Result<Vec<Ping>>;
    async fn topic_state(&self, topic: &str) -> Result<Option<TopicState>>;
    /// Records a ping that produced nothing to distribute (e.g. a failed fetch).
    async fn drop_ping(&self, ping_id: u64, topic: &str, state: Option<TopicState>) -> Result<()>;
    /// Topic states in topic order, after `after`.
    async fn topic_states(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, TopicState)>>;
    async fn put_topic_state(&self, topic: &str, state: TopicState) -> Result<()>;
}

#[async_trait]
pub trait DeliveryStore: Send + Sync {
    async fn jobs(&self) -> Result<Vec<Job>>;
    /// The jobs of one event (stored with it by [`EventLog::append`]).
    async fn jobs_of(&self, event: u64) -> Result<Vec<Job>>;
    /// The stored job of (event, destination), if it is still pending.
    async fn job(&self, event: u64, destination: &str) -> Result<Option<Job>>;
    /// Stores the job (its cursor: a checkpoint), adding it to its event's jobs if need be.
    async fn put_job(&self, job: Job) -> Result<()>;
    /// Removes the jobs of `event` at `destinations` (done); absent ones are ignored. The
    /// engine removes the jobs of an event it has done together, in one call.
    async fn remove_jobs(&self, event: u64, destinations: &[String]) -> Result<()>;
    /// Removes every job of `event` (the engine has done them all).
    async fn remove_all_jobs(&self, event: u64) -> Result<()>;
    /// Stores a document of `topic` merged from several events for one lagging destination,
    /// with one job to deliver it there, and returns that job. The document is a delivery
    /// artefact, kept outside the log (its number has [`DELIVERY_DOC`] set); it is read back
    /// with [`EventLog::event`]. The caller removes the jobs it replaces afterwards
    /// ([`Self::remove_jobs`]), so a crash in between repeats deliveries and loses none.
    async fn put_merged(&self, destination: &str, topic: &str, event: NewEvent) -> Result<Job>;
    async fn put_retry(&self, retry: Retry) -> Result<()>;
    async fn remove_retry(&self, retry: &Retry) -> Result<()>;
    /// Retries due at or before `now_ms`, earliest first.
    async fn due_retries(&self, now_ms: u64, limit: usize) -> Result<Vec<Retry>>;
    /// When the earliest retry is due.
    async fn next_retry_due(&self) -> Result<Option<u64>>;
    async fn count_retries(&self) -> Result<u64>;
    /// Moves a retry to the dead letters.
    async fn dead_letter(&self, retry: &Retry, failed_ms: u64) -> Result<DeadLetter>;
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>>;
    async fn remove_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>>;
    async fn count_dead_letters(&self) -> Result<u64>;
    /// Stores a dead letter under its own id (restoring a backup).
    async fn put_dead_letter(&self, dead: DeadLetter) -> Result<()>;
    /// Turns a dead letter back into a retry due at `now_ms` with no attempts counted,
    /// atomically. `None` when there is no such dead letter.
    async fn replay_dead_letter(&self, id: u64, now_ms: u64) -> Result<Option<Retry>>;
    /// Retry records in due order, at most `limit`.
    async fn retries(&self, limit: usize) -> Result<Vec<Retry>>;
}

/// A backend implements every trait; the hub holds them as trait objects.
pub trait Backend:
    SubscriptionStore + PublishStore + DeliveryStore + EventLog + ClaimStore + HostedStore + NodeStore
{
}
impl<
    T: SubscriptionStore
        + PublishStore
        + DeliveryStore
        + EventLog
        + ClaimStore
        + HostedStore
        + NodeStore,
> Backend for T
{
}

/// The hub's handle on storage.
#[derive(Clone)]
pub struct Storage {
    pub subs: Arc<dyn SubscriptionStore>,
    pub publish: Arc<dyn PublishStore>,
    pub delivery: Arc<dyn DeliveryStore>,
    pub log: Arc<dyn EventLog>,
    pub claims: Arc<dyn ClaimStore>,
    /// Hosted topics and their history.
    pub hosted: Arc<dyn HostedStore>,
    /// The nodes sharing the store.
    pub nodes: Arc<dyn NodeStore>,
    /// Whether other processes may share the store (a database): then every node claims
    /// work through it, follows the log's lead as others move it, and fetches a topic only
    /// while it holds the topic's lease.
    pub shared: bool,
    /// Writes through `subs`, counted per topic.
    pub sub_changes: Arc<SubChanges>,
    ids: Arc<dyn IdSource>,
    flusher: Arc<dyn Flush>,
}

/// Unique, increasing ids (of intents, pings, dead letters) that survive restarts. They are
/// not the event log's sequence numbers, which the log assigns itself.
#[async_trait]
pub trait IdSource: Send + Sync {
    async fn next_id(&self) -> Result<u64>;
    /// Makes every later id greater than `id` (after restoring records that carry ids).
    async fn advance_past(&self, id: u64) -> Result<()>;
}

#[async_trait]
pub trait Flush: Send + Sync {
    /// Makes every earlier write durable.
    async fn flush(&self) -> Result<()>;
}

impl Storage {
    pub fn new<B: Backend + IdSource + Flush + 'static>(backend: Arc<B>) -> Storage {
        Storage::of(backend, false)
    }

    /// A store other processes share (see [`Storage::shared`]).
    pub fn new_shared<B: Backend + IdSource + Flush + 'static>(backend: Arc<B>) -> Storage {
        Storage::of(backend, true)
    }

    fn of<B: Backend + IdSource + Flush + 'static>(backend: Arc<B>, shared: bool) -> Storage {
        let sub_changes = Arc::new(SubChanges::default());
        Storage {
            subs: Arc::new(sub_changes::Watched {
                inner: backend.clone(),
                changes: sub_changes.clone(),
            }),
            sub_changes,
            publish: backend.clone(),
            delivery: backend.clone(),
            log: backend.clone(),
            claims: backend.clone(),
            hosted: backend.clone(),
            nodes: backend.clone(),
            shared,
            ids: backend.clone(),
            flusher: backend,
        }
    }

    pub async fn next_id(&self) -> Result<u64> {
        self.ids.next_id().await
    }

    pub async fn advance_ids_past(&self, id: u64) -> Result<()> {
        self.ids.advance_past(id).await
    }

    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush().await
    }
}

/// A new hub id: 128 random bits in hex.
pub(crate) fn new_hub_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Key of a subscription in the (topic, destination, callback) index.
/// The (topic, destination, callback) parts of a [`sub_key`].
pub(crate) fn split_sub_key(key: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut parts = key.splitn(3, |b| *b == 0);
    Some((parts.next()?, parts.next()?, parts.next()?))
}

pub(crate) fn sub_key(topic: &str, destination: &str, callback: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + destination.len() + callback.len() + 2);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(destination.as_bytes());
    k.push(0);
    k.extend_from_slice(callback.as_bytes());
    k
}

/// The prefix of every [`sub_key`] of `topic`.
pub(crate) fn topic_prefix(topic: &str) -> Vec<u8> {
    let mut p = topic.as_bytes().to_vec();
    p.push(0);
    p
}

/// Where [`SubscriptionStore::scan`] reads: the key prefix (one topic's, or everything) and
/// the bound to start from (just after `after`, or the prefix itself).
pub(crate) fn scan_range(
    topic: Option<&str>,
    after: Option<(&str, &str)>,
) -> (Vec<u8>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let prefix = topic.map(topic_prefix).unwrap_or_default();
    let start = match after {
        Some((t, c)) => Bound::Excluded(sub_key(t, &destination_of(c), c)),
        None => Bound::Included(prefix.clone()),
    };
    (prefix, start)
}

/// Destination of a stored callback (callbacks are stored normalised).
pub(crate) fn destination_of(callback: &str) -> String {
    crate::urls::destination_of_endpoint(callback)
}
