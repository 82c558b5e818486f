//! The fan-out planner: follows the committed-event stream and hands the jobs of each new
//! event to the dispatcher. The jobs (one per destination server of the topic's subscribers)
//! were stored with the event, in the same transaction and flush
//! ([`crate::storage::EventLog::append`]); events from the stream's in-memory window carry
//! their destinations, others have their jobs read back. Nothing is lost: after a restart the
//! engine claims every stored job up to the lead at start, and the planner follows from there;
//! rescans never claim the jobs of events the planner has not reached. A job from the
//! in-memory window starts without being read back when this node is alone on its store, with
//! its destination's part of the subscribers read for the event ([`super::snapshot`]); every
//! other job is checked against storage first (another node may have done it).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::dispatch::Dispatcher;
use super::stream::Follower;
use crate::storage::{Job, WorkKey};

/// Most events taken from the stream at once.
const BATCH: usize = 512;

pub async fn run(dispatcher: Arc<Dispatcher>, mut follower: Follower) {
    let shared = dispatcher.shared().clone();
    let stop = &shared.shutdown;
    let health = &shared.health;
    let store = &shared.store;
    loop {
        let next = tokio::select! {
            next = follower.next(BATCH) => next,
            _ = stop.cancelled() => return,
        };
        let events = match next {
            Ok(events) if events.is_empty() => return, // the stream closed
            Ok(events) => events,
            Err(e) => {
                health.failed("event log read", &e);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
        };
        // Jobs straight from this node's writer are fresh (stored with their event, started
        // nowhere) when no other node shares the store: they start without being read back.
        let alone = shared.cfg.node_id.is_none();
        let mut jobs = Vec::new();
        for c in &events {
            let e = &c.event;
            match &c.destinations {
                // Straight from the writer: the jobs stored with the event, without reading them.
                Some(destinations) => {
                    jobs.extend(destinations.iter().map(|d| {
                        let page = c.subscribers.as_ref().map(|s| s.at(d));
                        (Job::new(e.seq, d, &e.topic), alone.then_some(page))
                    }));
                }
                None => {
                    let read = || store.delivery.jobs_of(e.seq);
                    let Some(stored) = health.persist("jobs of an event", stop, read).await else {
                        return;
                    };
                    jobs.extend(stored.into_iter().map(|j| (j, None)));
                }
            }
        }
        // With other nodes, each planner takes the jobs of the destinations it owns.
        if store.shared {
            jobs.retain(|(j, _)| shared.owners.owns(&j.destination));
        }
        // Claimed before they are worked on: another node may have claimed some from storage.
        let got = shared
            .take(jobs.iter().map(|(j, _)| WorkKey::job(j)).collect())
            .await;
        // An event whose jobs are all this node's, straight from its writer, has them removed
        // as a whole once done.
        let mut start = 0;
        for event_jobs in jobs.chunk_by(|(a, _), (b, _)| a.event == b.event) {
            let end = start + event_jobs.len();
            let (first, fresh) = &event_jobs[0];
            if fresh.is_some() && got[start..end].iter().all(|mine| *mine) {
                dispatcher
                    .completions()
                    .whole(first.event, event_jobs.len());
            }
            start = end;
        }
        for ((job, fresh), mine) in jobs.into_iter().zip(got) {
            match (mine, fresh) {
                (true, Some(page)) => dispatcher.enqueue_new(job, page),
                (true, None) => dispatcher.enqueue(job),
                (false, _) => {}
            }
        }
        shared.planned.store(follower.position(), Ordering::Relaxed);
    }
}
