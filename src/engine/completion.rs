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

/// Jobs to remove from storage: an event and the destinations whose jobs are done.
pub type Removal = (u64, Vec<String>);

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
}

impl Completions {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job of `event` was queued here.
    pub fn opened(&self, event: u64) {
        let mut s = self.lock();
        let open = s.events.entry(event).or_insert_with(|| Open {
            running: 0,
            done: Vec::new(),
            since: Instant::now(),
        });
        open.running += 1;
    }

    /// The job of `event` at `destination` is done. Returns what to remove now: every job of
    /// the event done here, when it was the last one running (or the hub is stopping).
    pub fn done(&self, event: u64, destination: &str) -> Option<Removal> {
        let mut s = self.lock();
        let closed = s.closed;
        let open = s.events.get_mut(&event)?;
        if open.done.is_empty() {
            open.since = Instant::now();
        }
        open.done.push(destination.to_owned());
        open.running = open.running.saturating_sub(1);
        Self::settle(&mut s, event, closed)
    }

    /// A job of `event` left without being done here (merged into another, or stopped with its
    /// cursor stored): like [`Self::done`], without noting it.
    pub fn left(&self, event: u64) -> Option<Removal> {
        let mut s = self.lock();
        let closed = s.closed;
        let open = s.events.get_mut(&event)?;
        open.running = open.running.saturating_sub(1);
        Self::settle(&mut s, event, closed)
    }

    fn settle(s: &mut State, event: u64, now: bool) -> Option<Removal> {
        let open = s.events.get_mut(&event)?;
        if open.running > 0 {
            if now && !open.done.is_empty() {
                return Some((event, std::mem::take(&mut open.done)));
            }
            return None;
        }
        let open = s.events.remove(&event)?;
        (!open.done.is_empty()).then_some((event, open.done))
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
            .map(|(e, o)| (*e, std::mem::take(&mut o.done)))
            .collect();
        // Events put back after their last job ended have nothing left here.
        s.events.retain(|_, o| o.running > 0 || !o.done.is_empty());
        due
    }

    /// A removal failed: its jobs are noted as done again, to be removed at the next pass.
    pub fn put_back(&self, (event, destinations): Removal) {
        let mut s = self.lock();
        let open = s.events.entry(event).or_insert_with(|| Open {
            running: 0,
            done: Vec::new(),
            since: Instant::now(),
        });
        if open.done.is_empty() {
            open.since = Instant::now();
        }
        open.done.extend(destinations);
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
    let (event, destinations) = &removal;
    match shared
        .store
        .delivery
        .remove_jobs(*event, destinations)
        .await
    {
        Ok(()) => {
            shared.health.succeeded(REMOVAL);
            let keys = destinations
                .iter()
                .map(|d| WorkKey::Job {
                    destination: d.clone(),
                    event: *event,
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

    #[tokio::test(start_paused = true)]
    async fn an_events_jobs_are_removed_together_once_the_last_is_done() {
        let c = Completions::default();
        for _ in 0..3 {
            c.opened(7);
        }
        assert_eq!(c.done(7, "http://a"), None);
        assert_eq!(c.left(7), None, "merged away: not removed here");
        assert_eq!(
            c.done(7, "http://b"),
            Some((7, vec!["http://a".to_owned(), "http://b".to_owned()]))
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
        assert_eq!(c.overdue(), vec![(1, vec!["http://fast".to_owned()])]);
        assert!(c.overdue().is_empty(), "handed out once");
        // The slow one ends later: removed alone.
        assert_eq!(
            c.done(1, "http://slow"),
            Some((1, vec!["http://slow".into()]))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_removal_is_handed_out_again_and_closing_removes_at_once() {
        let c = Completions::default();
        c.opened(2);
        c.opened(2);
        c.opened(3);
        let removal = c.done(3, "http://a").unwrap();
        c.put_back(removal);
        assert!(c.overdue().is_empty());
        tokio::time::advance(HOLD).await;
        assert_eq!(c.overdue(), vec![(3, vec!["http://a".to_owned()])]);
        assert_eq!(c.open_events(), 1, "event 3 is gone; event 2 runs");
        assert_eq!(c.done(2, "http://a"), None);
        c.close();
        assert_eq!(c.overdue(), vec![(2, vec!["http://a".to_owned()])]);
        assert_eq!(c.done(2, "http://b"), Some((2, vec!["http://b".into()])));
    }
}
