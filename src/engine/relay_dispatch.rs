//! A destination's deliveries through its registered relay: a job's subscribers read in pages
//! of `relay.max_batch`, each page one batch ([`super::relay_batch`]) through the destination's
//! window, a few at once, the job's cursor stored behind the completed prefix; and one batch of
//! retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;

use super::deliver::{Outcome, Prepared, signal};
use super::dispatch::{Destination, Dispatcher, remember};
use super::history::DeliveryRecord;
use super::snapshot::Page;
use crate::metrics;
use crate::storage::{Job, Retry, StorageError, Subscription};

/// Runs a job as relay batches of at most `relay.max_batch` deliveries, one after the other
/// through the destination's window, its cursor stored after each. `true` when done; `false`
/// when the hub stops first (the cursor is where the next batch starts).
pub(super) async fn run_batches(
    d: &Arc<Dispatcher>,
    dest: &Destination,
    prepared: &Prepared,
    relay: Subscription,
    kept: Option<Page>,
    job: &mut Job,
) -> Result<bool, StorageError> {
    let store = &d.shared().store;
    let max = d.batches().max_batch;
    let content = super::relay_batch::content(prepared);
    let now_ms = d.shared().clock.now_ms();
    if let Some(subs) = kept
        .as_ref()
        .and_then(|p| p.current(&store.sub_changes, &prepared.topic, now_ms))
        .filter(|subs| subs.len() <= max)
    {
        let page: Vec<Subscription> = subs.to_vec();
        return send_batch_of(d, dest, prepared, &relay, &content, &page, &[]).await;
    }
    // Up to BATCHES_IN_FLIGHT batches at once (each through the window); the cursor is
    // stored past the completed prefix while the next batches are on their way.
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let mut read_after = job.cursor.clone();
    let mut exhausted = false;
    let mut checkpoint: Option<futures_util::future::BoxFuture<'_, Result<(), StorageError>>> =
        None;
    let mut done_to: Option<String> = None;
    loop {
        while !exhausted && in_flight.len() < BATCHES_IN_FLIGHT {
            if d.shared().shutdown.is_cancelled() {
                break;
            }
            let page = store
                .subs
                .page(&prepared.topic, &dest.name, read_after.as_deref(), max)
                .await?;
            exhausted = page.len() < max;
            let Some(last) = page.last() else {
                break;
            };
            read_after = Some(last.callback.clone());
            let (relay, content) = (&relay, &content);
            in_flight.push_back(async move {
                let sent = send_batch_of(d, dest, prepared, relay, content, &page, &[]).await;
                (sent, page.last().map(|s| s.callback.clone()))
            });
        }
        tokio::select! {
            next = in_flight.next() => match next {
                Some((Ok(true), last)) => done_to = last,
                Some((Ok(false), _)) | None => break,
                Some((Err(e), _)) => {
                    if let Some(c) = checkpoint.take() {
                        c.await?;
                    }
                    return Err(e);
                }
            },
            r = async { checkpoint.as_mut().expect("guarded").await }, if checkpoint.is_some() => {
                checkpoint = None;
                r?;
            }
        }
        if checkpoint.is_none() && done_to.is_some() && !(exhausted && in_flight.is_empty()) {
            job.cursor = done_to.take();
            let at = job.clone();
            checkpoint = Some(Box::pin(async move {
                store.delivery.put_job(at).await?;
                store.flush().await
            }));
        }
    }
    if let Some(c) = checkpoint {
        c.await?;
    }
    if d.shared().shutdown.is_cancelled() || !in_flight.is_empty() {
        // Stopping: what was not sent stays pending from the stored cursor.
        if let Some(at) = done_to {
            job.cursor = Some(at);
            store.delivery.put_job(job.clone()).await?;
            store.flush().await?;
        }
        return Ok(false);
    }
    Ok(exhausted)
}

/// A destination's batches to its relay, as they happen.
#[derive(Debug, Default)]
pub struct BatchCounts {
    taken: AtomicU64,
    failed: AtomicU64,
    split: AtomicU64,
    deliveries: AtomicU64,
}

/// [`BatchCounts`] at one moment, for the admin API and the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchTally {
    /// Batches the relay took (2xx).
    pub taken: u64,
    /// Batches that failed (each delivery then a retry of its own).
    pub failed: u64,
    /// Batches refused as too large (413) and sent again as two halves.
    pub split: u64,
    /// Deliveries in the batches taken.
    pub deliveries: u64,
}

impl BatchCounts {
    pub fn tally(&self) -> BatchTally {
        BatchTally {
            taken: self.taken.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            split: self.split.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
        }
    }
}

/// A `413` answer: the relay takes no batch this large.
fn too_large(outcome: &super::relay_batch::BatchOutcome) -> bool {
    matches!(
        outcome,
        super::relay_batch::BatchOutcome::Failed(super::client::Failure::Status(413))
    )
}

/// Batches one job keeps on their way to a destination's relay at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// One batch through the window, settled as a whole (a job's caller moves its cursor). The
/// deliveries may be retries: `previous[i]`, if any, is the retry record `page[i]` is
/// attempted from, replaced by the outcome. `false`: not sent (stopping).
pub(super) async fn send_batch_of(
    d: &Dispatcher,
    dest: &Destination,
    prepared: &Prepared,
    relay: &Subscription,
    content: &str,
    page: &[Subscription],
    previous: &[Retry],
) -> Result<bool, StorageError> {
    let now = d.shared().clock.now_ms();
    let store = &d.shared().store;
    let mut live = Vec::with_capacity(page.len());
    let mut live_previous = Vec::with_capacity(page.len());
    for (i, sub) in page.iter().enumerate() {
        let prev = previous.get(i);
        if sub.expires_ms >= now {
            live.push(sub);
            live_previous.push(prev);
            continue;
        }
        d.shared()
            .metrics
            .delivery(metrics::Delivery::Expired, None);
        store.subs.remove(&sub.topic, &sub.callback).await?;
        if let Some(prev) = prev {
            store.delivery.remove_retry(prev).await?;
        }
    }
    if live.is_empty() {
        return Ok(true);
    }
    let stopping = &d.shared().shutdown;
    let slot = tokio::select! {
        biased;
        _ = stopping.cancelled() => return Ok(false),
        slot = dest.window.acquire() => slot,
    };
    let places = tokio::select! {
        biased;
        _ = stopping.cancelled() => return Ok(false),
        p = d.global().acquire(&dest.in_flight) => p,
    };
    let body = d
        .batches()
        .body(&d.shared().hub_url, prepared, content, &live);
    let started = tokio::time::Instant::now();
    let outcome = tokio::select! {
        o = d.batches().send(relay, body) => o,
        _ = d.shared().abort.cancelled() => return Ok(false),
    };
    drop(places);
    let took = started.elapsed();
    if too_large(&outcome) && live.len() > 1 {
        // The relay takes smaller batches: each half goes again as a batch of its own (down
        // to single deliveries, which then fail like any other).
        drop(slot);
        d.shared().metrics.batch_split();
        dest.batches.split.fetch_add(1, Ordering::Relaxed);
        tracing::info!(relay = %relay.callback, deliveries = live.len(),
            "the relay refused a batch as too large (413): sending it as two halves");
        let subs: Vec<Subscription> = live.iter().map(|s| (*s).clone()).collect();
        let prev: Vec<Retry> = live_previous
            .iter()
            .flatten()
            .map(|r| (*r).clone())
            .collect();
        let mid = subs.len() / 2;
        let (first, second) = subs.split_at(mid);
        let (prev_first, prev_second) = prev.split_at(mid.min(prev.len()));
        for (half, prev) in [(first, prev_first), (second, prev_second)] {
            let sent = Box::pin(send_batch_of(d, dest, prepared, relay, content, half, prev));
            if !sent.await? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let n = live.len() as u64;
    let as_one = match &outcome {
        super::relay_batch::BatchOutcome::Taken { .. } => Outcome::Delivered,
        super::relay_batch::BatchOutcome::Failed(f) => Outcome::Failed(f.clone()),
    };
    match signal(&as_one) {
        Some(s) => slot.done(s),
        None => drop(slot),
    }
    match outcome {
        super::relay_batch::BatchOutcome::Taken { gone } => {
            d.shared()
                .metrics
                .batch(metrics::Delivery::Delivered, n, took);
            dest.batches.taken.fetch_add(1, Ordering::Relaxed);
            dest.batches.deliveries.fetch_add(n, Ordering::Relaxed);
            for g in &gone {
                if let Some(sub) = live.iter().find(|s| s.callback == *g) {
                    tracing::info!(topic = %sub.topic, callback = %sub.callback,
                        relay = %relay.callback, "gone (the relay says): subscription removed");
                    store.subs.remove(&sub.topic, &sub.callback).await?;
                }
            }
            for prev in live_previous.iter().flatten() {
                store.delivery.remove_retry(prev).await?;
            }
        }
        super::relay_batch::BatchOutcome::Failed(f) => {
            d.shared().metrics.batch(metrics::Delivery::Failed, n, took);
            dest.batches.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(relay = %relay.callback, failure = %f, deliveries = n,
                "relay batch failed; a retry for each delivery");
            super::relay_batch::retry_each(d.shared(), prepared, &live, &live_previous, &f).await?;
        }
    }
    match &as_one {
        // Taken: noted in the histories already followed (a relay's destination has many
        // callbacks; each would push an older one out).
        Outcome::Delivered => {
            let at_ms = d.shared().clock.now_ms();
            let latency_ms = Some((took.as_secs_f64() * 10_000.0).round() / 10.0);
            d.history()
                .record_known(live.iter().map(|s| s.callback.as_str()), || {
                    DeliveryRecord {
                        at_ms,
                        event: prepared.event,
                        topic: prepared.topic.clone(),
                        outcome: "delivered",
                        class: None,
                        error: None,
                        latency_ms,
                    }
                });
        }
        _ => {
            for sub in &live {
                remember(d, dest, prepared, sub, &as_one, took);
            }
        }
    }
    Ok(true)
}
