//! Taking a followed upstream's events into this hub's log, a group at a time: this hub's
//! subscribers read for each topic, events whose path names this hub refused, one copy of an
//! origin event over all upstreams (the claim made just before the commit), and the
//! follower's cursor stored in the same transaction as the events it passed. Used by the
//! HTTP follower and the multicast receiver alike.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::snapshot::Snapshot;
use super::upstream::{Follow, Item, SessionError, Upstream};
use crate::relay::wire::EventLine;
use crate::storage::{Commit, NewEvent, Relayed};

/// Takes lines into the log.
pub(super) struct Taker {
    follow: Arc<Follow>,
    up: Arc<Upstream>,
    name: String,
    pub(super) position: u64,
    /// Subscribers read per topic within one batch.
    subscribers: HashMap<String, (Vec<String>, Option<Snapshot>)>,
}

impl Taker {
    /// A taker whose events follow `position` (everything up to it already taken).
    pub(super) fn new(follow: &Arc<Follow>, up: &Arc<Upstream>, position: u64) -> Taker {
        Taker {
            follow: follow.clone(),
            up: up.clone(),
            name: up.cfg.cursor_name(),
            position,
            subscribers: HashMap::new(),
        }
    }

    pub(super) async fn take(&mut self, items: Vec<Item>) -> Result<(), SessionError> {
        let follow = self.follow.clone();
        let s = &follow.shared;
        let me = s.store.log.hub_id();
        let mut commits = Vec::new();
        let mut taken = (0u64, 0u64);
        let mut refused = 0u64;
        let mut duplicates = 0u64;
        let mut origins = Vec::new();
        let mut newest_created = None;
        let mut beat = None;
        self.subscribers.clear();
        let mut position = self.position;
        for item in items {
            match item {
                Item::Beat(heartbeat) => {
                    if heartbeat.position > position {
                        position = heartbeat.position;
                    }
                    beat = Some(heartbeat);
                }
                Item::Event(e, _) if e.seq <= position => {
                    // Already taken (never sent twice by a correct upstream).
                }
                Item::Event(e, body) => {
                    position = e.seq;
                    if e.path.contains(&me) {
                        refused += 1;
                        continue;
                    }
                    newest_created = Some(e.created_ms);
                    let (destinations, snapshot) = self.subscribers(&e.topic).await?;
                    // Each commit carries the cursor up to its event: however the stream
                    // splits the commits into transactions, the stored cursor names exactly
                    // what is stored.
                    let seq = e.seq;
                    let mut c = commit(e, body, destinations);
                    c.cursor = Some((self.name.clone(), seq));
                    commits.push((c, snapshot));
                }
            }
        }
        // Claimed here, once nothing can fail before the commit but the commit itself.
        commits.retain(|(c, _)| {
            let Some(ev) = &c.event else { return true };
            let Some(r) = &ev.relayed else { return true };
            if !self.follow.seen.claim(&r.origin, r.origin_seq) {
                duplicates += 1;
                return false;
            }
            origins.push((r.origin.clone(), r.origin_seq));
            taken.0 += 1;
            taken.1 += ev.body.len() as u64;
            true
        });
        if position > self.position {
            // The cursor moves with the last commit; events refused or filtered out and
            // heartbeats move it with a commit of their own.
            match commits.last_mut() {
                Some((c, _)) => c.cursor = Some((self.name.clone(), position)),
                None => commits.push((
                    Commit {
                        topic: String::new(),
                        state: None,
                        ping_ids: Vec::new(),
                        event: None,
                        destinations: Vec::new(),
                        cursor: Some((self.name.clone(), position)),
                        hosted: None,
                    },
                    None,
                )),
            }
            if let Err(e) = self.follow.stream.commit_all(commits).await {
                self.follow.seen.release(&origins);
                return Err(e.into());
            }
            self.position = position;
        }
        let now = s.clock.now_ms();
        self.up.update(|st| {
            st.cursor = position;
            st.events_taken += taken.0;
            st.bytes_taken += taken.1;
            st.loops_refused += refused;
            st.duplicates += duplicates;
            if let Some(created) = newest_created {
                st.lag_ms = now.saturating_sub(created);
            }
            if let Some(b) = beat {
                st.upstream_lead = b.lead;
                if b.position >= b.lead {
                    st.lag_ms = 0;
                }
            }
            st.upstream_lead = st.upstream_lead.max(position);
            st.lag_events = st.upstream_lead - position;
        });
        if refused > 0 {
            tracing::debug!(upstream = %self.up.cfg.name, refused,
                "events refused: their path already names this hub");
        }
        Ok(())
    }

    async fn subscribers(
        &mut self,
        topic: &str,
    ) -> Result<(Vec<String>, Option<Snapshot>), SessionError> {
        if let Some(known) = self.subscribers.get(topic) {
            return Ok(known.clone());
        }
        let s = &self.follow.shared;
        let read = s
            .health
            .persist("subscribers of a topic", &s.shutdown, || {
                super::publish::subscribers_of(s, topic)
            })
            .await
            .ok_or(SessionError::Stopping)?;
        self.subscribers.insert(topic.to_owned(), read.clone());
        Ok(read)
    }
}

/// The event as a commit into this hub's log (its cursor set by the caller).
fn commit(e: EventLine, body: Bytes, destinations: Vec<String>) -> Commit {
    Commit {
        topic: e.topic,
        state: None,
        ping_ids: Vec::new(),
        event: Some(NewEvent {
            content_type: e.content_type,
            body,
            created_ms: e.created_ms,
            relayed: Some(Relayed {
                origin: e.origin,
                origin_seq: e.origin_seq,
                path: e.path,
            }),
        }),
        destinations,
        cursor: None,
        hosted: None,
    }
}
