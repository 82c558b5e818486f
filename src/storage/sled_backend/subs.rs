//! Subscriptions on sled: `subs` keyed (topic, destination, callback), with `sub_counts` and the
//! `sub_expiry` index kept in the same transactions; pending verifications in `intents`.

use async_trait::async_trait;

use super::*;

#[async_trait]
impl SubscriptionStore for SledStore {
    async fn upsert(&self, sub: Subscription) -> Result<()> {
        let key = sub_key(&sub.topic, &sub.destination, &sub.callback);
        let value = encode_sub_value(&sub);
        let ekey = expiry_key(&sub);
        (&self.subs, &self.counts, &self.expiry)
            .transaction(|(subs, counts, expiry)| {
                match subs.insert(key.as_slice(), value.as_slice())? {
                    Some(old) => {
                        let old = decode_sub(&key, &old).map_err(abort)?;
                        expiry.remove(expiry_key(&old))?;
                    }
                    None => {
                        let n = match counts.get(sub.topic.as_bytes())? {
                            Some(v) => read_be(&v).map_err(abort)?,
                            None => 0,
                        };
                        counts.insert(sub.topic.as_bytes(), &be(n + 1))?;
                    }
                }
                // The expiry key ends with the subscription's key: no value needed.
                expiry.insert(ekey.as_slice(), &[])?;
                Ok(())
            })
            .map_err(tx_err)
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
        (&self.subs, &self.counts, &self.expiry)
            .transaction(|(subs, counts, expiry)| {
                let Some(old) = subs.remove(key.as_slice())? else {
                    return Ok(false);
                };
                let old = decode_sub(&key, &old).map_err(abort)?;
                expiry.remove(expiry_key(&old))?;
                let n = match counts.get(topic.as_bytes())? {
                    Some(v) => read_be(&v).map_err(abort)?,
                    None => 0,
                };
                if n <= 1 {
                    counts.remove(topic.as_bytes())?;
                } else {
                    counts.insert(topic.as_bytes(), &be(n - 1))?;
                }
                Ok(true)
            })
            .map_err(tx_err)
    }

    async fn count_for_topic(&self, topic: &str) -> Result<u64> {
        match self.counts.get(topic.as_bytes())? {
            Some(v) => read_be(&v),
            None => Ok(0),
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
            if let Some(v) = self.subs.get(sub_key)? {
                let s = decode_sub(sub_key, &v)?;
                if s.expires_ms < now_ms {
                    out.push(s);
                }
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
        let prefix = topic.map(topic_prefix).unwrap_or_default();
        let start = match after {
            Some((t, c)) => Bound::Excluded(sub_key(t, &destination_of(c), c)),
            None => Bound::Included(prefix.clone()),
        };
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
