//! The event log: every committed update, numbered 1, 2, 3, … in the hub's stream.
//!
//! Numbers are dense (no gaps, across crashes and concurrent commits) and never reused: the
//! backend assigns them inside the transaction that stores the events. Each event also gets
//! its topic's own number and the id of the hub where it originated. The log keeps events for
//! [`Retention`] (age and total bytes) and knows its trail (oldest kept) and lead (newest);
//! consumers (the planner, later relays) read ranges `[from, to)` and keep named cursors.
//!
//! Documents merged for one lagging destination ([`super::DeliveryStore::put_merged`]) and
//! copies of pruned events that deliveries still need are *delivery documents*: stored beside
//! the log, never in it.

use async_trait::async_trait;
use serde::Serialize;

use super::{Event, EventSummary, NewEvent, Result, TopicState};

/// Set in the number of a delivery document made by merging events: such numbers are never
/// log sequence numbers.
pub const DELIVERY_DOC: u64 = 1 << 63;

/// The outcome of processing some pings of one topic, recorded in one atomic step: the topic's
/// new state, the new event (if any) with one delivery job per destination server of the
/// topic's subscribers, and the removal of the pings.
#[derive(Debug, Clone)]
pub struct Commit {
    pub topic: String,
    /// The topic's new state; `None` leaves it as it is (a relayed event: its origin diffed it).
    pub state: Option<TopicState>,
    pub ping_ids: Vec<u64>,
    pub event: Option<NewEvent>,
    /// Where the event goes: one job each.
    pub destinations: Vec<String>,
    /// A consumer's cursor stored in the same transaction (a follower of another hub's stream
    /// takes an event into this log and moves past it atomically).
    pub cursor: Option<(String, u64)>,
    /// A hosted topic's entry written (or deleted) with the event, under the event's topic
    /// number.
    pub hosted: Option<super::hosted::HostedWrite>,
}

/// How long the log keeps events: an event goes once it is older than `max_age_ms`, or, oldest
/// first, while the bodies kept add up to more than `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub max_age_ms: u64,
    pub max_bytes: u64,
}

impl Retention {
    /// Whether the oldest event kept, created at `created_ms`, goes now, with `kept_bytes` of
    /// bodies in the log.
    pub fn drops(&self, created_ms: u64, now_ms: u64, kept_bytes: u64) -> bool {
        created_ms.saturating_add(self.max_age_ms) < now_ms || kept_bytes > self.max_bytes
    }
}

/// Where the log stands. `trail` is the oldest event kept; when none is kept,
/// `trail == lead + 1`, so `[trail, lead]` is always the range that can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LogBounds {
    pub trail: u64,
    pub lead: u64,
    /// Events kept and the bytes of their bodies.
    pub events: u64,
    pub bytes: u64,
}

#[async_trait]
pub trait EventLog: Send + Sync {
    /// This hub's id: generated when the store was created, then stored.
    fn hub_id(&self) -> String;

    /// This store's secret key (32 random bytes, generated once, then stored): what the hub
    /// signs links and addresses with (mail confirmations, unsubscriptions, bounces). Every
    /// node sharing the store signs with the same key.
    fn hub_key(&self) -> Vec<u8>;

    /// Replaces the store's key (restoring a backup: links already mailed keep working).
    async fn restore_hub_key(&self, key: Vec<u8>) -> Result<()>;

    /// Records `commits` in one transaction: topic states, ping removals, and for every commit
    /// with an event the next number of the stream (in `commits` order) and of its topic, and
    /// its delivery jobs. Returns each commit's event as stored. Durable after the next flush.
    async fn append(&self, commits: &[Commit]) -> Result<Vec<Option<Event>>>;

    async fn bounds(&self) -> Result<LogBounds>;

    /// Events with `from <= seq < to`, in order, at most `limit`.
    async fn read(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Event>>;

    /// The same range without the bodies.
    async fn summaries(&self, from: u64, to: u64, limit: usize) -> Result<Vec<EventSummary>>;

    /// One event of the log, or a delivery document.
    async fn event(&self, seq: u64) -> Result<Option<Event>>;

    /// The newest events of `topic` (newest first), looking at most `scan` events back.
    async fn recent_for_topic(
        &self,
        topic: &str,
        limit: usize,
        scan: usize,
    ) -> Result<Vec<EventSummary>>;

    /// Removes events, oldest first and none after `up_to` (the slowest consumer that must see
    /// every event), while they are older than the
    /// retention's age or the log holds more bytes than it allows. An event that a job, retry
    /// or dead letter still refers to is kept as a delivery document. Delivery documents
    /// nothing refers to are removed when `collect` names them (unreferenced at the previous
    /// pass too); returns (events pruned, documents unreferenced now). A backend may stop after
    /// a bounded number of events; the next pass goes on.
    async fn prune(
        &self,
        retention: Retention,
        now_ms: u64,
        up_to: u64,
        collect: &[u64],
    ) -> Result<(u64, Vec<u64>)>;

    /// A consumer's stored position (the last event it has taken).
    async fn cursor(&self, consumer: &str) -> Result<Option<u64>>;
    async fn put_cursor(&self, consumer: &str, seq: u64) -> Result<()>;

    /// Delivery documents in number order, after `after` (for backups).
    async fn documents(&self, after: u64, limit: usize) -> Result<Vec<Event>>;

    /// Stores an event under its own numbers (restoring a backup): in the log, where the lead
    /// and its topic's number move past it, or as a delivery document.
    async fn restore(&self, event: Event, document: bool) -> Result<()>;
}
