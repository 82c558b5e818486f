//! Durable retries: records come due, are sent again through the destination's window, and are
//! rescheduled, dead-lettered or removed by [`super::deliver::settle`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::deliver::{Outcome, Prepared, settle};
use super::dispatch::Dispatcher;
use super::dispatch::send_in_window;
use super::relay_dispatch::send_batch_of;
use crate::storage::{Retry, Subscription, WorkKey};

/// Retries taken per scan.
const BATCH: usize = 256;
/// Longest sleep between scans (a new retry also wakes the loop).
const MAX_IDLE: Duration = Duration::from_secs(5);

type Key = (u64, String, String);

fn key(r: &Retry) -> Key {
    (r.event, r.topic.clone(), r.callback.clone())
}

pub async fn run(d: Arc<Dispatcher>) {
    let shared = d.shared().clone();
    let in_flight: Arc<Mutex<HashSet<Key>>> = Arc::default();
    loop {
        let now = shared.clock.now_ms();
        // Due retries nobody holds (those in flight here are this node's already).
        let claim = shared.claims.claim();
        let due = match shared.store.claims.claim_due_retries(&claim, BATCH).await {
            Ok(d) => {
                shared.claims.hold(d.iter().map(WorkKey::retry));
                d
            }
            Err(e) => {
                shared.health.failed("due retries", &e);
                Vec::new()
            }
        };
        let mut taken = Vec::with_capacity(due.len());
        for r in due {
            if in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key(&r))
            {
                taken.push(r);
            } else {
                // The same delivery is being attempted from another record: not now.
                shared.release(vec![WorkKey::retry(&r)]).await;
            }
        }
        for group in groups(taken, shared.cfg.relay.max_batch) {
            let shared2 = shared.clone();
            let d = d.clone();
            let in_flight = in_flight.clone();
            shared.tracker.spawn(async move {
                let settled = match group.as_slice() {
                    [one] => attempt(&d, one).await,
                    many => attempt_group(&d, many).await,
                };
                if let Err(e) = settled {
                    shared2.health.failed("retry settlement", &e);
                }
                // Settled (a new record, if any, is claimed when due) or left as it was.
                shared2
                    .release(group.iter().map(WorkKey::retry).collect())
                    .await;
                let mut held = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                for r in &group {
                    held.remove(&key(r));
                }
                drop(held);
                shared2.retry_wake.notify_one();
            });
        }
        let wait = match shared.store.delivery.next_retry_due().await {
            Ok(Some(due)) if due > now => shared
                .clock
                .instant_at(due)
                .min(tokio::time::Instant::now() + MAX_IDLE),
            _ => tokio::time::Instant::now() + MAX_IDLE,
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.retry_wake.notified() => {}
            _ = tokio::time::sleep_until(wait) => {}
        }
    }
}

/// Retries of the same event to the same destination go together, at most `max` (a
/// destination with a relay takes them as one batch); a forwarded delivery goes alone.
fn groups(due: Vec<Retry>, max: usize) -> Vec<Vec<Retry>> {
    let mut by: HashMap<(u64, String), Vec<Retry>> = HashMap::new();
    let mut out = Vec::new();
    for r in due {
        if r.forward.is_some() {
            out.push(vec![r]);
        } else {
            by.entry((r.event, r.destination.clone()))
                .or_default()
                .push(r);
        }
    }
    for group in by.into_values() {
        let mut group = group.into_iter().peekable();
        while group.peek().is_some() {
            out.push(group.by_ref().take(max.max(1)).collect());
        }
    }
    out
}

/// Several retries of one event to one destination: one batch when the destination has a
/// relay, one by one otherwise.
async fn attempt_group(d: &Dispatcher, rs: &[Retry]) -> crate::storage::Result<()> {
    let shared = d.shared();
    let store = &shared.store;
    let dest = d.destination(&rs[0].destination);
    let relay = super::relay_batch::relay_of(shared, &rs[0].destination).await?;
    let event = store.log.event(rs[0].event).await?;
    let (Some(relay), Some(event), None) = (relay, event, dest.window.blocked_until()) else {
        // One by one, at once (each through the window, as any retry).
        let each = rs.iter().map(|r| attempt(d, r));
        let results = futures_util::future::join_all(each).await;
        return results.into_iter().collect();
    };
    let (mut page, mut previous) = (Vec::new(), Vec::new());
    for r in rs {
        match store.subs.get(&r.topic, &r.callback).await? {
            Some(sub) => {
                page.push(sub);
                previous.push(r.clone());
            }
            // Unsubscribed since: nothing left to deliver.
            None => store.delivery.remove_retry(r).await?,
        }
    }
    if page.is_empty() {
        return Ok(());
    }
    let prepared = Prepared::new(&shared.hub_url, &event);
    let content = super::relay_batch::content(&prepared);
    send_batch_of(d, &dest, &prepared, &relay, &content, &page, &previous).await?;
    Ok(())
}

async fn attempt(d: &Dispatcher, r: &Retry) -> crate::storage::Result<()> {
    let shared = d.shared();
    let store = &shared.store;
    let dest = d.destination(&r.destination);
    if let Some(at) = dest.window.blocked_until() {
        // Dead or paused: move the retry to when the destination takes requests again rather
        // than queue on it. This is no attempt, so the count stays.
        let wait = at.saturating_duration_since(tokio::time::Instant::now());
        if wait > Duration::from_millis(50) {
            let moved = Retry {
                due_ms: shared.clock.now_ms() + wait.as_millis() as u64,
                ..r.clone()
            };
            store.delivery.put_retry(moved).await?;
            return store.delivery.remove_retry(r).await;
        }
    }
    let sub = match &r.forward {
        // Forwarded for another hub: the origin holds the subscription.
        Some(_) => forwarded_to(r),
        None => match store.subs.get(&r.topic, &r.callback).await? {
            Some(sub) => sub,
            // Unsubscribed since: nothing left to deliver.
            None => return store.delivery.remove_retry(r).await,
        },
    };
    let Some(event) = store.log.event(r.event).await? else {
        // The log keeps what a retry refers to, so this is a lost record: say so where
        // operators look, rather than drop the delivery quietly.
        tracing::error!(event = r.event, callback = %r.callback, "a retry's event is no longer stored");
        let lost = Retry {
            last_error: format!(
                "event {} is no longer stored; last error: {}",
                r.event, r.last_error
            ),
            ..r.clone()
        };
        store
            .delivery
            .dead_letter(&lost, shared.clock.now_ms())
            .await?;
        shared.metrics.dead_lettered();
        return Ok(());
    };
    let prepared = match &r.forward {
        Some(f) => Prepared::forwarded(&event, f),
        None => Prepared::new(&shared.hub_url, &event),
    };
    let outcome = send_in_window(d, &dest, &prepared, &sub, true).await;
    if let (Some(f), Outcome::Gone) = (&r.forward, &outcome) {
        shared.relay_gone.add(&f.hub, &f.topic, &r.callback);
    }
    settle(shared, &prepared, &sub, Some(r), outcome).await
}

/// The subscription a forwarded delivery stands for: no secret (the origin's signature
/// travels with the delivery) and no lease of its own here.
fn forwarded_to(r: &Retry) -> Subscription {
    Subscription {
        topic: r.topic.clone(),
        callback: r.callback.clone(),
        destination: r.destination.clone(),
        secret: None,
        lease_seconds: 0,
        expires_ms: u64::MAX,
        created_ms: 0,
    }
}
