//! This process's heartbeat (one process holds a sled store), with its lease count.

use async_trait::async_trait;

use super::*;

#[async_trait]
impl NodeStore for SledStore {
    async fn heartbeat(&self, id: &str, address: &str, started_ms: u64, now_ms: u64) -> Result<()> {
        self.nodes.heartbeat(id, address, started_ms, now_ms);
        Ok(())
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>> {
        Ok(self.nodes.nodes(&self.leases.held(now_ms)))
    }

    async fn forget_nodes(&self, before_ms: u64) -> Result<u64> {
        Ok(self.nodes.forget(before_ms))
    }
}
