//! Claimed work. Several hub nodes may share one store, so pending work (verifications, pings,
//! delivery jobs, retries) is never simply loaded: a node claims items with a lease, renews the
//! lease while it works on them and releases them when done; an item whose lease has ended is
//! claimable again (its node died). In SQL this is `UPDATE … WHERE id IN (SELECT … FOR UPDATE
//! SKIP LOCKED) RETURNING …`; the embedded backends keep their leases in memory
//! ([`LeaseTable`]).

use async_trait::async_trait;

use super::{Intent, Job, Ping, Result, Retry};

/// One item of pending work.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkKey {
    Intent(u64),
    Ping(u64),
    Job {
        destination: String,
        event: u64,
    },
    Retry(RetryKey),
    /// A topic's fetching and diffing: with several nodes, one at a time per topic.
    Topic(String),
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
}

/// Who claims, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub node: String,
    pub now_ms: u64,
    pub until_ms: u64,
}

/// The leases of an embedded store. A sled store is opened by one process at a time and a
/// memory store lives in one, so their leases only matter while that process runs: they are
/// kept in memory (no disk write per claim), and a restart starts with none, which is what a
/// restarted node wants. A shared SQL store keeps them in its rows instead.
#[derive(Default)]
pub struct LeaseTable {
    leases: std::sync::Mutex<std::collections::HashMap<WorkKey, (String, u64)>>,
}

impl LeaseTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<WorkKey, (String, u64)>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the lease of one item for `c.node` if nobody holds it (no lease, or an ended one,
    /// `c.node`'s own included) or, with `own_too`, if `c.node` holds it now.
    pub fn take(&self, c: &Claim, key: &WorkKey, own_too: bool) -> bool {
        let mut leases = self.lock();
        let free = match leases.get(key) {
            None => true,
            Some((_, until)) if *until < c.now_ms => true,
            Some((node, _)) => own_too && *node == c.node,
        };
        if free {
            leases.insert(key.clone(), (c.node.clone(), c.until_ms));
        }
        free
    }

    pub fn acquire(&self, c: &Claim, keys: &[WorkKey]) -> Vec<bool> {
        keys.iter().map(|k| self.take(c, k, true)).collect()
    }

    /// Extends `c.node`'s leases on `keys`; returns those it does not hold (released since,
    /// or taken over by another node after they ended). A missing lease is not created.
    pub fn renew(&self, c: &Claim, keys: &[WorkKey]) -> Vec<WorkKey> {
        let mut leases = self.lock();
        let mut lost = Vec::new();
        for k in keys {
            match leases.get_mut(k) {
                Some((node, until)) if *node == c.node => *until = c.until_ms,
                _ => lost.push(k.clone()),
            }
        }
        lost
    }

    pub fn release(&self, node: &str, keys: &[WorkKey]) {
        let mut leases = self.lock();
        for k in keys {
            if leases.get(k).is_some_and(|(n, _)| n == node) {
                leases.remove(k);
            }
        }
    }

    /// How many unexpired leases each node holds.
    pub fn held(&self, now_ms: u64) -> std::collections::HashMap<String, u64> {
        let mut out = std::collections::HashMap::new();
        for (node, until) in self.lock().values() {
            if *until >= now_ms {
                *out.entry(node.clone()).or_default() += 1;
            }
        }
        out
    }

    pub fn release_all(&self, node: &str) -> u64 {
        let mut leases = self.lock();
        let before = leases.len();
        leases.retain(|_, (n, _)| n != node);
        (before - leases.len()) as u64
    }
}

/// The `claim_*` calls take items nobody holds (no lease, or an ended one) and skip those
/// `c.node` already holds, so that repeated calls page through new work.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Pending verifications nobody holds, claimed for `c.node`; at most `limit`, oldest first.
    async fn claim_intents(&self, c: &Claim, limit: usize) -> Result<Vec<Intent>>;
    /// Accepted pings nobody holds, claimed; at most `limit`, oldest first.
    async fn claim_pings(&self, c: &Claim, limit: usize) -> Result<Vec<Ping>>;
    /// Light pings of `topic` received at or before `received_by` that nobody holds, claimed;
    /// at most `limit`, oldest first: those a fetch that started then answers.
    async fn claim_topic_pings(
        &self,
        c: &Claim,
        topic: &str,
        received_by: u64,
        limit: usize,
    ) -> Result<Vec<Ping>>;
    /// Delivery jobs nobody holds, claimed; at most `limit`: those of events up to `up_to`
    /// (the jobs of later events are the node's planner's to hand out as it reaches them) and
    /// those of delivery documents.
    async fn claim_jobs(&self, c: &Claim, up_to: u64, limit: usize) -> Result<Vec<Job>>;
    /// Retries due at `c.now_ms` that nobody holds, claimed; at most `limit`, earliest first.
    async fn claim_due_retries(&self, c: &Claim, limit: usize) -> Result<Vec<Retry>>;
    /// Lets go of every lease `node` holds: a node that starts again releases what its
    /// previous run held, instead of waiting for the leases to end. Returns how many.
    async fn release_all(&self, node: &str) -> Result<u64>;
    /// Takes (or keeps) each item for `c.node`: `false` for one another node holds.
    async fn acquire(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<bool>>;
    /// Extends `c.node`'s leases; returns the keys it no longer holds (released, or taken over
    /// after they ended). Never creates a lease.
    async fn renew(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<WorkKey>>;
    /// Gives the items up (done, or left for another node).
    async fn release(&self, node: &str, keys: &[WorkKey]) -> Result<()>;
}
