//! Housekeeping: removes subscriptions whose lease ended and events nothing refers to.

use std::sync::Arc;

use super::Engine;

/// Events are kept this long after creation even when delivered everywhere.
const EVENT_RETENTION_MS: u64 = 10 * 60 * 1000;
const SWEEP_BATCH: usize = 10_000;

pub async fn run(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(engine.cfg.sweep_interval);
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep_once(&engine).await {
            tracing::error!(error = %e, "sweep failed");
        }
    }
}

pub async fn sweep_once(engine: &Engine) -> crate::storage::Result<()> {
    let now = engine.clock.now_ms();
    let expired = engine.store.subs.expired(now, SWEEP_BATCH).await?;
    for sub in &expired {
        engine.store.subs.remove(&sub.topic, &sub.callback).await?;
        tracing::info!(topic = %sub.topic, callback = %sub.callback, "lease expired: subscription removed");
    }
    let pruned = engine
        .store
        .publish
        .prune_events(now.saturating_sub(EVENT_RETENTION_MS))
        .await?;
    if pruned > 0 {
        tracing::debug!(pruned, "old events pruned");
    }
    Ok(())
}
