//! Subscriptions on sled: `subs` keyed (topic, destination, callback), with `sub_counts` and the
//! `sub_expiry` index kept up to date by single-key writes in a crash-safe order (no
//! transaction: sled writes each one out on its own, and every verified subscription would pay
//! for one); pending verifications in `intents`.

use async_trait::async_trait;

use super::*;

impl SledStore {
    /// Adds `delta` to the topic's subscription count, atomically; a count reaching zero is
    /// removed.
    fn add_count(&self, topic: &str, delta: i64) -> Result<()> {
        self.counts.fetch_and_update(topic.as_bytes(), |v| {
            let n = v.and_then(|v| read_be(v).ok()).unwrap_or(0) as i64 + delta;
            (n > 0).then(|| be(n as u64).to_vec())
        })?;
        Ok(())
    }
}

#[async_trait]
impl SubscriptionStore for SledStore {
    async fn upsert(&self, sub: Subscription) -> Result<()> {
        let key = sub_key(&sub.topic, &sub.destination, &sub.callback);
        let ekey = expiry_key(&sub);
        // The expiry index first: a crash part-way leaves an index entry the sweep drops
        // (`expired` removes entries whose subscription is gone or renewed), never a
        // subscription the sweep cannot find.
        self.expiry.insert(ekey.as_slice(), &[])?;
        match self.subs.insert(key.as_slice(), encode_sub_value(&sub))? {
            Some(old) => {
                let old = expiry_key(&decode_sub(&key, &old)?);
                if old != ekey {
                    self.expiry.remove(old)?;
                }
            }
            None => self.add_count(&sub.topic, 1)?,
        }
        Ok(())
    }

    async fn get(&self, topic: &str, callback: &str) -> Result<Option<Subscription>> {
        let key = sub_key(topic, &destination_of(callback), callback);
        self.subs
            .get(&key)?
            .map(|v| decode_sub(&key, &v))
            .transpose()
    }

    async fn remove(&self, topic: &str, callback: &str) -> Result<bool> {
        let key = sub_key(topic, &destination_of(callback), callback);
        // Only the caller whose remove took the record counts it down.
        let Some(old) = self.subs.remove(key.as_slice())? else {
            return Ok(false);
        };
        self.add_count(topic, -1)?;
        self.expiry.remove(expiry_key(&decode_sub(&key, &old)?))?;
        Ok(true)
    }

    async fn count_for_topic(&self, topic: &str) -> Result<u64> {
        match self.counts.get(topic.as_bytes())? {
            Some(v) => read_be(&v),
            // A crash between storing a first subscription and counting it leaves no count:
            // one look at the topic's keys tells "none" from "not counted".
            None => Ok(u64::from(
                self.subs.scan_prefix(topic_prefix(topic)).next().is_some(),
            )),
        }
    }

    async fn destinations(&self, topic: &str) -> Result<Vec<String>> {
        // Skip from one destination to the next instead of reading every subscriber.
        let prefix = topic_prefix(topic);
        let mut out = Vec::new();
        let mut start = Bound::Included(prefix.clone());
        loop {
            let Some(entry) = self.subs.range((start, Bound::Unbounded)).next() else {
                break;
            };
            let (k, _) = entry?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| StorageError::Corrupt("subscription key".into()))?;
            let dest = String::from_utf8_lossy(&rest[..end]).into_owned();
            let mut next = prefix.clone();
            next.extend_from_slice(dest.as_bytes());
            next.push(1); // just past every key "topic\0dest\0…"
            start = Bound::Included(next);
            out.push(dest);
        }
        Ok(out)
    }

    async fn page(
        &self,
        topic: &str,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let prefix = sub_key(topic, destination, "");
        let start = match after {
            Some(a) => Bound::Excluded(sub_key(topic, destination, a)),
            None => Bound::Included(prefix.clone()),
        };
        self.subs_from(&prefix, start, limit)
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>> {
        let mut out = Vec::new();
        for entry in self.expiry.range(..be(now_ms).to_vec()) {
            let (k, _) = entry?;
            let sub_key = k.get(8..).unwrap_or_default();
            let sub = match self.subs.get(sub_key)? {
                Some(v) => Some(decode_sub(sub_key, &v)?),
                None => None,
            };
            match sub {
                // Left by a crash part-way through an upsert or a remove: the subscription is
                // gone, or stored under another expiry.
                None => {
                    self.expiry.remove(&k)?;
                }
                Some(s) if expiry_key(&s) != k.as_ref() => {
                    self.expiry.remove(&k)?;
                }
                Some(s) if s.expires_ms < now_ms => out.push(s),
                Some(_) => {}
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn totals(&self) -> Result<(u64, u64)> {
        let (mut topics, mut subs) = (0, 0);
        for entry in self.counts.iter() {
            let (_, v) = entry?;
            topics += 1;
            subs += read_be(&v)?;
        }
        Ok((topics, subs))
    }

    async fn scan(
        &self,
        topic: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let (prefix, start) = scan_range(topic, after);
        self.subs_from(&prefix, start, limit)
    }

    async fn for_callback(&self, callback: &str, limit: usize) -> Result<Vec<Subscription>> {
        // A read of every subscription (about 1.4 s at a million): on the blocking pool, so
        // that no HTTP worker or engine thread waits on it.
        let subs = self.subs.clone();
        let callback = callback.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for entry in subs.iter() {
                let (k, v) = entry?;
                if let Some((_, _, c)) = split_sub_key(&k)
                    && c == callback.as_slice()
                {
                    out.push(decode_sub(&k, &v)?);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Permanent(format!("callback scan failed: {e}")))?
    }

    async fn put_intent(&self, intent: Intent) -> Result<()> {
        self.intents.insert(be(intent.id), json(&intent))?;
        Ok(())
    }

    async fn remove_intent(&self, id: u64) -> Result<()> {
        self.intents.remove(be(id))?;
        Ok(())
    }

    async fn intents(&self) -> Result<Vec<Intent>> {
        self.scan_prefix_values(&self.intents, &[])?
            .iter()
            .map(|v| from_json(v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_a_crash_between_single_writes_leaves_is_found_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let sub = Subscription {
            topic: "http://t/".into(),
            callback: "http://d/cb".into(),
            destination: destination_of("http://d/cb"),
            secret: None,
            lease_seconds: 1,
            expires_ms: 1_000,
            created_ms: 0,
        };
        store.upsert(sub.clone()).await.unwrap();
        // A renewal that stopped after its index entry, and a first subscription whose count
        // was never written.
        let renewed = Subscription {
            expires_ms: 2_000,
            ..sub.clone()
        };
        store.expiry.insert(expiry_key(&renewed), &[]).unwrap();
        store.counts.remove(sub.topic.as_bytes()).unwrap();
        assert_eq!(store.count_for_topic(&sub.topic).await.unwrap(), 1);
        assert_eq!(store.count_for_topic("http://other/").await.unwrap(), 0);
        // Both index entries are due: the subscription's is returned, the stale one dropped.
        let expired = store.expired(3_000, 10).await.unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].expires_ms, 1_000);
        assert_eq!(store.expiry.len(), 1);
        assert!(store.remove(&sub.topic, &sub.callback).await.unwrap());
        assert!(store.expiry.is_empty());
        assert!(!store.remove(&sub.topic, &sub.callback).await.unwrap());
    }
}
