//! Claimed work. Several hub nodes may share one store, so pending work (verifications, pings,
//! delivery jobs, retries) is never simply loaded: a node claims items with a lease, renews the
//! lease while it works on them and releases them when done; an item whose lease has ended is
//! claimable again (its node died). In SQL this is `UPDATE … WHERE id IN (SELECT … FOR UPDATE
//! SKIP LOCKED) RETURNING …`; the embedded backends keep a lease record per item.

use async_trait::async_trait;

use super::{Intent, Job, Ping, Result, Retry};

/// One item of pending work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkKey {
    Intent(u64),
    Ping(u64),
    Job { destination: String, event: u64 },
    Retry(RetryKey),
}

/// A retry record's identity: (due, event, topic, callback).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RetryKey {
    pub due_ms: u64,
    pub event: u64,
    pub topic: String,
    pub callback: String,
}

impl WorkKey {
    pub fn job(job: &Job) -> WorkKey {
        WorkKey::Job {
            destination: job.destination.clone(),
            event: job.event,
        }
    }

    pub fn retry(r: &Retry) -> WorkKey {
        WorkKey::Retry(RetryKey {
            due_ms: r.due_ms,
            event: r.event,
            topic: r.topic.clone(),
            callback: r.callback.clone(),
        })
    }

    /// A byte encoding, unique per item and ordered within a kind.
    pub fn encode(&self) -> Vec<u8> {
        let mut k = Vec::new();
        match self {
            WorkKey::Intent(id) => {
                k.push(b'i');
                k.extend_from_slice(&id.to_be_bytes());
            }
            WorkKey::Ping(id) => {
                k.push(b'p');
                k.extend_from_slice(&id.to_be_bytes());
            }
            WorkKey::Job { destination, event } => {
                k.push(b'j');
                k.extend_from_slice(destination.as_bytes());
                k.push(0);
                k.extend_from_slice(&event.to_be_bytes());
            }
            WorkKey::Retry(r) => {
                k.push(b'r');
                k.extend_from_slice(&r.due_ms.to_be_bytes());
                k.extend_from_slice(&r.event.to_be_bytes());
                k.extend_from_slice(r.topic.as_bytes());
                k.push(0);
                k.extend_from_slice(r.callback.as_bytes());
            }
        }
        k
    }
}

/// Who claims, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub node: String,
    pub now_ms: u64,
    pub until_ms: u64,
}

/// A lease as stored: `node \0 until_ms`.
pub(crate) fn encode_lease(c: &Claim) -> Vec<u8> {
    let mut v = c.node.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(&c.until_ms.to_be_bytes());
    v
}

/// Whose is the item whose stored lease is `lease`, as `c` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Nobody's: no lease, or it has ended.
    Free,
    Own,
    Other,
}

pub(crate) fn holder(lease: Option<&[u8]>, c: &Claim) -> Holder {
    let Some(lease) = lease else {
        return Holder::Free;
    };
    let Some((node, until)) = split_lease(lease) else {
        return Holder::Free; // unreadable: treated as ended
    };
    if node == c.node.as_bytes() {
        Holder::Own
    } else if until < c.now_ms {
        Holder::Free
    } else {
        Holder::Other
    }
}

/// (node, until_ms) of a stored lease.
pub(crate) fn split_lease(lease: &[u8]) -> Option<(&[u8], u64)> {
    let split = lease.len().checked_sub(9)?;
    let (node, rest) = lease.split_at(split);
    Some((node, u64::from_be_bytes(rest[1..].try_into().ok()?)))
}

/// The `claim_*` calls take items nobody holds (no lease, or an ended one) and skip those
/// `c.node` already holds, so that repeated calls page through new work.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Pending verifications nobody holds, claimed for `c.node`; at most `limit`, oldest first.
    async fn claim_intents(&self, c: &Claim, limit: usize) -> Result<Vec<Intent>>;
    /// Accepted pings nobody holds, claimed; at most `limit`, oldest first.
    async fn claim_pings(&self, c: &Claim, limit: usize) -> Result<Vec<Ping>>;
    /// Delivery jobs nobody holds, claimed; at most `limit`.
    async fn claim_jobs(&self, c: &Claim, limit: usize) -> Result<Vec<Job>>;
    /// Retries due at `c.now_ms` that nobody holds, claimed; at most `limit`, earliest first.
    async fn claim_due_retries(&self, c: &Claim, limit: usize) -> Result<Vec<Retry>>;
    /// Lets go of every lease `node` holds: a node that starts again releases what its
    /// previous run held, instead of waiting for the leases to end. Returns how many.
    async fn release_all(&self, node: &str) -> Result<u64>;
    /// Takes (or keeps) each item for `c.node`: `false` for one another node holds.
    async fn acquire(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<bool>>;
    /// Extends `c.node`'s leases; returns the keys it no longer holds.
    async fn renew(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<WorkKey>>;
    /// Gives the items up (done, or left for another node).
    async fn release(&self, node: &str, keys: &[WorkKey]) -> Result<()>;
}
