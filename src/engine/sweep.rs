//! Housekeeping: removes subscriptions whose lease ended, and applies the event log's
//! retention (`[events]` in the configuration).

use std::sync::Arc;

use super::shared::Shared;

const SWEEP_BATCH: usize = 10_000;

pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.sweep_interval);
    // Delivery documents nothing referred to at the previous sweep: removed if still so.
    let mut unreferenced = Vec::new();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep_once(&shared, &unreferenced).await {
            Ok(now_unreferenced) => {
                unreferenced = now_unreferenced;
                shared.health.succeeded("sweep");
            }
            Err(e) => shared.health.failed("sweep", &e),
        }
    }
}

/// One pass; returns the delivery documents nothing refers to now (collected next time if
/// still unreferenced: a retry being rescheduled is briefly invisible to one scan).
pub async fn sweep_once(shared: &Shared, collect: &[u64]) -> crate::storage::Result<Vec<u64>> {
    let now = shared.clock.now_ms();
    let store = &shared.store;
    let expired = store.subs.expired(now, SWEEP_BATCH).await?;
    for sub in &expired {
        if sub.topic == super::chain::CHAIN_TOPIC
            && store.subs.count_for_topic(&sub.callback).await? > 0
        {
            // An upstream subscription that lapsed while local subscribers remain: asked for
            // again rather than forgotten.
            super::chain::lapsed(shared, sub).await?;
            continue;
        }
        store.subs.remove(&sub.topic, &sub.callback).await?;
        tracing::info!(topic = %sub.topic, callback = %sub.callback, "lease expired: subscription removed");
    }
    // Never past the planner: it reads the jobs of each event it follows.
    let planned = shared.planned.load(std::sync::atomic::Ordering::Relaxed);
    let (pruned, unreferenced) = store
        .log
        .prune(shared.cfg.retention, now, planned, collect)
        .await?;
    if pruned > 0 {
        tracing::debug!(pruned, "events past retention pruned");
    }
    if shared.cfg.hosted.enabled {
        prune_hosted(shared, now).await?;
    }
    Ok(unreferenced)
}

/// Hosted topics' retention: each topic's own numbers (entries kept, age of the last update).
async fn prune_hosted(shared: &Shared, now: u64) -> crate::storage::Result<()> {
    let hosted = &shared.store.hosted;
    let mut after: Option<String> = None;
    loop {
        let topics = hosted.hosted_topics(after.as_deref(), 256).await?;
        let Some(last) = topics.last() else { break };
        after = Some(last.name.clone());
        for t in &topics {
            if t.max_entries == 0 && t.max_age_ms == 0 {
                continue;
            }
            let older_than = match t.max_age_ms {
                0 => 0,
                age => now.saturating_sub(age),
            };
            let pruned = hosted
                .prune_hosted(&t.name, older_than, SWEEP_BATCH)
                .await?;
            if pruned > 0 {
                tracing::debug!(topic = %t.name, pruned, "hosted entries past retention pruned");
            }
        }
    }
    Ok(())
}
