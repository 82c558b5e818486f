//! The event log on sled: the `events`, `meta`, `topic_seqs`, `cursors` and `delivery_docs`
//! trees. One appender at a time (under the store's `log_lock`) numbers events inside the
//! append transaction, which also stores their jobs (one `fanouts` record per event).

use std::collections::HashMap;

use async_trait::async_trait;

use super::*;

#[async_trait]
impl EventLog for SledStore {
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
        self.meta.insert(HUB_KEY, key.as_slice())?;
        *self.hub_key.lock().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    async fn append(&self, commits: &[Commit]) -> Result<Vec<Option<Event>>> {
        let mut counters = self.counters();
        let lead = counters.lead;
        let hub_id = self.hub_id.as_str();
        let trees = (
            &self.meta,
            &self.topic_seqs,
            &self.topics,
            &self.events,
            &self.pings,
            &self.fanouts,
            &self.cursors,
            &self.hosted_entries,
            &self.hosted_index,
        );
        let (numbers, new_lead, added) = trees
            .transaction(
                |(
                    meta,
                    topic_seqs,
                    topics,
                    events,
                    pings,
                    fanouts,
                    cursors,
                    hosted_entries,
                    hosted_index,
                )| {
                    let mut next = lead;
                    let mut added = 0u64;
                    let mut numbers = Vec::with_capacity(commits.len());
                    // A cursor or a topic's number moved several times in one transaction is
                    // written once, at the end: one write per consumer and per topic, not one
                    // per event (the transaction is atomic either way).
                    let mut cursor_at: HashMap<&str, u64> = HashMap::new();
                    let mut topic_at: HashMap<&str, u64> = HashMap::new();
                    for c in commits {
                        if let Some(state) = &c.state {
                            topics.insert(c.topic.as_bytes(), json(state))?;
                        }
                        if let Some((consumer, seq)) = &c.cursor {
                            cursor_at.insert(consumer, *seq);
                        }
                        for id in &c.ping_ids {
                            pings.remove(&be(*id))?;
                        }
                        let Some(ev) = &c.event else {
                            numbers.push(None);
                            continue;
                        };
                        next += 1;
                        let topic_seq = match topic_at.get_mut(c.topic.as_str()) {
                            Some(n) => {
                                *n += 1;
                                *n
                            }
                            None => {
                                let n = match topic_seqs.get(c.topic.as_bytes())? {
                                    Some(v) => read_be(&v).map_err(abort)? + 1,
                                    None => 1,
                                };
                                topic_at.insert(&c.topic, n);
                                n
                            }
                        };
                        if let Some(w) = &c.hosted {
                            super::hosted::put_in_tx(hosted_entries, hosted_index, w)?;
                        }
                        let event = ev.clone().stored(next, &c.topic, topic_seq, hub_id);
                        events.insert(&be(next), encode_event(&event))?;
                        if !c.destinations.is_empty() {
                            let jobs = super::jobs::Fanout::new(&c.topic, &c.destinations);
                            fanouts.insert(&be(next), jobs.encode())?;
                        }
                        added += event.body.len() as u64;
                        numbers.push(Some(event));
                    }
                    for (topic, n) in &topic_at {
                        topic_seqs.insert(topic.as_bytes(), &be(*n))?;
                    }
                    for (consumer, seq) in &cursor_at {
                        cursors.insert(consumer.as_bytes(), &be(*seq))?;
                    }
                    if next != lead {
                        meta.insert(LEAD, &be(next))?;
                    }
                    Ok((numbers, next, added))
                },
            )
            .map_err(tx_err)?;
        counters.events += new_lead - lead;
        counters.bytes += added;
        counters.lead = new_lead;
        Ok(numbers)
    }

    async fn bounds(&self) -> Result<LogBounds> {
        let (lead, events, bytes) = {
            let c = self.counters();
            (c.lead, c.events, c.bytes)
        };
        let trail = match self.events.first()? {
            Some((k, _)) => read_be(&k)?,
            None => lead + 1,
        };
        Ok(LogBounds {
            trail,
            lead,
            events,
            bytes,
        })
    }

    async fn read(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Event>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in self.events.range(be(from)..be(to)).take(limit) {
            let (_, v) = entry?;
            out.push(decode_event(&v)?);
        }
        Ok(out)
    }

    async fn summaries(&self, from: u64, to: u64, limit: usize) -> Result<Vec<EventSummary>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in self.events.range(be(from)..be(to)).take(limit) {
            let (_, v) = entry?;
            out.push(decode_event_summary(&v)?);
        }
        Ok(out)
    }

    async fn event(&self, seq: u64) -> Result<Option<Event>> {
        let found = match self.events.get(be(seq))? {
            Some(v) => Some(v),
            None => self.docs.get(be(seq))?,
        };
        found.map(|v| decode_event(&v)).transpose()
    }

    async fn recent_for_topic(
        &self,
        topic: &str,
        limit: usize,
        scan: usize,
    ) -> Result<Vec<EventSummary>> {
        let mut out = Vec::new();
        for entry in self.events.iter().rev().take(scan) {
            let (_, v) = entry?;
            let e = decode_event_summary(&v)?;
            if e.topic == topic {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn prune(
        &self,
        retention: Retention,
        now_ms: u64,
        up_to: u64,
        collect: &[u64],
    ) -> Result<(u64, Vec<u64>)> {
        let used = self.referenced_events()?;
        let mut pruned = 0;
        {
            // Appends wait while this holds the counters: a pass removes a bounded number.
            let mut counters = self.counters();
            for entry in self.events.iter().take(PRUNE_BATCH) {
                let (k, v) = entry?;
                let seq = read_be(&k)?;
                let e = decode_event_summary(&v)?;
                if seq > up_to || !retention.drops(e.created_ms, now_ms, counters.bytes) {
                    break;
                }
                if used.contains(&seq) {
                    // Still to be delivered somewhere: kept, outside the log.
                    self.docs.insert(&k, v)?;
                }
                self.events.remove(&k)?;
                counters.events -= 1;
                counters.bytes = counters.bytes.saturating_sub(e.bytes as u64);
                pruned += 1;
            }
        }
        let mut unreferenced = Vec::new();
        for entry in self.docs.iter() {
            let (k, _) = entry?;
            let seq = read_be(&k)?;
            if used.contains(&seq) {
                continue;
            }
            if collect.contains(&seq) {
                self.docs.remove(&k)?;
            } else {
                unreferenced.push(seq);
            }
        }
        Ok((pruned, unreferenced))
    }

    async fn cursor(&self, consumer: &str) -> Result<Option<u64>> {
        self.cursors
            .get(consumer.as_bytes())?
            .map(|v| read_be(&v))
            .transpose()
    }

    async fn put_cursor(&self, consumer: &str, seq: u64) -> Result<()> {
        self.cursors.insert(consumer.as_bytes(), &be(seq))?;
        Ok(())
    }

    async fn documents(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in self.docs.range(be(start)..).take(limit) {
            let (_, v) = entry?;
            out.push(decode_event(&v)?);
        }
        Ok(out)
    }

    async fn restore(&self, event: Event, document: bool) -> Result<()> {
        let record = encode_event(&event);
        if document {
            self.docs.insert(be(event.seq), record)?;
            return Ok(());
        }
        let mut counters = self.counters();
        match self.events.insert(be(event.seq), record)? {
            None => counters.events += 1,
            Some(old) => {
                let old = decode_event_summary(&old)?.bytes as u64;
                counters.bytes = counters.bytes.saturating_sub(old);
            }
        }
        counters.bytes += event.body.len() as u64;
        if event.seq > counters.lead {
            counters.lead = event.seq;
            self.meta.insert(LEAD, &be(event.seq))?;
        }
        let known = match self.topic_seqs.get(event.topic.as_bytes())? {
            Some(v) => read_be(&v)?,
            None => 0,
        };
        if event.topic_seq > known {
            self.topic_seqs
                .insert(event.topic.as_bytes(), &be(event.topic_seq))?;
        }
        Ok(())
    }
}
