//! Hosted topics on sled: `hosted_topics` (name → record), `hosted_entries` (name `\0` number
//! → entry) and `hosted_index` (name `\0` `k` key, and name `\0` `i` Atom id → number; name
//! `\0` `#` → the last number given; `~bounce` `\0` `t` tag → a mail subscriber's topic and
//! address). The
//! entries and their index are written by the log's append ([`put_in_tx`]), in the transaction
//! of the event that carries them.

use async_trait::async_trait;
use sled::transaction::TransactionalTree;

use super::*;
use crate::storage::hosted::{
    EntryRange, HostedChange, HostedEntry, HostedStore, HostedTopic, HostedWrite,
};

fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

fn entry_key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(name);
    k.extend_from_slice(&be(seq));
    k
}

fn index_key(name: &str, tag: u8, value: &str) -> Vec<u8> {
    let mut k = prefix(name);
    k.push(tag);
    k.extend_from_slice(value.as_bytes());
    k
}

/// The prefix of bounce tags in `hosted_index`: no topic name or URL starts with `~`.
const BOUNCE_TAGS: &str = "~bounce";
const KEY: u8 = b'k';
const ID: u8 = b'i';

/// The topic's last entry number, in `hosted_index` under name `\0` `#`.
fn counter_key(name: &str) -> Vec<u8> {
    let mut k = prefix(name);
    k.push(b'#');
    k
}

/// Applies `write` inside the append transaction: an entry written gets the topic's next
/// number (kept by name, so a change of the hub's URL does not touch it).
pub(super) fn put_in_tx(
    entries: &TransactionalTree,
    index: &TransactionalTree,
    write: &HostedWrite,
) -> std::result::Result<(), ConflictableTransactionError<StorageError>> {
    let name = write.name.as_str();
    let key = match &write.change {
        HostedChange::Put(e) => e.key.as_str(),
        HostedChange::Delete { key } => key.as_str(),
    };
    // The previous version (if any) leaves its number.
    if let Some(old) = index.get(index_key(name, KEY, key))? {
        let old = read_be(&old).map_err(abort)?;
        if let Some(v) = entries.remove(entry_key(name, old))? {
            let prev: HostedEntry = from_json(&v).map_err(abort)?;
            index.remove(index_key(name, ID, &prev.id))?;
        }
        index.remove(index_key(name, KEY, key))?;
    }
    if let HostedChange::Put(e) = &write.change {
        let seq = match index.get(counter_key(name))? {
            Some(v) => read_be(&v).map_err(abort)? + 1,
            None => 1,
        };
        index.insert(counter_key(name), &be(seq))?;
        let mut e = e.clone();
        e.seq = seq;
        entries.insert(entry_key(name, seq), json(&e))?;
        index.insert(index_key(name, KEY, &e.key), &be(seq))?;
        index.insert(index_key(name, ID, &e.id), &be(seq))?;
    }
    Ok(())
}

impl SledStore {
    fn entry_at(&self, name: &str, index: Option<sled::IVec>) -> Result<Option<HostedEntry>> {
        let Some(seq) = index else { return Ok(None) };
        match self.hosted_entries.get(entry_key(name, read_be(&seq)?))? {
            Some(v) => Ok(Some(from_json(&v)?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl HostedStore for SledStore {
    async fn create_hosted(&self, topic: HostedTopic) -> Result<bool> {
        let created = self
            .hosted_topics
            .compare_and_swap(topic.name.as_bytes(), None::<&[u8]>, Some(json(&topic)))?
            .is_ok();
        Ok(created)
    }

    async fn hosted(&self, name: &str) -> Result<Option<HostedTopic>> {
        match self.hosted_topics.get(name.as_bytes())? {
            Some(v) => Ok(Some(from_json(&v)?)),
            None => Ok(None),
        }
    }

    async fn hosted_topics(&self, after: Option<&str>, limit: usize) -> Result<Vec<HostedTopic>> {
        let start = match after {
            Some(a) => Bound::Excluded(a.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self
            .hosted_topics
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (_, v) = item?;
            out.push(from_json(&v)?);
        }
        Ok(out)
    }

    async fn hosted_entry(&self, name: &str, key: &str) -> Result<Option<HostedEntry>> {
        let seq = self.hosted_index.get(index_key(name, KEY, key))?;
        self.entry_at(name, seq)
    }

    async fn hosted_entry_by_id(&self, name: &str, id: &str) -> Result<Option<HostedEntry>> {
        let seq = self.hosted_index.get(index_key(name, ID, id))?;
        self.entry_at(name, seq)
    }

    async fn hosted_entries(
        &self,
        name: &str,
        range: EntryRange,
        limit: usize,
    ) -> Result<Vec<HostedEntry>> {
        let mut out = Vec::new();
        let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<()> {
            let (_, v) = item?;
            out.push(from_json(&v)?);
            Ok(())
        };
        match range {
            EntryRange::Before(before) => {
                let lo = entry_key(name, 0);
                let hi = entry_key(name, before);
                for item in self.hosted_entries.range(lo..hi).rev().take(limit) {
                    push(item)?;
                }
            }
            EntryRange::After(after) => {
                let lo = entry_key(name, after.saturating_add(1));
                let hi = {
                    let mut p = prefix(name);
                    p.extend_from_slice(&[0xff; 9]);
                    p
                };
                if after < u64::MAX {
                    for item in self.hosted_entries.range(lo..hi).take(limit) {
                        push(item)?;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn hosted_count(&self, name: &str) -> Result<(u64, u64)> {
        let mut n = 0;
        let mut newest = 0;
        for item in self.hosted_entries.scan_prefix(prefix(name)) {
            let (k, _) = item?;
            n += 1;
            newest = read_be(&k[name.len() + 1..])?;
        }
        Ok((n, newest))
    }

    async fn note_bounce(&self, topic: &str, address: &str) -> Result<u32> {
        let key = index_key(topic, b'b', address);
        let n = self
            .hosted_index
            .update_and_fetch(&key, |old| {
                let n = old
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map_or(0, u32::from_be_bytes);
                Some(n.saturating_add(1).to_be_bytes().to_vec())
            })?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map_or(1, u32::from_be_bytes);
        Ok(n)
    }

    async fn put_bounce_tag(&self, tag: &str, topic: &str, address: &str) -> Result<()> {
        let value = json(&(topic, address));
        self.hosted_index
            .insert(index_key(BOUNCE_TAGS, b't', tag), value)?;
        Ok(())
    }

    async fn bounce_tag(&self, tag: &str) -> Result<Option<(String, String)>> {
        match self.hosted_index.get(index_key(BOUNCE_TAGS, b't', tag))? {
            Some(v) => Ok(Some(from_json(&v)?)),
            None => Ok(None),
        }
    }

    async fn restore_hosted_last(&self, name: &str, last: u64) -> Result<()> {
        if last > self.hosted_last(name).await? {
            self.hosted_index.insert(counter_key(name), &be(last))?;
        }
        Ok(())
    }

    async fn restore_hosted_entry(&self, name: &str, e: HostedEntry) -> Result<()> {
        let last = match self.hosted_index.get(counter_key(name))? {
            Some(v) => read_be(&v)?,
            None => 0,
        };
        if e.seq > last {
            self.hosted_index.insert(counter_key(name), &be(e.seq))?;
        }
        self.hosted_index
            .insert(index_key(name, ID, &e.id), &be(e.seq))?;
        self.hosted_index
            .insert(index_key(name, KEY, &e.key), &be(e.seq))?;
        self.hosted_entries
            .insert(entry_key(name, e.seq), json(&e))?;
        Ok(())
    }

    async fn put_mirrored(&self, name: &str, entries: Vec<HostedEntry>) -> Result<u64> {
        let mut written = 0;
        for e in entries {
            let same = match self.hosted_index.get(index_key(name, KEY, &e.key))? {
                Some(seq) => match self.hosted_entries.get(entry_key(name, read_be(&seq)?))? {
                    Some(v) => from_json::<HostedEntry>(&v)?.digest == e.digest,
                    None => false,
                },
                None => false,
            };
            if same {
                continue;
            }
            let write = HostedWrite {
                name: name.to_owned(),
                change: HostedChange::Put(Box::new(e)),
            };
            (&self.hosted_entries, &self.hosted_index)
                .transaction(|(entries, index)| put_in_tx(entries, index, &write))
                .map_err(tx_err)?;
            written += 1;
        }
        Ok(written)
    }

    async fn hosted_last(&self, name: &str) -> Result<u64> {
        match self.hosted_index.get(counter_key(name))? {
            Some(v) => read_be(&v),
            None => Ok(0),
        }
    }

    async fn prune_hosted(&self, name: &str, older_than_ms: u64, limit: usize) -> Result<u64> {
        let Some(mut topic) = self.hosted(name).await? else {
            return Ok(0);
        };
        let (count, _) = self.hosted_count(name).await?;
        let mut over = match topic.max_entries {
            0 => 0,
            max => count.saturating_sub(max),
        };
        let mut removed = 0u64;
        let mut trail = topic.trail;
        for item in self.hosted_entries.scan_prefix(prefix(name)).take(limit) {
            let (k, v) = item?;
            let e: HostedEntry = from_json(&v)?;
            let old = older_than_ms > 0 && e.updated_ms < older_than_ms;
            if over == 0 && !old {
                break;
            }
            over = over.saturating_sub(1);
            // The entry and its index go together, and only while the index still points at
            // this version: a new version written meanwhile (which freed this one) stays.
            let seq = e.seq;
            let gone = (&self.hosted_entries, &self.hosted_index)
                .transaction(|(entries, index)| {
                    if entries.remove(k.as_ref())?.is_none() {
                        return Ok(false);
                    }
                    for ik in [index_key(name, KEY, &e.key), index_key(name, ID, &e.id)] {
                        if index.get(&ik)?.is_some_and(|v| v.as_ref() == be(seq)) {
                            index.remove(ik)?;
                        }
                    }
                    Ok(true)
                })
                .map_err(tx_err)?;
            trail = trail.max(seq.saturating_add(1));
            removed += u64::from(gone);
        }
        if trail != topic.trail {
            topic.trail = trail;
            self.hosted_topics.insert(name.as_bytes(), json(&topic))?;
        }
        Ok(removed)
    }
}
