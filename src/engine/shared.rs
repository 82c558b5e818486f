//! What every engine part uses and none owns: configuration, storage, time, the stop tokens,
//! counters, storage health, this node's claims, and the bell that wakes the retry loop. It
//! refers to no part, so the parts (verifier, fetcher, planner, dispatcher, retry loop, sweeper)
//! each hold it, and each other, explicitly and without cycles.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::claims::Claims;
use super::health::Health;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::{Storage, WorkKey};

pub struct Shared {
    pub cfg: Config,
    pub store: Storage,
    pub clock: Clock,
    /// The hub URL sent as `rel="hub"`.
    pub hub_url: String,
    /// Cancelled when the hub starts stopping: nothing new is started.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline has passed: requests in flight are cut off.
    pub abort: CancellationToken,
    pub tracker: TaskTracker,
    pub metrics: Metrics,
    /// Storage failures: counted, reported by `/readyz`, retried with backoff.
    pub health: Arc<Health>,
    /// The work this node has claimed.
    pub claims: Arc<Claims>,
    /// Which destinations this node's planner takes, with other nodes sharing the store.
    pub owners: super::owners::Owners,
    /// Rung when a retry is stored or replayed.
    pub retry_wake: Notify,
    /// The last event whose jobs the planner has handed to the dispatcher: the log's
    /// retention does not prune past it.
    pub planned: AtomicU64,
    /// Callbacks gone since each origin hub's last relay batch.
    pub relay_gone: super::forward::GoneList,
    /// Topics whose local subscribers changed, for hub chaining.
    pub chain_changed: super::chain::Changed,
}

impl Shared {
    /// Acquires work for this node (see [`Claims::acquire`]); a failing store is retried with
    /// backoff. All `false` when the hub stops first (the work stays stored).
    pub async fn take(&self, keys: Vec<WorkKey>) -> Vec<bool> {
        let n = keys.len();
        self.health
            .persist("work claim", &self.shutdown, || {
                self.claims.acquire(keys.clone())
            })
            .await
            .unwrap_or_else(|| vec![false; n])
    }

    /// Releases work this node is done with. A failure is reported, not retried: the lease
    /// ends by itself.
    pub async fn release(&self, keys: Vec<WorkKey>) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self.claims.release(keys).await {
            self.health.failed("work release", &e);
        }
    }
}
