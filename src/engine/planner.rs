//! The fan-out planner: follows the committed-event stream from its stored cursor and, for
//! each event, stores one job per destination server of the topic's subscribers, moving its
//! cursor in the same transaction; once that is durable it hands the jobs to the dispatcher.
//! After a crash it resumes at its cursor, so every committed event is planned exactly once.

use std::sync::Arc;

use super::dispatch::Dispatcher;
use super::stream::Follower;
use crate::storage::{Job, WorkKey};

/// Most events planned in one transaction.
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
        let mut jobs = Vec::new();
        for event in &events {
            let Some(destinations) = health
                .persist("destinations of a topic", stop, || {
                    store.subs.destinations(&event.topic)
                })
                .await
            else {
                return;
            };
            jobs.extend(
                destinations
                    .iter()
                    .map(|d| Job::new(event.seq, d, &event.topic)),
            );
        }
        let planned = follower.position();
        let stored = health
            .persist("planned jobs", stop, || {
                store.delivery.plan(jobs.clone(), planned)
            })
            .await;
        if stored.is_none() {
            return;
        }
        if health
            .persist("planned jobs flush", stop, || store.flush())
            .await
            .is_none()
        {
            return;
        }
        tracing::debug!(
            events = events.len(),
            jobs = jobs.len(),
            planned,
            "events planned"
        );
        // Claimed before they are worked on: another node may have claimed some from storage.
        let got = shared.take(jobs.iter().map(WorkKey::job).collect()).await;
        for (job, mine) in jobs.into_iter().zip(got) {
            if mine {
                dispatcher.enqueue(job);
            }
        }
    }
}
