//! In-memory backend: nothing persisted. For unit tests and experiments, including how the hub
//! lives with a failing store: [`MemoryStore::fail`] makes chosen calls fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::*;
use crate::storage::hosted::{HostedEntry, HostedTopic};

mod hosted;

#[derive(Default)]
struct Inner {
    subs: BTreeMap<Vec<u8>, Subscription>,
    intents: BTreeMap<u64, Intent>,
    pings: BTreeMap<u64, Ping>,
    topics: BTreeMap<String, TopicState>,
    events: BTreeMap<u64, Event>,
    lead: u64,
    bytes: u64,
    topic_seqs: BTreeMap<String, u64>,
    cursors: BTreeMap<String, u64>,
    docs: BTreeMap<u64, Event>,
    /// Keyed (event, destination): one event's jobs are one range.
    jobs: BTreeMap<(u64, String), Job>,
    retries: BTreeMap<(u64, u64, String, String), Retry>,
    dead: BTreeMap<u64, DeadLetter>,
    hosted: BTreeMap<String, HostedTopic>,
    /// (name, number) → entry.
    hosted_entries: BTreeMap<(String, u64), HostedEntry>,
    /// (name, key) → number.
    hosted_keys: BTreeMap<(String, String), u64>,
    /// name → the last entry number given.
    hosted_seqs: BTreeMap<String, u64>,
    /// (topic, address) → hard bounces.
    bounces: BTreeMap<(String, String), u32>,
    /// bounce tag → (topic, address).
    bounce_tags: BTreeMap<String, (String, String)>,
}

pub struct MemoryStore {
    // std Mutex: nothing awaits while it is held.
    inner: Mutex<Inner>,
    ids: AtomicU64,
    hub_id: String,
    hub_key: Mutex<Vec<u8>>,
    leases: super::claims::LeaseTable,
    nodes: super::nodes::NodeTable,
    /// Calls made to fail, and how many more times.
    faults: Mutex<std::collections::HashMap<Fault, u32>>,
}

/// Calls of the memory backend that can be made to fail (with a transient error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Storing accepted pings ([`PublishStore::put_pings`]).
    PutPings,
    /// Appending to the event log ([`EventLog::append`]).
    Append,
    /// Flushing ([`Flush::flush`]).
    Flush,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Mutex::default(),
            ids: AtomicU64::default(),
            hub_id: new_hub_id(),
            hub_key: Mutex::new(rand::random::<[u8; 32]>().to_vec()),
            faults: Mutex::default(),
            leases: Default::default(),
            nodes: Default::default(),
        }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes the next `times` calls of `fault` fail (`u32::MAX`: until [`MemoryStore::heal`]).
    pub fn fail(&self, fault: Fault, times: u32) {
        self.faults_lock().insert(fault, times);
    }

    /// Every call succeeds again.
    pub fn heal(&self) {
        self.faults_lock().clear();
    }

    fn faults_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Fault, u32>> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, fault: Fault) -> Result<()> {
        let mut faults = self.faults_lock();
        match faults.get_mut(&fault) {
            Some(0) | None => Ok(()),
            Some(n) => {
                if *n != u32::MAX {
                    *n -= 1;
                }
                Err(StorageError::Transient(format!(
                    "injected failure: {fault:?}"
                )))
            }
        }
    }

    fn generate_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn retry_key(r: &Retry) -> (u64, u64, String, String) {
    (r.due_ms, r.event, r.topic.clone(), r.callback.clone())
}

#[async_trait]
impl IdSource for MemoryStore {
    async fn next_id(&self) -> Result<u64> {
        Ok(self.generate_id())
    }

    async fn advance_past(&self, id: u64) -> Result<()> {
        self.ids.fetch_max(id, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl Flush for MemoryStore {
    async fn flush(&self) -> Result<()> {
        self.check(Fault::Flush)
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
        let (prefix, start) = scan_range(topic, after);
        let g = self.lock();
        Ok(g.subs
            .range((start, std::ops::Bound::Unbounded))
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
        self.check(Fault::PutPings)?;
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

    async fn drop_ping(&self, ping_id: u64, topic: &str, state: Option<TopicState>) -> Result<()> {
        let mut g = self.lock();
        if let Some(s) = state {
            g.topics.insert(topic.to_owned(), s);
        }
        g.pings.remove(&ping_id);
        Ok(())
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
}

#[async_trait]
impl DeliveryStore for MemoryStore {
    async fn jobs(&self) -> Result<Vec<Job>> {
        Ok(self.lock().jobs.values().cloned().collect())
    }

    async fn jobs_of(&self, event: u64) -> Result<Vec<Job>> {
        let g = self.lock();
        Ok(g.jobs
            .range((event, String::new())..)
            .take_while(|((e, _), _)| *e == event)
            .map(|(_, j)| j.clone())
            .collect())
    }

    async fn job(&self, event: u64, destination: &str) -> Result<Option<Job>> {
        Ok(self
            .lock()
            .jobs
            .get(&(event, destination.to_owned()))
            .cloned())
    }

    async fn put_job(&self, job: Job) -> Result<()> {
        self.lock()
            .jobs
            .insert((job.event, job.destination.clone()), job);
        Ok(())
    }

    async fn remove_jobs(&self, event: u64, destinations: &[String]) -> Result<()> {
        let mut g = self.lock();
        for d in destinations {
            g.jobs.remove(&(event, d.clone()));
        }
        Ok(())
    }

    async fn remove_all_jobs(&self, event: u64) -> Result<()> {
        let mut g = self.lock();
        let keys: Vec<(u64, String)> = g
            .jobs
            .range((event, String::new())..)
            .take_while(|((e, _), _)| *e == event)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            g.jobs.remove(&k);
        }
        Ok(())
    }

    async fn put_merged(&self, destination: &str, topic: &str, event: NewEvent) -> Result<Job> {
        let seq = self.generate_id() | DELIVERY_DOC;
        let mut g = self.lock();
        g.docs
            .insert(seq, event.stored(seq, topic, 0, &self.hub_id));
        let job = Job::new(seq, destination, topic);
        g.jobs.insert((seq, destination.to_owned()), job.clone());
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
        let id = self.generate_id();
        let dl = retry.dead(id, failed_ms);
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

#[async_trait]
impl EventLog for MemoryStore {
    fn hub_id(&self) -> String {
        self.hub_id.clone()
    }

    fn hub_key(&self) -> Vec<u8> {
        self.hub_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn restore_hub_key(&self, key: Vec<u8>) -> Result<()> {
        *self.hub_key.lock().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    async fn append(&self, commits: &[Commit]) -> Result<Vec<Option<Event>>> {
        self.check(Fault::Append)?;
        let mut g = self.lock();
        let mut numbers = Vec::with_capacity(commits.len());
        for c in commits {
            if let Some(state) = &c.state {
                g.topics.insert(c.topic.clone(), state.clone());
            }
            if let Some((consumer, seq)) = &c.cursor {
                g.cursors.insert(consumer.clone(), *seq);
            }
            for id in &c.ping_ids {
                g.pings.remove(id);
            }
            let Some(ev) = c.event.clone() else {
                numbers.push(None);
                continue;
            };
            g.lead += 1;
            let seq = g.lead;
            let topic_seq = g.topic_seqs.entry(c.topic.clone()).or_default();
            *topic_seq += 1;
            let topic_seq = *topic_seq;
            if let Some(w) = &c.hosted {
                g.apply_hosted(w);
            }
            let event = ev.stored(seq, &c.topic, topic_seq, &self.hub_id);
            for d in &c.destinations {
                g.jobs.insert((seq, d.clone()), Job::new(seq, d, &c.topic));
            }
            g.bytes += event.body.len() as u64;
            g.events.insert(seq, event.clone());
            numbers.push(Some(event));
        }
        Ok(numbers)
    }

    async fn bounds(&self) -> Result<LogBounds> {
        let g = self.lock();
        Ok(LogBounds {
            trail: g.events.keys().next().copied().unwrap_or(g.lead + 1),
            lead: g.lead,
            events: g.events.len() as u64,
            bytes: g.bytes,
        })
    }

    async fn read(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Event>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let g = self.lock();
        Ok(g.events
            .range(from..to)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn summaries(&self, from: u64, to: u64, limit: usize) -> Result<Vec<EventSummary>> {
        // Bodies are shared (`Bytes`): reading them costs no copy here.
        let events = self.read(from, to, limit).await?;
        Ok(events.iter().map(Event::summary).collect())
    }

    async fn event(&self, seq: u64) -> Result<Option<Event>> {
        let g = self.lock();
        Ok(g.events.get(&seq).or_else(|| g.docs.get(&seq)).cloned())
    }

    async fn recent_for_topic(
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

    async fn prune(
        &self,
        retention: Retention,
        now_ms: u64,
        up_to: u64,
        collect: &[u64],
    ) -> Result<(u64, Vec<u64>)> {
        let mut g = self.lock();
        let mut used: BTreeSet<u64> = g.jobs.values().map(|j| j.event).collect();
        used.extend(g.retries.values().map(|r| r.event));
        used.extend(g.dead.values().map(|d| d.event));
        let mut pruned = 0;
        while let Some((&seq, e)) = g.events.first_key_value() {
            if seq > up_to || !retention.drops(e.created_ms, now_ms, g.bytes) {
                break;
            }
            let e = g.events.remove(&seq).expect("first entry");
            g.bytes = g.bytes.saturating_sub(e.body.len() as u64);
            if used.contains(&seq) {
                g.docs.insert(seq, e);
            }
            pruned += 1;
        }
        let mut unreferenced = Vec::new();
        let docs: Vec<u64> = g.docs.keys().copied().collect();
        for seq in docs {
            if used.contains(&seq) {
                continue;
            }
            if collect.contains(&seq) {
                g.docs.remove(&seq);
            } else {
                unreferenced.push(seq);
            }
        }
        Ok((pruned, unreferenced))
    }

    async fn cursor(&self, consumer: &str) -> Result<Option<u64>> {
        Ok(self.lock().cursors.get(consumer).copied())
    }

    async fn put_cursor(&self, consumer: &str, seq: u64) -> Result<()> {
        self.lock().cursors.insert(consumer.to_owned(), seq);
        Ok(())
    }

    async fn documents(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let g = self.lock();
        Ok(g.docs
            .range(after.saturating_add(1)..)
            .filter(|(s, _)| **s > after)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn restore(&self, event: Event, document: bool) -> Result<()> {
        let mut g = self.lock();
        if document {
            g.docs.insert(event.seq, event);
            return Ok(());
        }
        g.lead = g.lead.max(event.seq);
        let known = g.topic_seqs.entry(event.topic.clone()).or_default();
        *known = (*known).max(event.topic_seq);
        g.bytes += event.body.len() as u64;
        if let Some(old) = g.events.insert(event.seq, event) {
            g.bytes = g.bytes.saturating_sub(old.body.len() as u64);
        }
        Ok(())
    }
}

#[async_trait]
impl ClaimStore for MemoryStore {
    async fn claim_intents(&self, c: &Claim, limit: usize) -> Result<Vec<Intent>> {
        let all: Vec<Intent> = self.lock().intents.values().cloned().collect();
        Ok(self.claim_from(c, all, limit, |i| WorkKey::Intent(i.id)))
    }

    async fn claim_pings(&self, c: &Claim, limit: usize) -> Result<Vec<Ping>> {
        let all: Vec<Ping> = self.lock().pings.values().cloned().collect();
        Ok(self.claim_from(c, all, limit, |p| WorkKey::Ping(p.id)))
    }

    async fn claim_topic_pings(
        &self,
        c: &Claim,
        topic: &str,
        received_by: u64,
        limit: usize,
    ) -> Result<Vec<Ping>> {
        let all: Vec<Ping> = self
            .lock()
            .pings
            .values()
            .filter(|p| p.topic == topic && p.fat.is_none() && p.received_ms <= received_by)
            .cloned()
            .collect();
        Ok(self.claim_from(c, all, limit, |p| WorkKey::Ping(p.id)))
    }

    async fn claim_jobs(&self, c: &Claim, up_to: u64, limit: usize) -> Result<Vec<Job>> {
        let all: Vec<Job> = self
            .lock()
            .jobs
            .values()
            .filter(|j| j.event <= up_to || j.event & DELIVERY_DOC != 0)
            .cloned()
            .collect();
        Ok(self.claim_from(c, all, limit, WorkKey::job))
    }

    async fn claim_due_retries(&self, c: &Claim, limit: usize) -> Result<Vec<Retry>> {
        let due: Vec<Retry> = self
            .lock()
            .retries
            .values()
            .take_while(|r| r.due_ms <= c.now_ms)
            .cloned()
            .collect();
        Ok(self.claim_from(c, due, limit, WorkKey::retry))
    }

    async fn release_all(&self, node: &str) -> Result<u64> {
        Ok(self.leases.release_all(node))
    }

    async fn acquire(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<bool>> {
        Ok(self.leases.acquire(c, keys))
    }

    async fn renew(&self, c: &Claim, keys: &[WorkKey]) -> Result<Vec<WorkKey>> {
        Ok(self.leases.renew(c, keys))
    }

    async fn release(&self, node: &str, keys: &[WorkKey]) -> Result<()> {
        self.leases.release(node, keys);
        Ok(())
    }
}

impl MemoryStore {
    /// The first `limit` of `items` nobody holds, claimed for `c.node`.
    fn claim_from<T>(
        &self,
        c: &Claim,
        items: Vec<T>,
        limit: usize,
        key_of: impl Fn(&T) -> WorkKey,
    ) -> Vec<T> {
        items
            .into_iter()
            .filter(|item| self.leases.take(c, &key_of(item), false))
            .take(limit)
            .collect()
    }
}

#[async_trait]
impl NodeStore for MemoryStore {
    async fn heartbeat(&self, id: &str, address: &str, started_ms: u64, now_ms: u64) -> Result<()> {
        self.nodes.heartbeat(id, address, started_ms, now_ms);
        Ok(())
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<NodeInfo>> {
        Ok(self.nodes.nodes(&self.leases.held(now_ms)))
    }

    async fn forget_nodes(&self, before_ms: u64) -> Result<u64> {
        Ok(self.nodes.forget(before_ms))
    }
}
