//! Per-destination fan-out. Each destination server (callback scheme, host and port) has one
//! queue of jobs (a FIFO per topic, topics taking turns), one worker and one adaptive
//! concurrency window ([`super::window`]); a global cap bounds all deliveries in flight, a
//! quarter of it kept for destinations with nothing else in flight ([`super::delivery_cap`]).
//! The
//! worker runs jobs of different topics side by side (one per topic at a time, so each
//! subscriber gets a topic's events in order); a topic whose job is still running when its next
//! events arrive is behind there, and those are coalesced. A slow or dead destination only ever
//! holds its own worker and window, and its jobs wait (stored) until it comes back. Every
//! destination holds at most its window's worth of requests in the FIFO queue of the global
//! cap, so destinations are served in turn however many subscribers each has.
//!
//! A job is (event, destination, cursor): the worker pages through that destination's
//! subscribers in callback order and checkpoints the cursor as deliveries complete
//! (`deliver_page`), so a crash repeats only what was in flight or done since the last
//! checkpoint. Successes write nothing per subscriber; failures become retry records. A job
//! done is removed from storage with the other jobs of its event ([`super::completion`]); a
//! job fresh from the planner is not read back from storage before it starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;

use super::completion::{self, Completions};
use super::deliver::{Outcome, Prepared, send, settle, signal};
use super::delivery_cap::DeliveryCap;
use super::history::{DeliveryRecord, History};
use super::shared::Shared;
use super::snapshot::Page;
use super::stream::EventStream;
use super::topic_queue::Queue;
use super::transport::Transports;
use super::window::Window;
use crate::config::WindowConfig;
use crate::metrics;
use crate::storage::{Job, NewEvent, StorageError, Subscription, WorkKey};

/// The dispatcher: one queue, worker and window per destination server, the global cap, the
/// transports deliveries go through, and the recent deliveries of each callback.
pub struct Dispatcher {
    shared: Arc<Shared>,
    /// Where recent events are read from memory.
    stream: Arc<EventStream>,
    destinations: Mutex<HashMap<String, Arc<Destination>>>,
    global: DeliveryCap,
    window: WindowConfig,
    transports: Transports,
    /// Batches for destinations with a registered relay.
    batches: super::relay_batch::BatchSender,
    history: History,
    /// Jobs done, removed from storage by event.
    completions: Arc<Completions>,
}

pub struct Destination {
    pub name: String,
    state: Mutex<Queue>,
    pub window: Window,
    /// Tells the running worker a job was queued.
    wake: Notify,
    last_error: Mutex<Option<LastError>>,
    /// Deliveries in flight (or waiting for a place of the global cap) to this destination.
    pub(super) in_flight: std::sync::atomic::AtomicUsize,
    /// Batches sent to the destination's registered relay, since the hub started.
    pub(super) batches: super::relay_dispatch::BatchCounts,
}

/// The most recent failed delivery to a destination.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastError {
    pub at_ms: u64,
    pub class: &'static str,
    pub error: String,
}

/// A destination as the status page shows it.
#[derive(Debug, Clone)]
pub struct DestinationView {
    pub name: String,
    pub status: super::window::WindowStatus,
    /// Jobs waiting or running.
    pub queued_jobs: usize,
    /// Of those, the jobs running (at most one per topic).
    pub running_jobs: usize,
    pub last_error: Option<LastError>,
    /// Batches sent to its registered relay since the hub started.
    pub batches: super::relay_dispatch::BatchTally,
}

impl Destination {
    pub fn view(&self) -> DestinationView {
        let (queued_jobs, running_jobs) = {
            let q = lock(&self.state);
            (q.known.len(), q.active.len())
        };
        DestinationView {
            name: self.name.clone(),
            status: self.window.status(),
            queued_jobs,
            running_jobs,
            last_error: lock(&self.last_error).clone(),
            batches: self.batches.tally(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatcher {
    pub fn new(
        shared: Arc<Shared>,
        stream: Arc<EventStream>,
        transports: Transports,
        batches: super::relay_batch::BatchSender,
        history: History,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            stream,
            destinations: Mutex::new(HashMap::new()),
            global: DeliveryCap::new(shared.cfg.max_in_flight),
            window: shared.cfg.window.clone(),
            transports,
            batches,
            history,
            shared,
            completions: Arc::default(),
        })
    }

    /// The jobs done and not yet removed from storage.
    pub fn completions(&self) -> &Arc<Completions> {
        &self.completions
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    pub fn batches(&self) -> &super::relay_batch::BatchSender {
        &self.batches
    }

    /// Recent deliveries per callback.
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn destination(&self, name: &str) -> Arc<Destination> {
        lock(&self.destinations)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Destination {
                    name: name.to_owned(),
                    state: Mutex::new(Queue::default()),
                    window: Window::new(self.window.clone()),
                    wake: Notify::new(),
                    last_error: Mutex::new(None),
                    in_flight: std::sync::atomic::AtomicUsize::new(0),
                    batches: Default::default(),
                })
            })
            .clone()
    }

    pub fn global(&self) -> &DeliveryCap {
        &self.global
    }

    /// Queues a job claimed from storage on its destination and starts the destination's
    /// worker if idle.
    pub fn enqueue(self: &Arc<Self>, job: Job) {
        self.queue(job, Start::Stored);
    }

    /// Queues a job the planner has just handed on: stored with its event and never started,
    /// so it starts without being read back, with its subscribers if they were kept.
    pub fn enqueue_new(self: &Arc<Self>, job: Job, subscribers: Option<Page>) {
        self.queue(job, Start::Fresh(subscribers));
    }

    fn queue(self: &Arc<Self>, job: Job, start: Start) {
        let dest = self.destination(&job.destination);
        let event = job.event;
        let start = {
            let mut q = lock(&dest.state);
            if !q.known.insert(event) {
                return;
            }
            if let Start::Fresh(subscribers) = start {
                q.fresh.insert(event, subscribers);
            }
            self.completions.opened(event);
            q.push_back(job);
            !std::mem::replace(&mut q.running, true)
        };
        if !start {
            dest.wake.notify_one();
        } else {
            self.shared.tracker.spawn(worker(self.clone(), dest));
        }
    }

    /// Destination servers seen since start: (healthy, throttled, dead).
    pub fn destination_states(&self) -> [u64; 3] {
        let mut n = [0; 3];
        for d in lock(&self.destinations).values() {
            n[d.window.status().health as usize] += 1;
        }
        n
    }

    /// Every destination seen since start.
    pub fn views(&self) -> Vec<DestinationView> {
        let all: Vec<Arc<Destination>> = lock(&self.destinations).values().cloned().collect();
        all.iter().map(|d| d.view()).collect()
    }

    /// One destination, if it has been seen since start.
    pub fn view_of(&self, name: &str) -> Option<DestinationView> {
        let dest = lock(&self.destinations).get(name).cloned();
        dest.map(|d| d.view())
    }

    /// Jobs waiting or running, over all destinations.
    pub fn queued_jobs(&self) -> usize {
        lock(&self.destinations)
            .values()
            .map(|d| lock(&d.state).known.len())
            .sum()
    }
}

/// A destination's worker: runs its jobs, several at once (at most one per topic, at most the
/// window's largest size), until its queue is empty. Each delivery still takes a slot of the
/// destination's window, so running jobs side by side only keeps the window full when each job
/// has few subscribers there.
async fn worker(d: Arc<Dispatcher>, dest: Arc<Destination>) {
    let most = d.window.max.max(1);
    let mut running = FuturesUnordered::new();
    loop {
        if !d.shared.shutdown.is_cancelled() {
            while running.len() < most {
                let Some(job) = lock(&dest.state).start_next() else {
                    break;
                };
                running.push(run_one(&d, &dest, job));
            }
        }
        if running.is_empty() {
            let mut q = lock(&dest.state);
            if q.ready.is_empty() || d.shared.shutdown.is_cancelled() {
                q.running = false;
                return;
            }
            continue;
        }
        tokio::select! {
            _ = running.next() => {}
            _ = dest.wake.notified() => {}
        }
    }
}

/// Runs one job to its end (or to a stored cursor when the hub stops). Storage trouble puts it
/// back at the head of its topic (it is stored) after a pause.
async fn run_one(d: &Arc<Dispatcher>, dest: &Destination, job: Job) {
    let topic = job.topic.clone();
    let job = coalesce_backlog(d, dest, job).await;
    let event = job.event;
    let start = match lock(&dest.state).fresh.remove(&event) {
        Some(subscribers) => Start::Fresh(subscribers),
        None => Start::Stored,
    };
    match run_job(d, dest, job.clone(), start).await {
        Ok(true) => {
            lock(&dest.state).known.remove(&event);
            // Removed from storage (and released) with the other jobs of its event.
            if let Some(removal) = d.completions.done(event, &dest.name) {
                completion::remove(&d.shared, &d.completions, removal).await;
            }
        }
        Ok(false) => {
            // Stopping with its cursor stored: no longer this node's.
            lock(&dest.state).known.remove(&event);
            d.shared.release(vec![WorkKey::job(&job)]).await;
            d.left(event).await;
        }
        Err(e) => {
            tracing::error!(destination = %dest.name, event, error = %e, "delivery job failed");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = d.shared.shutdown.cancelled() => {}
            }
            lock(&dest.state).push_front(job);
        }
    }
    lock(&dest.state).finish(&topic);
}

impl Dispatcher {
    /// A job of `event` left this node without being done here: the jobs of the event done
    /// here are removed if it was the last.
    async fn left(&self, event: u64) {
        if let Some(removal) = self.completions.left(event) {
            completion::remove(&self.shared, &self.completions, removal).await;
        }
    }
}

/// Most events merged into one delivery.
const MAX_COALESCED: usize = 64;

/// When the destination's queue holds later unstarted jobs of the same topic (it fell behind:
/// dead, throttled or slow), merges them with `job` into one event and one job, so that each
/// subscriber there gets one delivery carrying all of them ([`crate::feed::coalesce`]). Returns
/// the job to run: the merged one, or `job` itself when there is nothing to merge or the
/// contents cannot be merged.
async fn coalesce_backlog(d: &Dispatcher, dest: &Destination, job: Job) -> Job {
    if job.cursor.is_some() || job.topic.is_empty() {
        return job;
    }
    let later = lock(&dest.state).take_topic(&job.topic, MAX_COALESCED - 1);
    if later.is_empty() {
        return job;
    }
    let put_back = |later: Vec<Job>| {
        let mut q = lock(&dest.state);
        for j in later.into_iter().rev() {
            q.push_front(j);
        }
    };
    let merged = merge_events(d, dest, &job, &later).await;
    match merged {
        Ok(Some(merged)) => {
            let replaced: Vec<&Job> = std::iter::once(&job).chain(&later).collect();
            {
                // Known before any await: a rescan that claims the merged job meanwhile finds
                // it queued already. It delivers to the subscribers that came with the newest
                // replaced event, if they are still current.
                let mut q = lock(&dest.state);
                let mut subscribers = None;
                for j in &replaced {
                    q.known.remove(&j.event);
                    if let Some(Some(page)) = q.fresh.remove(&j.event) {
                        subscribers = Some(page);
                    }
                }
                q.known.insert(merged.event);
                q.fresh.insert(merged.event, subscribers);
            }
            d.completions.whole(merged.event, 1);
            d.completions.opened(merged.event);
            // The replaced jobs are done here: the merged job carries them. They leave storage
            // with their events' other jobs, after the merged job was stored.
            for j in &replaced {
                if let Some(removal) = d.completions.done(j.event, &dest.name) {
                    completion::remove(&d.shared, &d.completions, removal).await;
                }
            }
            // Created by this node just now: nobody else can hold it.
            d.shared.take(vec![WorkKey::job(&merged)]).await;
            d.shared.metrics.coalesced(later.len() as u64 + 1);
            tracing::debug!(destination = %dest.name, topic = %job.topic,
                events = later.len() + 1, "backlog coalesced into one delivery");
            merged
        }
        Ok(None) => {
            put_back(later);
            job
        }
        Err(e) => {
            tracing::warn!(destination = %dest.name, error = %e, "cannot coalesce the backlog");
            put_back(later);
            job
        }
    }
}

async fn merge_events(
    d: &Dispatcher,
    dest: &Destination,
    job: &Job,
    later: &[Job],
) -> Result<Option<Job>, StorageError> {
    let mut events = Vec::with_capacity(later.len() + 1);
    for j in std::iter::once(job).chain(later) {
        let event = match d.stream.recent(j.event) {
            Some(e) => Some(e),
            None => d.shared.store.log.event(j.event).await?,
        };
        match event {
            Some(e) => events.push(e),
            None => return Ok(None),
        }
    }
    let total: usize = events.iter().map(|e| e.body.len()).sum();
    if total > d.shared.cfg.fetch_max_bytes {
        return Ok(None);
    }
    let parts: Vec<(&str, &bytes::Bytes)> = events
        .iter()
        .map(|e| (e.content_type.as_str(), &e.body))
        .collect();
    let Some((content_type, body)) = crate::feed::coalesce(&d.shared.cfg.diff, &parts) else {
        return Ok(None);
    };
    let created_ms = events
        .iter()
        .map(|e| e.created_ms)
        .min()
        .unwrap_or_default();
    let merged = d
        .shared
        .store
        .delivery
        .put_merged(
            &dest.name,
            &job.topic,
            NewEvent {
                content_type,
                body,
                created_ms,
                relayed: None,
            },
        )
        .await?;
    Ok(Some(merged))
}

/// How a job starts.
enum Start {
    /// Claimed from storage: read back first (it may have been done meanwhile, or have moved
    /// on: its cursor).
    Stored,
    /// Handed on by the planner (or merged) just now, started nowhere: not read back; with
    /// the subscribers read for its event, if kept.
    Fresh(Option<Page>),
}

/// Runs the job; `true` when it is done (to be removed from storage), `false` when the hub
/// stops first (its cursor is stored). A fresh job with its subscribers kept delivers to them
/// if they are still current, without reading a page.
async fn run_job(
    d: &Arc<Dispatcher>,
    dest: &Destination,
    mut job: Job,
    start: Start,
) -> Result<bool, StorageError> {
    let store = &d.shared.store;
    let kept = match start {
        Start::Fresh(kept) => kept,
        Start::Stored => {
            match store.delivery.job(job.event, &job.destination).await? {
                Some(stored) => job = stored,
                None => return Ok(true),
            }
            None
        }
    };
    let event = match d.stream.recent(job.event) {
        Some(e) => Some(e),
        None => store.log.event(job.event).await?,
    };
    let Some(event) = event else {
        tracing::error!(event = job.event, destination = %job.destination,
            "a job's event is no longer stored; the job is dropped");
        return Ok(true);
    };
    let prepared = Prepared::new(&d.shared.hub_url, &event);
    if let Some(relay) = super::relay_batch::relay_of(&d.shared, &dest.name).await? {
        return super::relay_dispatch::run_batches(d, dest, &prepared, relay, kept, &mut job).await;
    }
    let now_ms = d.shared.clock.now_ms();
    if let Some(subs) = kept
        .as_ref()
        .and_then(|p| p.current(&store.sub_changes, &event.topic, now_ms))
        .filter(|subs| subs.len() <= d.shared.cfg.page_size)
    {
        if subs.is_empty() {
            return Ok(true);
        }
        return deliver_page(d, dest, &prepared, subs, &mut job, true).await;
    }
    loop {
        if d.shared.shutdown.is_cancelled() {
            return Ok(false); // the stored cursor resumes it
        }
        let page = store
            .subs
            .page(
                &event.topic,
                &dest.name,
                job.cursor.as_deref(),
                d.shared.cfg.page_size,
            )
            .await?;
        let last_page = page.len() < d.shared.cfg.page_size;
        if !page.is_empty() && !deliver_page(d, dest, &prepared, &page, &mut job, last_page).await?
        {
            return Ok(false); // stopping: the stored cursor resumes it
        }
        if last_page {
            return Ok(true); // done: no cursor needs to be kept
        }
    }
}

/// Deliveries completed in callback order between two stored cursors.
const CHECKPOINT_EVERY: usize = 32;

/// Sends to every subscriber of `page` through the window, and while they complete (in any
/// order) stores the job's cursor at the end of the completed prefix every
/// [`CHECKPOINT_EVERY`] deliveries, flushed, without pausing the sends. A crash repeats only
/// what was in flight or completed since the last checkpoint. Unless it was the last page,
/// returns with the cursor at the end of the page, stored. When the hub stops, deliveries not
/// yet sent are deferred: the cursor is stored at the end of the completed prefix and `false`
/// is returned (the job stays).
async fn deliver_page(
    d: &Arc<Dispatcher>,
    dest: &Destination,
    prepared: &Prepared,
    page: &[Subscription],
    job: &mut Job,
    last_page: bool,
) -> Result<bool, StorageError> {
    let store = &d.shared.store;
    let mut in_flight: FuturesUnordered<_> = page
        .iter()
        .enumerate()
        .map(|(i, sub)| async move {
            let outcome = send_in_window(d, dest, prepared, sub, false).await;
            let deferred = outcome == Outcome::Deferred;
            (
                i,
                deferred,
                settle(&d.shared, prepared, sub, None, outcome).await,
            )
        })
        .collect();
    let mut done = vec![false; page.len()];
    let mut prefix = 0; // subscribers 0..prefix are all settled
    let mut saved = 0;
    let mut checkpoint: Option<futures_util::future::BoxFuture<'_, Result<(), StorageError>>> =
        None;
    let mut first_error = None;
    let mut deferred = false;
    loop {
        tokio::select! {
            next = in_flight.next() => match next {
                Some((i, was_deferred, result)) => {
                    if let Err(e) = result {
                        first_error.get_or_insert(e);
                    }
                    if was_deferred {
                        deferred = true;
                        continue;
                    }
                    done[i] = true;
                    while prefix < done.len() && done[prefix] {
                        prefix += 1;
                    }
                }
                None => break,
            },
            r = async { checkpoint.as_mut().expect("guarded").await }, if checkpoint.is_some() => {
                checkpoint = None;
                r?;
            }
        }
        if checkpoint.is_none() && first_error.is_none() && prefix - saved >= CHECKPOINT_EVERY {
            saved = prefix;
            let at = Job {
                cursor: Some(page[prefix - 1].callback.clone()),
                ..job.clone()
            };
            checkpoint = Some(Box::pin(async move {
                store.delivery.put_job(at).await?;
                store.flush().await
            }));
        }
    }
    if let Some(c) = checkpoint {
        c.await?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if deferred {
        if prefix > saved {
            job.cursor = Some(page[prefix - 1].callback.clone());
            store.delivery.put_job(job.clone()).await?;
            store.flush().await?;
        }
        return Ok(false);
    }
    if last_page {
        return Ok(true); // done: removed with its event's other jobs
    }
    job.cursor = page.last().map(|s| s.callback.clone());
    store.delivery.put_job(job.clone()).await?;
    store.flush().await?;
    Ok(true)
}

/// One delivery through the destination's window and the global cap; its outcome is reported
/// to the window, the metrics and the callback's history before it is returned. Once the hub
/// is stopping nothing new is sent ([`Outcome::Deferred`]); past the shutdown deadline a
/// request in flight is cut off (deferred too: it is sent again after the restart).
pub async fn send_in_window(
    d: &Dispatcher,
    dest: &Destination,
    prepared: &Prepared,
    sub: &Subscription,
    via_relay: bool,
) -> Outcome {
    let stopping = &d.shared.shutdown;
    let slot = tokio::select! {
        biased;
        _ = stopping.cancelled() => return Outcome::Deferred,
        slot = dest.window.acquire() => slot,
    };
    let places = tokio::select! {
        biased;
        _ = stopping.cancelled() => return Outcome::Deferred,
        p = d.global().acquire(&dest.in_flight) => p,
    };
    if stopping.is_cancelled() {
        return Outcome::Deferred;
    }
    let started = tokio::time::Instant::now();
    let outcome = tokio::select! {
        o = send(d, prepared, sub, via_relay) => o,
        _ = d.shared.abort.cancelled() => Outcome::Deferred,
    };
    drop(places);
    let took = started.elapsed();
    let m = &d.shared.metrics;
    match &outcome {
        Outcome::Delivered => m.delivery(metrics::Delivery::Delivered, Some(took)),
        Outcome::Gone => m.delivery(metrics::Delivery::Gone, Some(took)),
        Outcome::Failed(_) => m.delivery(metrics::Delivery::Failed, Some(took)),
        Outcome::Expired => m.delivery(metrics::Delivery::Expired, None),
        Outcome::Deferred => {}
    }
    match signal(&outcome) {
        Some(s) => slot.done(s),
        None => drop(slot),
    }
    remember(d, dest, prepared, sub, &outcome, took);
    outcome
}

/// Records the delivery in the callback's history, and a failure as the destination's last
/// error.
pub(super) fn remember(
    d: &Dispatcher,
    dest: &Destination,
    prepared: &Prepared,
    sub: &Subscription,
    outcome: &Outcome,
    took: Duration,
) {
    let at_ms = d.shared.clock.now_ms();
    let (class, error) = match outcome {
        Outcome::Failed(f) => (Some(f.class()), Some(f.to_string())),
        _ => (None, None),
    };
    if let (Some(class), Some(error)) = (class, &error) {
        *lock(&dest.last_error) = Some(LastError {
            at_ms,
            class,
            error: error.clone(),
        });
    }
    let sent = !matches!(outcome, Outcome::Expired | Outcome::Deferred);
    d.history.record(
        &sub.callback,
        DeliveryRecord {
            at_ms,
            event: prepared.event,
            topic: prepared.topic.clone(),
            outcome: outcome.name(),
            class,
            error,
            latency_ms: sent.then_some((took.as_secs_f64() * 10_000.0).round() / 10.0),
        },
    );
}
