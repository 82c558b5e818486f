//! The nodes sharing a store: each writes a heartbeat (its id, its address, when it started),
//! and any node can list them all with what each one holds now (from the leases). An embedded
//! store has one node, kept in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use super::Result;

/// A hub node, as its heartbeats and leases tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub id: String,
    /// Where it listens (its `server.listen`).
    pub address: String,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    /// Items of work it holds leases on now.
    pub holds: u64,
    /// Destination servers it delivers to now (at most [`LISTED_DESTINATIONS`]).
    pub destinations: Vec<String>,
}

/// Most destinations listed per node.
pub const LISTED_DESTINATIONS: usize = 20;

#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Records that node `id` (listening at `address`, started at `started_ms`) is alive.
    async fn heartbeat(&self, id: &str, address: &str, started_ms: u64, now_ms: u64) -> Result<()>;
    /// Every node with a heartbeat, by id, with what its leases (unexpired at `now_ms`) hold.
    async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>>;
    /// Forgets nodes whose last heartbeat is older than `before_ms`; returns how many.
    async fn forget_nodes(&self, before_ms: u64) -> Result<u64>;
}

/// The nodes of an embedded store (one process): heartbeats in memory.
#[derive(Default)]
pub struct NodeTable {
    nodes: Mutex<BTreeMap<String, (String, u64, u64)>>,
}

impl NodeTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, u64, u64)>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn heartbeat(&self, id: &str, address: &str, started_ms: u64, now_ms: u64) {
        self.lock()
            .insert(id.to_owned(), (address.to_owned(), started_ms, now_ms));
    }

    /// The nodes, with the counts of items each holds (from the store's leases).
    pub fn nodes(&self, holds: &std::collections::HashMap<String, u64>) -> Vec<NodeInfo> {
        self.lock()
            .iter()
            .map(|(id, (address, started_ms, heartbeat_ms))| NodeInfo {
                id: id.clone(),
                address: address.clone(),
                started_ms: *started_ms,
                heartbeat_ms: *heartbeat_ms,
                holds: holds.get(id).copied().unwrap_or(0),
                destinations: Vec::new(),
            })
            .collect()
    }

    pub fn forget(&self, before_ms: u64) -> u64 {
        let mut g = self.lock();
        let n = g.len();
        g.retain(|_, (_, _, hb)| *hb >= before_ms);
        (n - g.len()) as u64
    }
}
