//! Jobs done, removed from storage together. An event's jobs (one per destination server) are
//! stored with it in one record; as each is done here it is noted in memory, and once every
//! job of the event this node runs is done they are removed, and their claims released, in one
//! storage call. An event whose other jobs take longer (a slow or dead destination) has the
//! jobs done so far removed after [`HOLD`]. So a job done costs no write of its own, and a
//! crash repeats at most the deliveries of jobs done in the last [`HOLD`] (never loses one:
//! a job leaves storage only after its deliveries are settled). A plain state machine: the
//! dispatcher calls it, and [`run`] writes what it hands out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::shared::Shared;
use crate::storage::WorkKey;

/// How long jobs done wait for the rest of their event's before they are removed anyway.
pub const HOLD: Duration = Duration::from_secs(1);

/// Jobs to remove from storage: an event and the destinations whose jobs are done; `all`
/// when they are every job the event has (the event's jobs go as a whole, unread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub event: u64,
    pub destinations: Vec<String>,
    pub all: bool,
}

#[derive(Default)]
pub struct Completions {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    events: HashMap<u64, Open>,
    /// The hub is stopping: whatever is done is removed at once.
    closed: bool,
}

/// An event with jobs queued or running here.
struct Open {
    /// Jobs queued or running.
    running: usize,
    /// Jobs done, not yet removed from storage.
    done: Vec<String>,
    /// When the first of `done` was.
    since: Instant,
    /// How many jobs the event has in all, when every one of them is this node's.
    whole: Option<usize>,
    /// Some of its jobs were removed already (or their removal failed and was put back).
    removed_some: bool,
}

impl Open {
    fn new() -> Open {
        Open {
            running: 0,
            done: Vec::new(),
            since: Instant::now(),
            whole: None,
            removed_some: false,
        }
    }

    /// Takes the jobs done for removal.
    fn take(&mut self, event: u64) -> Removal {
        let destinations = std::mem::take(&mut self.done);
        let all = !self.removed_some && self.running == 0 && self.whole == Some(destinations.len());
        self.removed_some = true;
        Removal {
            event,
            destinations,
            all,
        }
    }
}

impl Completions {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job of `event` was queued here.
    pub fn opened(&self, event: u64) {
        let mut s = self.lock();
        s.events.entry(event).or_insert_with(Open::new).running += 1;
    }

    /// Every one of `event`'s `jobs` jobs is this node's (the planner acquired them all, or it
    /// made the event): once all are done they are removed as a whole.
    pub fn whole(&self, event: u64, jobs: usize) {
        let mut s = self.lock();
        s.events.entry(event).or_insert_with(Open::new).whole = Some(jobs);
    }

    /// The job of `event` at `destination` is done. Returns what to remove now: every job of
    /// the event done here, when it was the last one running (or the hub is stopping).
    pub fn done(&self, event: u64, destination: &str) -> Option<Removal> {
        self.ended(event, Some(destination))
    }

    /// A job of `event` left without being done here (the hub stopped it with its cursor
    /// stored): like [`Self::done`], without noting it.
    pub fn left(&self, event: u64) -> Option<Removal> {
        self.ended(event, None)
    }

    /// A job of `event` ended here, done at `destination` if given.
    fn ended(&self, event: u64, done: Option<&str>) -> Option<Removal> {
        let mut s = self.lock();
        let closed = s.closed;
        let open = s.events.get_mut(&event)?;
        if let Some(destination) = done {
            if open.done.is_empty() {
                open.since = Instant::now();
            }
            open.done.push(destination.to_owned());
        }
        open.running = open.running.saturating_sub(1);
        if open.running > 0 {
            if closed && !open.done.is_empty() {
                return Some(open.take(event));
            }
            return None;
        }
        let mut open = s.events.remove(&event)?;
        (!open.done.is_empty()).then(|| open.take(event))
    }

    /// Jobs done more than [`HOLD`] ago whose events still have jobs running; all jobs done
    /// once [`Self::close`] was called.
    pub fn overdue(&self) -> Vec<Removal> {
        let mut s = self.lock();
        let closed = s.closed;
        let now = Instant::now();
        let due: Vec<Removal> = s
            .events
            .iter_mut()
            .filter(|(_, o)| !o.done.is_empty() && (closed || now - o.since >= HOLD))
            .map(|(e, o)| o.take(*e))
            .collect();
        // Events put back after their last job ended have nothing left here.
        s.events.retain(|_, o| o.running > 0 || !o.done.is_empty());
        due
    }

    /// A removal failed: its jobs are noted as done again, to be removed at the next pass
    /// (one by one: the event's other jobs may be gone by then).
    pub fn put_back(&self, removal: Removal) {
        let mut s = self.lock();
        let open = s.events.entry(removal.event).or_insert_with(Open::new);
        if open.done.is_empty() {
            open.since = Instant::now();
        }
        open.removed_some = true;
        open.done.extend(removal.destinations);
    }

    /// The hub is stopping: from now on jobs done are removed at once.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Events with jobs here (queued, running, or done and not yet removed).
    pub fn open_events(&self) -> usize {
        self.lock().events.len()
    }
}

/// Removes the jobs from storage and releases their claims; a failure puts them back for the
/// next pass (they stay claimed by this node meanwhile, so no other claims them).
pub async fn remove(shared: &Shared, completions: &Completions, removal: Removal) {
    let delivery = &shared.store.delivery;
    let removed = match removal.all {
        true => delivery.remove_all_jobs(removal.event).await,
        false => {
            delivery
                .remove_jobs(removal.event, &removal.destinations)
                .await
        }
    };
    match removed {
        Ok(()) => {
            shared.health.succeeded(REMOVAL);
            let keys = removal
                .destinations
                .iter()
                .map(|d| WorkKey::Job {
                    destination: d.clone(),
                    event: removal.event,
                })
                .collect();
            shared.release(keys).await;
        }
        Err(e) => {
            shared.health.failed(REMOVAL, &e);
            completions.put_back(removal);
        }
    }
}

/// What removing jobs done is called in the health report.
pub const REMOVAL: &str = "removal of jobs done";

/// Every [`HOLD`], removes the jobs done that waited that long. When the hub stops, removes
/// everything done and lets later jobs be removed as they end.
pub async fn run(shared: Arc<Shared>, completions: Arc<Completions>) {
    let mut tick = tokio::time::interval(HOLD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => completions.close(),
        }
        for removal in completions.overdue() {
            remove(&shared, &completions, removal).await;
        }
        if shared.shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(event: u64, destinations: &[&str], all: bool) -> Removal {
        Removal {
            event,
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
            all,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_events_jobs_are_removed_together_once_the_last_is_done() {
        let c = Completions::default();
        for _ in 0..3 {
            c.opened(7);
        }
        assert_eq!(c.done(7, "http://a"), None);
        assert_eq!(c.left(7), None, "stopped with a cursor: not removed here");
        assert_eq!(
            c.done(7, "http://b"),
            Some(removal(7, &["http://a", "http://b"], false))
        );
        assert_eq!(c.open_events(), 0);
        assert_eq!(c.done(7, "http://c"), None, "unknown events are ignored");
        c.opened(8);
        assert_eq!(c.left(8), None, "nothing done, nothing to remove");
        assert_eq!(c.open_events(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_done_wait_at_most_the_hold_for_the_rest_of_their_event() {
        let c = Completions::default();
        c.opened(1);
        c.opened(1);
        assert_eq!(c.done(1, "http://fast"), None);
        assert!(c.overdue().is_empty(), "held for the others");
        tokio::time::advance(HOLD).await;
        assert_eq!(c.overdue(), vec![removal(1, &["http://fast"], false)]);
        assert!(c.overdue().is_empty(), "handed out once");
        // The slow one ends later: removed alone.
        assert_eq!(
            c.done(1, "http://slow"),
            Some(removal(1, &["http://slow"], false))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_removal_is_handed_out_again_and_closing_removes_at_once() {
        let c = Completions::default();
        c.opened(2);
        c.opened(2);
        c.whole(3, 1);
        c.opened(3);
        let failed = c.done(3, "http://a").unwrap();
        assert!(failed.all);
        c.put_back(failed);
        assert!(c.overdue().is_empty());
        tokio::time::advance(HOLD).await;
        assert_eq!(
            c.overdue(),
            vec![removal(3, &["http://a"], false)],
            "again, one by one"
        );
        assert_eq!(c.open_events(), 1, "event 3 is gone; event 2 runs");
        assert_eq!(c.done(2, "http://a"), None);
        c.close();
        assert_eq!(c.overdue(), vec![removal(2, &["http://a"], false)]);
        assert_eq!(
            c.done(2, "http://b"),
            Some(removal(2, &["http://b"], false))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_whose_jobs_are_all_here_goes_as_a_whole_unless_some_went_before() {
        let c = Completions::default();
        c.whole(4, 2);
        c.opened(4);
        c.opened(4);
        assert_eq!(c.done(4, "http://a"), None);
        assert_eq!(
            c.done(4, "http://b"),
            Some(removal(4, &["http://a", "http://b"], true))
        );
        // Part of it removed after the hold: the rest goes one by one.
        c.whole(5, 2);
        c.opened(5);
        c.opened(5);
        c.done(5, "http://a");
        tokio::time::advance(HOLD).await;
        assert_eq!(c.overdue(), vec![removal(5, &["http://a"], false)]);
        assert_eq!(
            c.done(5, "http://b"),
            Some(removal(5, &["http://b"], false))
        );
        // Not every job here (another node has one): never as a whole.
        c.whole(6, 3);
        c.opened(6);
        c.opened(6);
        c.done(6, "http://a");
        assert_eq!(
            c.done(6, "http://b"),
            Some(removal(6, &["http://a", "http://b"], false))
        );
    }
}
