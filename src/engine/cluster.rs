//! This node among the others sharing its store: its heartbeat (every store; the status page
//! lists the nodes) and, when the store is shared, following the log's lead as other nodes move
//! it (their events reach this node's planner) and rescans for work nobody holds: what a dead
//! node held becomes claimable when its leases end, and is taken up here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Engine;

/// Nodes silent this long are dropped from the list.
const FORGET_AFTER: Duration = Duration::from_secs(3_600);

pub async fn run(engine: Arc<Engine>, overflow: Arc<AtomicBool>) {
    let shared = engine.shared.clone();
    let times = shared.cfg.cluster;
    let started_ms = shared.clock.now_ms();
    let node = shared.claims.node().to_owned();
    let store = shared.store.clone();
    let mut heartbeat = tokio::time::interval(times.heartbeat_interval);
    let mut poll = tokio::time::interval(times.poll_interval);
    let mut rescan = tokio::time::interval(times.rescan_interval);
    for t in [&mut heartbeat, &mut poll, &mut rescan] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = heartbeat.tick() => {
                let now = shared.clock.now_ms();
                if let Err(e) = store.nodes.heartbeat(&node, &shared.hub_url, started_ms, now).await {
                    shared.health.failed("node heartbeat", &e);
                    continue;
                }
                if store.shared {
                    // Live: a heartbeat within three intervals.
                    let recent = now.saturating_sub(3 * times.heartbeat_interval.as_millis() as u64);
                    match store.nodes.nodes(now).await {
                        Ok(nodes) => shared.owners.set_live(
                            nodes.into_iter().filter(|n| n.heartbeat_ms >= recent).map(|n| n.id).collect(),
                        ),
                        Err(e) => shared.health.failed("node heartbeat", &e),
                    }
                }
                let forget = now.saturating_sub(FORGET_AFTER.as_millis() as u64);
                if let Err(e) = store.nodes.forget_nodes(forget).await {
                    shared.health.failed("node heartbeat", &e);
                }
            }
            _ = poll.tick(), if store.shared => {
                match store.log.bounds().await {
                    Ok(b) => engine.stream.observe(b.lead),
                    Err(e) => shared.health.failed("event log lead", &e),
                }
            }
            _ = rescan.tick(), if store.shared => {
                match engine.reload().await {
                    Ok(all) => {
                        if !all {
                            overflow.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(e) => shared.health.failed("rescan of pending work", &e),
                }
            }
        }
    }
}
