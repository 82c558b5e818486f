//! Hosted topics in memory: the same numbering, indexes and retention as the sled backend.

use async_trait::async_trait;

use super::{Inner, MemoryStore};
use crate::storage::Result;
use crate::storage::hosted::{
    EntryRange, HostedChange, HostedEntry, HostedStore, HostedTopic, HostedWrite,
};

impl Inner {
    pub(super) fn apply_hosted(&mut self, w: &HostedWrite) {
        let key = match &w.change {
            HostedChange::Put(e) => e.key.clone(),
            HostedChange::Delete { key } => key.clone(),
        };
        if let Some(old) = self.hosted_keys.remove(&(w.name.clone(), key)) {
            self.hosted_entries.remove(&(w.name.clone(), old));
        }
        if let HostedChange::Put(e) = &w.change {
            let n = self.hosted_seqs.entry(w.name.clone()).or_default();
            *n += 1;
            let seq = *n;
            let mut e = e.clone();
            e.seq = seq;
            self.hosted_keys
                .insert((w.name.clone(), e.key.clone()), seq);
            self.hosted_entries.insert((w.name.clone(), seq), *e);
        }
    }

    fn hosted_range(&self, name: &str) -> impl DoubleEndedIterator<Item = &HostedEntry> {
        self.hosted_entries
            .range((name.to_owned(), 0)..=(name.to_owned(), u64::MAX))
            .map(|(_, e)| e)
    }
}

#[async_trait]
impl HostedStore for MemoryStore {
    async fn create_hosted(&self, topic: HostedTopic) -> Result<bool> {
        let mut g = self.lock();
        if g.hosted.contains_key(&topic.name) {
            return Ok(false);
        }
        g.hosted.insert(topic.name.clone(), topic);
        Ok(true)
    }

    async fn hosted(&self, name: &str) -> Result<Option<HostedTopic>> {
        Ok(self.lock().hosted.get(name).cloned())
    }

    async fn hosted_topics(&self, after: Option<&str>, limit: usize) -> Result<Vec<HostedTopic>> {
        let g = self.lock();
        Ok(g.hosted
            .values()
            .filter(|t| after.is_none_or(|a| t.name.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn hosted_entry(&self, name: &str, key: &str) -> Result<Option<HostedEntry>> {
        let g = self.lock();
        let seq = g.hosted_keys.get(&(name.to_owned(), key.to_owned()));
        Ok(seq.and_then(|s| g.hosted_entries.get(&(name.to_owned(), *s)).cloned()))
    }

    async fn hosted_entry_by_id(&self, name: &str, id: &str) -> Result<Option<HostedEntry>> {
        let g = self.lock();
        Ok(g.hosted_range(name).find(|e| e.id == id).cloned())
    }

    async fn hosted_entries(
        &self,
        name: &str,
        range: EntryRange,
        limit: usize,
    ) -> Result<Vec<HostedEntry>> {
        let g = self.lock();
        Ok(match range {
            EntryRange::Before(b) => g
                .hosted_range(name)
                .rev()
                .filter(|e| e.seq < b)
                .take(limit)
                .cloned()
                .collect(),
            EntryRange::After(a) => g
                .hosted_range(name)
                .filter(|e| e.seq > a)
                .take(limit)
                .cloned()
                .collect(),
        })
    }

    async fn hosted_count(&self, name: &str) -> Result<(u64, u64)> {
        let g = self.lock();
        let n = g.hosted_range(name).count() as u64;
        let newest = g.hosted_range(name).next_back().map_or(0, |e| e.seq);
        Ok((n, newest))
    }

    async fn note_bounce(&self, topic: &str, address: &str) -> Result<u32> {
        let mut g = self.lock();
        let n = g
            .bounces
            .entry((topic.to_owned(), address.to_owned()))
            .or_default();
        *n += 1;
        Ok(*n)
    }

    async fn put_bounce_tag(&self, tag: &str, topic: &str, address: &str) -> Result<()> {
        self.lock()
            .bounce_tags
            .insert(tag.to_owned(), (topic.to_owned(), address.to_owned()));
        Ok(())
    }

    async fn bounce_tag(&self, tag: &str) -> Result<Option<(String, String)>> {
        Ok(self.lock().bounce_tags.get(tag).cloned())
    }

    async fn restore_hosted_last(&self, name: &str, last: u64) -> Result<()> {
        let mut g = self.lock();
        let n = g.hosted_seqs.entry(name.to_owned()).or_default();
        *n = (*n).max(last);
        Ok(())
    }

    async fn restore_hosted_entry(&self, name: &str, e: HostedEntry) -> Result<()> {
        let mut g = self.lock();
        let last = g.hosted_seqs.entry(name.to_owned()).or_default();
        *last = (*last).max(e.seq);
        g.hosted_keys
            .insert((name.to_owned(), e.key.clone()), e.seq);
        g.hosted_entries.insert((name.to_owned(), e.seq), e);
        Ok(())
    }

    async fn put_mirrored(&self, name: &str, entries: Vec<HostedEntry>) -> Result<u64> {
        let mut g = self.lock();
        let mut written = 0;
        for e in entries {
            let same = g
                .hosted_keys
                .get(&(name.to_owned(), e.key.clone()))
                .and_then(|seq| g.hosted_entries.get(&(name.to_owned(), *seq)))
                .is_some_and(|old| old.digest == e.digest);
            if same {
                continue;
            }
            g.apply_hosted(&HostedWrite {
                name: name.to_owned(),
                change: HostedChange::Put(Box::new(e)),
            });
            written += 1;
        }
        Ok(written)
    }

    async fn hosted_last(&self, name: &str) -> Result<u64> {
        Ok(self.lock().hosted_seqs.get(name).copied().unwrap_or(0))
    }

    async fn prune_hosted(&self, name: &str, older_than_ms: u64, limit: usize) -> Result<u64> {
        let mut g = self.lock();
        let Some(topic) = g.hosted.get(name).cloned() else {
            return Ok(0);
        };
        let count = g.hosted_range(name).count() as u64;
        let mut over = match topic.max_entries {
            0 => 0,
            max => count.saturating_sub(max),
        };
        let doomed: Vec<HostedEntry> = g
            .hosted_range(name)
            .take(limit)
            .take_while(|e| {
                let old = older_than_ms > 0 && e.updated_ms < older_than_ms;
                let goes = over > 0 || old;
                over = over.saturating_sub(1);
                goes
            })
            .cloned()
            .collect();
        let mut trail = topic.trail;
        for e in &doomed {
            g.hosted_keys.remove(&(name.to_owned(), e.key.clone()));
            g.hosted_entries.remove(&(name.to_owned(), e.seq));
            trail = trail.max(e.seq + 1);
        }
        if let Some(t) = g.hosted.get_mut(name) {
            t.trail = trail;
        }
        Ok(doomed.len() as u64)
    }
}
