//! This node's claims on pending work ([`crate::storage::ClaimStore`]): what it holds, the
//! renewal of those leases while it works, their release when done. Work reaches the engine
//! two ways and is claimed either way: handed off by this node's ingest (acquired before it is
//! worked on: another node may have claimed it from storage first) or claimed from storage in
//! pages (at start, and when the hand-off channel overflowed).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::health::Health;
use crate::clock::Clock;
use crate::storage::{Claim, ClaimStore, StorageError, WorkKey};

pub struct Claims {
    store: Arc<dyn ClaimStore>,
    node: String,
    clock: Clock,
    /// How long a claim lasts without renewal (`cluster.lease`); renewed every third of it.
    lease: Duration,
    held: Mutex<HashSet<WorkKey>>,
}

impl Claims {
    pub fn new(store: Arc<dyn ClaimStore>, node: String, clock: Clock, lease: Duration) -> Claims {
        Claims {
            store,
            node,
            clock,
            lease,
            held: Mutex::new(HashSet::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<WorkKey>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's name in claims.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A claim by this node from now for one lease.
    pub fn claim(&self) -> Claim {
        let now_ms = self.clock.now_ms();
        Claim {
            node: self.node.clone(),
            now_ms,
            until_ms: now_ms + self.lease.as_millis() as u64,
        }
    }

    /// Items a `claim_*` call gave this node.
    pub fn hold(&self, keys: impl IntoIterator<Item = WorkKey>) {
        self.held().extend(keys);
    }

    /// Takes the items for this node; `false` for each that another node holds.
    pub async fn acquire(&self, keys: Vec<WorkKey>) -> Result<Vec<bool>, StorageError> {
        let got = self.store.acquire(&self.claim(), &keys).await?;
        let mut held = self.held();
        for (k, ok) in keys.into_iter().zip(&got) {
            if *ok {
                held.insert(k);
            }
        }
        Ok(got)
    }

    /// Done with the items (finished, or left to whoever claims them next).
    pub async fn release(&self, keys: Vec<WorkKey>) -> Result<(), StorageError> {
        {
            let mut held = self.held();
            for k in &keys {
                held.remove(k);
            }
        }
        self.store.release(&self.node, &keys).await
    }

    /// Renews every lease this node holds, a third of a lease apart, until `stop`. A lease
    /// found taken by another node (this one paused past its end) is dropped from the set;
    /// the other node does that work too, which is at-least-once, as after a crash.
    pub async fn renew_until(self: Arc<Self>, health: Arc<Health>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.lease / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let keys: Vec<WorkKey> = self.held().iter().cloned().collect();
            if keys.is_empty() {
                continue;
            }
            match self.store.renew(&self.claim(), &keys).await {
                Ok(lost) => {
                    health.succeeded("lease renewal");
                    if !lost.is_empty() {
                        tracing::warn!(lost = lost.len(), "leases taken over by another node");
                        let mut held = self.held();
                        for k in lost {
                            held.remove(&k);
                        }
                    }
                }
                Err(e) => health.failed("lease renewal", &e),
            }
        }
    }
}

/// Claims pages of one kind of work while `queued()` is below [`super::MAX_CLAIMED`], handing
/// each item to `take`. `false` when it stopped because the queue was full.
pub(super) async fn claim_pages<T, C, Fut>(
    claims: &Claims,
    queued: impl Fn() -> usize,
    claim: C,
    key: impl Fn(&T) -> WorkKey,
    mut take: impl FnMut(T),
) -> Result<bool, StorageError>
where
    C: Fn(crate::storage::Claim) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StorageError>>,
{
    loop {
        if queued() >= super::MAX_CLAIMED {
            return Ok(false);
        }
        let page = claim(claims.claim()).await?;
        claims.hold(page.iter().map(&key));
        let done = page.len() < super::CLAIM_PAGE;
        for item in page {
            take(item);
        }
        if done {
            return Ok(true);
        }
    }
}
