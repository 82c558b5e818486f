//! The cluster's nodes in PostgreSQL: heartbeats in `nodes`, holdings from `leases`.

use async_trait::async_trait;

use super::{PgStore, n, u};
use crate::storage::Result;
use crate::storage::nodes::{LISTED_DESTINATIONS, NodeInfo, NodeStore};

#[async_trait]
impl NodeStore for PgStore {
    async fn heartbeat(&self, id: &str, address: &str, started_ms: u64, now_ms: u64) -> Result<()> {
        self.exec(
            "INSERT INTO nodes (id, address, started_ms, heartbeat_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address,
               started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms",
            &[&id, &address, &n(started_ms), &n(now_ms)],
        )
        .await?;
        Ok(())
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>> {
        let r = self
            .rows(
                "SELECT n.id, n.address, n.started_ms, n.heartbeat_ms,
                   (SELECT count(*) FROM leases l
                     WHERE l.node = n.id AND l.until_ms >= $1 AND l.k NOT LIKE 'd:%') AS holds,
                   ARRAY(SELECT substr(l.k, 3) FROM leases l
                     WHERE l.node = n.id AND l.until_ms >= $1 AND l.k LIKE 'd:%'
                     ORDER BY l.k LIMIT $2) AS destinations
                 FROM nodes n ORDER BY n.id",
                &[&n(now_ms), &(LISTED_DESTINATIONS as i64)],
            )
            .await?;
        Ok(r.iter()
            .map(|r| NodeInfo {
                id: r.get(0),
                address: r.get(1),
                started_ms: u(r.get(2)),
                heartbeat_ms: u(r.get(3)),
                holds: r.get::<_, i64>(4) as u64,
                destinations: r.get(5),
            })
            .collect())
    }

    async fn forget_nodes(&self, before_ms: u64) -> Result<u64> {
        self.exec(
            "DELETE FROM nodes WHERE heartbeat_ms < $1",
            &[&n(before_ms)],
        )
        .await
    }
}
