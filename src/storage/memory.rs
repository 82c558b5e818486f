//! In-memory backend: nothing persisted. For unit tests and experiments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::*;

#[derive(Default)]
struct Inner {
    subs: BTreeMap<Vec<u8>, Subscription>,
    intents: BTreeMap<u64, Intent>,
    pings: BTreeMap<u64, Ping>,
    topics: BTreeMap<String, TopicState>,
    events: BTreeMap<u64, Event>,
    jobs: BTreeMap<(String, u64), Job>,
    retries: BTreeMap<(u64, u64, String, String), Retry>,
    dead: BTreeMap<u64, DeadLetter>,
}

#[derive(Default)]
pub struct MemoryStore {
    // std Mutex: nothing awaits while it is held.
    inner: Mutex<Inner>,
    ids: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn retry_key(r: &Retry) -> (u64, u64, String, String) {
    (r.due_ms, r.event, r.topic.clone(), r.callback.clone())
}

fn topic_prefix(topic: &str) -> Vec<u8> {
    let mut p = topic.as_bytes().to_vec();
    p.push(0);
    p
}

impl IdSource for MemoryStore {
    fn next_id(&self) -> Result<u64> {
        Ok(self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn advance_past(&self, id: u64) -> Result<()> {
        self.ids.fetch_max(id, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl Flush for MemoryStore {
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl SubscriptionStore for MemoryStore {
    async fn upsert(&self, sub: Subscription) -> Result<()> {
        let key = sub_key(&sub.topic, &sub.destination, &sub.callback);
        self.lock().subs.insert(key, sub);
        Ok(())
    }

    async fn get(&self, topic: &str, callback: &str) -> Result<Option<Subscription>> {
        let key = sub_key(topic, &destination_of(callback), callback);
        Ok(self.lock().subs.get(&key).cloned())
    }

    async fn remove(&self, topic: &str, callback: &str) -> Result<bool> {
        let key = sub_key(topic, &destination_of(callback), callback);
        Ok(self.lock().subs.remove(&key).is_some())
    }

    async fn count_for_topic(&self, topic: &str) -> Result<u64> {
        let p = topic_prefix(topic);
        let g = self.lock();
        Ok(g.subs
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .count() as u64)
    }

    async fn destinations(&self, topic: &str) -> Result<Vec<String>> {
        let p = topic_prefix(topic);
        let g = self.lock();
        let set: BTreeSet<String> = g
            .subs
            .range(p.clone()..)
            .take_while(|(k, _)| k.starts_with(&p))
            .map(|(_, s)| s.destination.clone())
            .collect();
        Ok(set.into_iter().collect())
    }

    async fn page(
        &self,
        topic: &str,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let prefix = sub_key(topic, destination, "");
        let g = self.lock();
        Ok(g.subs
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, s)| s)
            .filter(|s| after.is_none_or(|a| s.callback.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>> {
        let g = self.lock();
        Ok(g.subs
            .values()
            .filter(|s| s.expires_ms < now_ms)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn totals(&self) -> Result<(u64, u64)> {
        let g = self.lock();
        let topics: BTreeSet<&str> = g.subs.values().map(|s| s.topic.as_str()).collect();
        Ok((topics.len() as u64, g.subs.len() as u64))
    }

    async fn scan(
        &self,
        topic: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        use std::ops::Bound;
        let prefix = topic.map(topic_prefix).unwrap_or_default();
        let start = match after {
            Some((t, c)) => Bound::Excluded(sub_key(t, &destination_of(c), c)),
            None => Bound::Included(prefix.clone()),
        };
        let g = self.lock();
        Ok(g.subs
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .take(limit)
            .map(|(_, s)| s.clone())
            .collect())
    }

    async fn for_callback(&self, callback: &str, limit: usize) -> Result<Vec<Subscription>> {
        let g = self.lock();
        Ok(g.subs
            .values()
            .filter(|s| s.callback == callback)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn put_intent(&self, intent: Intent) -> Result<()> {
        self.lock().intents.insert(intent.id, intent);
        Ok(())
    }

    async fn remove_intent(&self, id: u64) -> Result<()> {
        self.lock().intents.remove(&id);
        Ok(())
    }

    async fn intents(&self) -> Result<Vec<Intent>> {
        Ok(self.lock().intents.values().cloned().collect())
    }
}

#[async_trait]
impl PublishStore for MemoryStore {
    async fn put_pings(&self, pings: Vec<Ping>) -> Result<()> {
        let mut g = self.lock();
        for p in pings {
            g.pings.insert(p.id, p);
        }
        Ok(())
    }

    async fn pings(&self) -> Result<Vec<Ping>> {
        Ok(self.lock().pings.values().cloned().collect())
    }

    async fn topic_state(&self, topic: &str) -> Result<Option<TopicState>> {
        Ok(self.lock().topics.get(topic).cloned())
    }

    async fn commit_publish(&self, o: PublishOutcome) -> Result<Option<u64>> {
        let seq = match &o.event {
            Some(_) => Some(self.next_id()?),
            None => None,
        };
        let mut g = self.lock();
        g.topics.insert(o.topic.clone(), o.state);
        if let (Some(seq), Some((ev, dests))) = (seq, o.event) {
            g.events.insert(seq, ev.stored(seq, &o.topic));
            for d in dests {
                let job = Job::new(seq, &d, &o.topic);
                g.jobs.insert((d, seq), job);
            }
        }
        g.pings.remove(&o.ping_id);
        Ok(seq)
    }

    async fn drop_ping(&self, ping_id: u64, topic: &str, state: Option<TopicState>) -> Result<()> {
        let mut g = self.lock();
        if let Some(s) = state {
            g.topics.insert(topic.to_owned(), s);
        }
        g.pings.remove(&ping_id);
        Ok(())
    }

    async fn event(&self, seq: u64) -> Result<Option<Event>> {
        Ok(self.lock().events.get(&seq).cloned())
    }

    async fn prune_events(&self, before_ms: u64) -> Result<usize> {
        let mut g = self.lock();
        let mut used: BTreeSet<u64> = g.jobs.values().map(|j| j.event).collect();
        used.extend(g.retries.values().map(|r| r.event));
        used.extend(g.dead.values().map(|d| d.event));
        let doomed: Vec<u64> = g
            .events
            .values()
            .filter(|e| e.created_ms < before_ms && !used.contains(&e.seq))
            .map(|e| e.seq)
            .collect();
        for s in &doomed {
            g.events.remove(s);
        }
        Ok(doomed.len())
    }

    async fn topic_states(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, TopicState)>> {
        let g = self.lock();
        Ok(g.topics
            .iter()
            .filter(|(t, _)| after.is_none_or(|a| t.as_str() > a))
            .take(limit)
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect())
    }

    async fn put_topic_state(&self, topic: &str, state: TopicState) -> Result<()> {
        self.lock().topics.insert(topic.to_owned(), state);
        Ok(())
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let g = self.lock();
        Ok(g.events
            .range(after.saturating_add(1)..)
            .filter(|(s, _)| **s > after)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn recent_events(
        &self,
        topic: &str,
        limit: usize,
        scan: usize,
    ) -> Result<Vec<EventSummary>> {
        let g = self.lock();
        Ok(g.events
            .values()
            .rev()
            .take(scan)
            .filter(|e| e.topic == topic)
            .take(limit)
            .map(Event::summary)
            .collect())
    }

    async fn put_event(&self, event: Event) -> Result<()> {
        self.lock().events.insert(event.seq, event);
        Ok(())
    }
}

#[async_trait]
impl DeliveryStore for MemoryStore {
    async fn jobs(&self) -> Result<Vec<Job>> {
        Ok(self.lock().jobs.values().cloned().collect())
    }

    async fn put_job(&self, job: Job) -> Result<()> {
        self.lock()
            .jobs
            .insert((job.destination.clone(), job.event), job);
        Ok(())
    }

    async fn remove_job(&self, event: u64, destination: &str) -> Result<()> {
        self.lock().jobs.remove(&(destination.to_owned(), event));
        Ok(())
    }

    async fn coalesce_jobs(
        &self,
        destination: &str,
        topic: &str,
        replaced: &[u64],
        event: NewEvent,
    ) -> Result<Job> {
        let seq = self.next_id()?;
        let mut g = self.lock();
        g.events.insert(seq, event.stored(seq, topic));
        for e in replaced {
            g.jobs.remove(&(destination.to_owned(), *e));
        }
        let job = Job::new(seq, destination, topic);
        g.jobs.insert((destination.to_owned(), seq), job.clone());
        Ok(job)
    }

    async fn put_retry(&self, retry: Retry) -> Result<()> {
        self.lock().retries.insert(retry_key(&retry), retry);
        Ok(())
    }

    async fn remove_retry(&self, retry: &Retry) -> Result<()> {
        self.lock().retries.remove(&retry_key(retry));
        Ok(())
    }

    async fn due_retries(&self, now_ms: u64, limit: usize) -> Result<Vec<Retry>> {
        Ok(self
            .lock()
            .retries
            .values()
            .take_while(|r| r.due_ms <= now_ms)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn next_retry_due(&self) -> Result<Option<u64>> {
        Ok(self.lock().retries.keys().next().map(|k| k.0))
    }

    async fn count_retries(&self) -> Result<u64> {
        Ok(self.lock().retries.len() as u64)
    }

    async fn dead_letter(&self, retry: &Retry, failed_ms: u64) -> Result<DeadLetter> {
        let id = self.next_id()?;
        let dl = DeadLetter {
            id,
            event: retry.event,
            topic: retry.topic.clone(),
            callback: retry.callback.clone(),
            attempts: retry.attempts,
            last_error: retry.last_error.clone(),
            failed_ms,
        };
        let mut g = self.lock();
        g.retries.remove(&retry_key(retry));
        g.dead.insert(id, dl.clone());
        Ok(dl)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self.lock().dead.values().take(limit).cloned().collect())
    }

    async fn remove_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>> {
        Ok(self.lock().dead.remove(&id))
    }

    async fn count_dead_letters(&self) -> Result<u64> {
        Ok(self.lock().dead.len() as u64)
    }

    async fn put_dead_letter(&self, dead: DeadLetter) -> Result<()> {
        self.lock().dead.insert(dead.id, dead);
        Ok(())
    }

    async fn replay_dead_letter(&self, id: u64, now_ms: u64) -> Result<Option<Retry>> {
        let mut g = self.lock();
        let Some(dl) = g.dead.remove(&id) else {
            return Ok(None);
        };
        let retry = dl.replayed(now_ms);
        g.retries.insert(retry_key(&retry), retry.clone());
        Ok(Some(retry))
    }

    async fn retries(&self, limit: usize) -> Result<Vec<Retry>> {
        Ok(self.lock().retries.values().take(limit).cloned().collect())
    }
}
