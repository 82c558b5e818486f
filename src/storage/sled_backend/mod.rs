//! sled backend (embedded, the default). One `Db`, one tree per keyspace. Numbers in keys are
//! big-endian so range scans come out in order. Multi-tree updates use sled transactions
//! (never with a range scan inside: keys are designed so that every write is idempotent).

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

mod claims;
mod hosted;
mod jobs;
mod log;
mod nodes;
mod subs;

use super::codec::{
    decode_event, decode_event_summary, decode_ping, decode_sub, encode_event, encode_ping,
    encode_sub_value, from_json, json,
};
use super::*;

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(e) => StorageError::Transient(e.to_string()),
            sled::Error::Corruption { .. } => StorageError::Corrupt(e.to_string()),
            other => StorageError::Permanent(other.to_string()),
        }
    }
}

pub struct SledStore {
    db: sled::Db,
    flusher: GroupFlush,
    /// `lead`, `hub_id`, `hub_key`.
    meta: sled::Tree,
    /// topic → its last event number.
    topic_seqs: sled::Tree,
    /// consumer name → the last event it took.
    cursors: sled::Tree,
    /// Delivery documents: merged events, and copies of pruned events still referred to.
    docs: sled::Tree,
    /// Claimed work (in memory: one process holds a sled store).
    leases: super::claims::LeaseTable,
    /// This process's heartbeat.
    nodes: super::nodes::NodeTable,
    hub_id: String,
    /// The store's secret (links and addresses the hub signs).
    hub_key: Mutex<Vec<u8>>,
    /// Appends and prunes take turns, so that numbers are handed out without conflicts and the
    /// counters below stay exact.
    log_lock: Mutex<LogCounters>,
    subs: sled::Tree,
    counts: sled::Tree,
    expiry: sled::Tree,
    intents: sled::Tree,
    pings: sled::Tree,
    topics: sled::Tree,
    events: sled::Tree,
    /// Delivery jobs: one record per event ([`jobs`]).
    fanouts: sled::Tree,
    retries: sled::Tree,
    dead: sled::Tree,
    /// Records in `retries` and `dead`: counted once at open, then kept up to date, so the
    /// gauges and the status page do not walk the trees (sled's `len` does).
    retry_count: AtomicU64,
    dead_count: AtomicU64,
    /// Hosted topics ([`hosted`]).
    hosted_topics: sled::Tree,
    hosted_entries: sled::Tree,
    hosted_index: sled::Tree,
}

/// The log's lead and size, read at open and kept up to date under `log_lock`.
struct LogCounters {
    lead: u64,
    events: u64,
    bytes: u64,
}

const LEAD: &[u8] = b"lead";
/// Most events one retention pass removes (the rest go at the next sweep).
const PRUNE_BATCH: usize = 10_000;
const HUB_ID: &[u8] = b"hub_id";
const HUB_KEY: &[u8] = b"hub_key";

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(c.saturating_sub(n))
    });
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_be(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StorageError::Corrupt("short numeric key".into()))?;
    Ok(u64::from_be_bytes(arr))
}

fn expiry_key(s: &Subscription) -> Vec<u8> {
    let mut k = be(s.expires_ms).to_vec();
    k.extend_from_slice(&sub_key(&s.topic, &s.destination, &s.callback));
    k
}

fn retry_key(r: &Retry) -> Vec<u8> {
    let mut k = be(r.due_ms).to_vec();
    k.extend_from_slice(&be(r.event));
    k.extend_from_slice(r.topic.as_bytes());
    k.push(0);
    k.extend_from_slice(r.callback.as_bytes());
    k
}

fn tx_err(e: TransactionError<StorageError>) -> StorageError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

fn abort(e: StorageError) -> ConflictableTransactionError<StorageError> {
    ConflictableTransactionError::Abort(e)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Fails loudly on a corrupt database.
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<SledStore> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let t = |name: &str| db.open_tree(name);
        let retries = t("retries")?;
        let dead = t("dead_letters")?;
        let meta = t("meta")?;
        let events = t("events")?;
        let hub_id = match meta.get(HUB_ID)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = super::new_hub_id();
                meta.insert(HUB_ID, id.as_bytes())?;
                id
            }
        };
        let hub_key = match meta.get(HUB_KEY)? {
            Some(v) => v.to_vec(),
            None => {
                let key = rand::random::<[u8; 32]>().to_vec();
                meta.insert(HUB_KEY, key.as_slice())?;
                key
            }
        };
        let mut counters = LogCounters {
            lead: 0,
            events: 0,
            bytes: 0,
        };
        for entry in events.iter() {
            let (_, v) = entry?;
            counters.events += 1;
            counters.bytes += decode_event_summary(&v)?.bytes as u64;
        }
        counters.lead = match meta.get(LEAD)? {
            Some(v) => read_be(&v)?,
            // A store from before the log kept its lead: its newest event.
            None => match events.last()? {
                Some((k, _)) => read_be(&k)?,
                None => 0,
            },
        };
        let fanouts = t("fanouts")?;
        // Jobs stored one record each by earlier versions: moved, then their tree goes.
        if db.tree_names().iter().any(|n| n.as_ref() == b"jobs") {
            jobs::migrate_old_jobs(&t("jobs")?, &fanouts)?;
            db.drop_tree("jobs")?;
        }
        Ok(SledStore {
            fanouts,
            topic_seqs: t("topic_seqs")?,
            cursors: t("cursors")?,
            docs: t("delivery_docs")?,
            leases: Default::default(),
            nodes: Default::default(),
            hub_id,
            hub_key: Mutex::new(hub_key),
            log_lock: Mutex::new(counters),
            meta,
            events,
            retry_count: AtomicU64::new(retries.len() as u64),
            dead_count: AtomicU64::new(dead.len() as u64),
            retries,
            dead,
            subs: t("subs")?,
            counts: t("sub_counts")?,
            expiry: t("sub_expiry")?,
            intents: t("intents")?,
            pings: t("pings")?,
            topics: t("topics")?,
            hosted_topics: t("hosted_topics")?,
            hosted_entries: t("hosted_entries")?,
            hosted_index: t("hosted_index")?,
            flusher: GroupFlush::default(),
            db,
        })
    }

    /// Subscriptions from `start` on, while their keys begin with `prefix`; at most `limit`.
    fn subs_from(
        &self,
        prefix: &[u8],
        start: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let mut out = Vec::new();
        for entry in self.subs.range((start, Bound::Unbounded)) {
            let (k, v) = entry?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push(decode_sub(&k, &v)?);
        }
        Ok(out)
    }

    fn scan_prefix_values(&self, tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<sled::IVec>> {
        tree.scan_prefix(prefix)
            .values()
            .collect::<std::result::Result<_, _>>()
            .map_err(Into::into)
    }
}

impl SledStore {
    fn generate_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()? + 1)
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, LogCounters> {
        self.log_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Event numbers every job, retry and dead letter refers to.
    fn referenced_events(&self) -> Result<BTreeSet<u64>> {
        let mut used = BTreeSet::new();
        for entry in self.dead.iter() {
            let (_, v) = entry?;
            let d: DeadLetter = from_json(&v)?;
            used.insert(d.event);
        }
        for entry in self.fanouts.iter() {
            let (k, _) = entry?;
            used.insert(read_be(&k)?);
        }
        for entry in self.retries.iter() {
            let (k, _) = entry?;
            let event = k
                .get(8..)
                .ok_or_else(|| StorageError::Corrupt("short retry key".into()))?;
            used.insert(read_be(event)?);
        }
        // Dead letters again: a retry that became one while `retries` was read is seen here
        // (and one replayed into a retry while the first pass ran was seen in `retries`).
        for entry in self.dead.iter() {
            let (_, v) = entry?;
            let d: DeadLetter = from_json(&v)?;
            used.insert(d.event);
        }
        Ok(used)
    }
}

/// sled's `generate_id` is a cheap atomic with a persisted high-water mark: it does not block.
#[async_trait]
impl IdSource for SledStore {
    async fn next_id(&self) -> Result<u64> {
        self.generate_id()
    }

    async fn advance_past(&self, id: u64) -> Result<()> {
        // sled's counter only counts up: step it past `id` (cheap, done once per restore).
        while self.db.generate_id()? < id {}
        Ok(())
    }
}

/// Group commit. Every caller takes a ticket after its writes; one blocking `Db::flush` on the
/// blocking pool covers every ticket taken before it started, so concurrent callers share
/// flushes instead of queueing one each. (`flush_async` is not used: concurrent calls can
/// leave futures that are never woken in sled 0.34.)
#[derive(Default)]
struct GroupFlush {
    requested: AtomicU64,
    done: AtomicU64,
    running: tokio::sync::Mutex<()>,
}

#[async_trait]
impl Flush for SledStore {
    async fn flush(&self) -> Result<()> {
        let f = &self.flusher;
        let ticket = f.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = f.running.lock().await;
        if f.done.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let covered = f.requested.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StorageError::Permanent(format!("flush task failed: {e}")))??;
        f.done.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl PublishStore for SledStore {
    async fn put_pings(&self, pings: Vec<Ping>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for p in &pings {
            batch.insert(&be(p.id), encode_ping(p));
        }
        self.pings.apply_batch(batch)?;
        Ok(())
    }

    async fn pings(&self) -> Result<Vec<Ping>> {
        self.scan_prefix_values(&self.pings, &[])?
            .iter()
            .map(|v| decode_ping(v))
            .collect()
    }

    async fn topic_state(&self, topic: &str) -> Result<Option<TopicState>> {
        self.topics
            .get(topic.as_bytes())?
            .map(|v| from_json(&v))
            .transpose()
    }

    async fn drop_ping(&self, ping_id: u64, topic: &str, state: Option<TopicState>) -> Result<()> {
        let state = state.map(|s| json(&s));
        (&self.topics, &self.pings)
            .transaction(|(topics, pings)| {
                if let Some(s) = &state {
                    topics.insert(topic.as_bytes(), s.as_slice())?;
                }
                pings.remove(&be(ping_id))?;
                Ok(())
            })
            .map_err(tx_err)
    }

    async fn topic_states(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, TopicState)>> {
        let start = match after {
            Some(a) => Bound::Excluded(a.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in self.topics.range((start, Bound::Unbounded)).take(limit) {
            let (k, v) = entry?;
            out.push((String::from_utf8_lossy(&k).into_owned(), from_json(&v)?));
        }
        Ok(out)
    }

    async fn put_topic_state(&self, topic: &str, state: TopicState) -> Result<()> {
        self.topics.insert(topic.as_bytes(), json(&state))?;
        Ok(())
    }
}

#[async_trait]
impl DeliveryStore for SledStore {
    async fn jobs(&self) -> Result<Vec<Job>> {
        self.all_jobs()
    }

    async fn jobs_of(&self, event: u64) -> Result<Vec<Job>> {
        self.jobs_of_event(event)
    }

    async fn job(&self, event: u64, destination: &str) -> Result<Option<Job>> {
        self.one_job(event, destination)
    }

    async fn put_job(&self, job: Job) -> Result<()> {
        self.store_job(&job)
    }

    async fn remove_jobs(&self, event: u64, destinations: &[String]) -> Result<()> {
        self.drop_jobs(event, destinations)
    }

    async fn remove_all_jobs(&self, event: u64) -> Result<()> {
        self.fanouts.remove(be(event))?;
        Ok(())
    }

    async fn put_merged(&self, destination: &str, topic: &str, event: NewEvent) -> Result<Job> {
        let seq = self.generate_id()? | DELIVERY_DOC;
        let record = encode_event(&event.stored(seq, topic, 0, &self.hub_id));
        let job = Job::new(seq, destination, topic);
        let jobs = jobs::Fanout::new(topic, [&job.destination]);
        // The document first: a job never refers to a document that is not stored.
        self.docs.insert(be(seq), record)?;
        self.fanouts.insert(be(seq), jobs.encode())?;
        Ok(job)
    }

    async fn put_retry(&self, retry: Retry) -> Result<()> {
        if self
            .retries
            .insert(retry_key(&retry), json(&retry))?
            .is_none()
        {
            add(&self.retry_count, 1);
        }
        Ok(())
    }

    async fn remove_retry(&self, retry: &Retry) -> Result<()> {
        if self.retries.remove(retry_key(retry))?.is_some() {
            sub(&self.retry_count, 1);
        }
        Ok(())
    }

    async fn due_retries(&self, now_ms: u64, limit: usize) -> Result<Vec<Retry>> {
        let mut end = be(now_ms).to_vec();
        end.push(0xff);
        let mut out = Vec::new();
        for entry in self.retries.range(..end) {
            let (_, v) = entry?;
            let r: Retry = from_json(&v)?;
            if r.due_ms > now_ms || out.len() >= limit {
                break;
            }
            out.push(r);
        }
        Ok(out)
    }

    async fn next_retry_due(&self) -> Result<Option<u64>> {
        match self.retries.first()? {
            Some((k, _)) => Ok(Some(read_be(&k)?)),
            None => Ok(None),
        }
    }

    async fn count_retries(&self) -> Result<u64> {
        Ok(self.retry_count.load(Ordering::Relaxed))
    }

    async fn dead_letter(&self, retry: &Retry, failed_ms: u64) -> Result<DeadLetter> {
        let dl = retry.dead(self.generate_id()?, failed_ms);
        let rkey = retry_key(retry);
        let value = json(&dl);
        let had_retry = (&self.retries, &self.dead)
            .transaction(|(retries, dead)| {
                let removed = retries.remove(rkey.as_slice())?;
                dead.insert(&be(dl.id), value.as_slice())?;
                Ok(removed.is_some())
            })
            .map_err(tx_err)?;
        if had_retry {
            sub(&self.retry_count, 1);
        }
        add(&self.dead_count, 1);
        Ok(dl)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        for entry in self.dead.iter().take(limit) {
            let (_, v) = entry?;
            out.push(from_json(&v)?);
        }
        Ok(out)
    }

    async fn remove_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>> {
        let removed = self.dead.remove(be(id))?;
        if removed.is_some() {
            sub(&self.dead_count, 1);
        }
        removed.map(|v| from_json(&v)).transpose()
    }

    async fn count_dead_letters(&self) -> Result<u64> {
        Ok(self.dead_count.load(Ordering::Relaxed))
    }

    async fn put_dead_letter(&self, dead: DeadLetter) -> Result<()> {
        if self.dead.insert(be(dead.id), json(&dead))?.is_none() {
            add(&self.dead_count, 1);
        }
        Ok(())
    }

    async fn replay_dead_letter(&self, id: u64, now_ms: u64) -> Result<Option<Retry>> {
        let replayed = (&self.dead, &self.retries)
            .transaction(|(dead, retries)| {
                let Some(v) = dead.remove(&be(id))? else {
                    return Ok(None);
                };
                let dl: DeadLetter = from_json(&v).map_err(abort)?;
                let retry = dl.replayed(now_ms);
                let replaced = retries.insert(retry_key(&retry), json(&retry))?;
                Ok(Some((retry, replaced.is_none())))
            })
            .map_err(tx_err)?;
        Ok(replayed.map(|(retry, new_retry)| {
            sub(&self.dead_count, 1);
            if new_retry {
                add(&self.retry_count, 1);
            }
            retry
        }))
    }

    async fn retries(&self, limit: usize) -> Result<Vec<Retry>> {
        let mut out = Vec::new();
        for entry in self.retries.iter().take(limit) {
            let (_, v) = entry?;
            out.push(from_json(&v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_stored_under_the_old_keys_are_found_and_removed_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let jobs = db.open_tree("jobs").unwrap();
            let mut old_key = b"http://x:80".to_vec();
            old_key.push(0);
            old_key.extend_from_slice(&be(7));
            jobs.insert(old_key, json(&Job::new(7, "http://x:80", "http://t/")))
                .unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert!(
            !store.db.tree_names().iter().any(|n| n.as_ref() == b"jobs"),
            "the old tree is gone"
        );
        let found = store.jobs_of(7).await.unwrap();
        assert_eq!(found, vec![Job::new(7, "http://x:80", "http://t/")]);
        store.remove_jobs(7, &["http://x:80".into()]).await.unwrap();
        assert!(store.jobs().await.unwrap().is_empty());
    }
}
