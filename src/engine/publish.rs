//! From a ping to an event: fetch the topic (light pings) or take the pushed content (fat
//! pings), diff it against the topic's state, and commit topic state + event + ping removal
//! to the event log in one atomic step ([`super::stream`]); the planner takes it from there.
//! Pings for one topic are handled by one worker at a time, and all light pings waiting for a
//! topic are answered by a single fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header;
use tokio::sync::Semaphore;

use super::client::{
    Clients, Failure, TOPIC_HINT, USER_AGENT, check_encoding, classify, read_limited,
};
use super::origin_limit::OriginLimit;
use super::shared::Shared;
use super::snapshot::{self, Snapshot};
use super::stream::{CommitError, EventStream};
use super::{Ack, FatOutcome};
use crate::feed;
use crate::metrics::Fetch;
use crate::rate_limit::Limiter;
use crate::storage::{Commit, NewEvent, Ping, StorageError, TopicState, WorkKey};

/// Fetch attempts for one ping batch (transient failures only), and the pauses between them.
const FETCH_BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

/// Updates diffed and committed at once (each commit waits for an append; an append takes
/// every commit waiting).
const PROCESSING: usize = 32;

/// The fetcher: turns pings into committed events. It fetches through the topic client
/// (bounded redirects, the topic policy) and commits through the event stream.
pub struct Fetcher {
    shared: Arc<Shared>,
    clients: Clients,
    stream: Arc<EventStream>,
    /// Topic fetches in flight, shared between topic hosts.
    fetches: Arc<OriginLimit>,
    /// Diffs and commits in flight (no outbound call holds one).
    processing: Semaphore,
    /// Fetches started per topic (`limits.fetches_per_topic`).
    rate: Limiter<String>,
    /// Answers owed for fat pings that were not stored, by ping id.
    acks: Mutex<HashMap<u64, Ack>>,
}

impl Fetcher {
    pub fn new(shared: Arc<Shared>, clients: &Clients, stream: Arc<EventStream>) -> Fetcher {
        let limit = shared.cfg.fetch_limit;
        let rate = Limiter::new(shared.cfg.limits.fetches_per_topic);
        Fetcher {
            shared,
            clients: clients.clone(),
            stream,
            fetches: OriginLimit::new(limit.concurrency, limit.per_origin),
            processing: Semaphore::new(PROCESSING),
            rate,
            acks: Mutex::new(HashMap::new()),
        }
    }

    /// The ping `id` is not stored: `ack` is answered once its update is durable.
    pub fn expect(&self, id: u64, ack: Ack) {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, ack);
    }

    fn take_ack(&self, id: u64) -> Option<Ack> {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
    }

    /// Answers a fat ping that was not stored once what became of it is durable: its event
    /// flushed (waited for in a task of its own, so the topic's next ping goes on meanwhile),
    /// or, without an event, the topic state it changed.
    fn answer(&self, ack: Ack, processed: Processed) {
        let stream = self.stream.clone();
        let shared = self.shared.clone();
        self.shared.tracker.spawn(async move {
            let answer = match processed {
                Processed::Committed(Some(seq)) => {
                    if !stream.durable(seq).await {
                        return; // stopping: unanswered, the publisher tries again
                    }
                    Ok(FatOutcome::Committed)
                }
                Processed::Committed(None) => {
                    shared.store.flush().await.map(|()| FatOutcome::Committed)
                }
                Processed::Refused(why) => shared
                    .store
                    .flush()
                    .await
                    .map(|()| FatOutcome::Refused(why)),
                Processed::Failed(e) => Err(e),
                Processed::Stopped => return,
            };
            let _ = ack.send(answer);
        });
    }

    /// Handles every ping waiting for `topic` that this node can claim.
    pub async fn run(&self, topic: String, batch: Vec<Ping>) {
        if self.shared.store.shared {
            return self.run_shared(topic, batch).await;
        }
        let keys: Vec<WorkKey> = batch.iter().map(|p| WorkKey::Ping(p.id)).collect();
        let got = self.shared.take(keys.clone()).await;
        let mine: Vec<Ping> = batch
            .into_iter()
            .zip(&got)
            .filter_map(|(p, ok)| {
                if !ok {
                    self.take_ack(p.id); // another node's: not answered here
                }
                ok.then_some(p)
            })
            .collect();
        if !mine.is_empty() {
            run(self, topic, mine).await;
        }
        let taken = keys
            .into_iter()
            .zip(got)
            .filter_map(|(k, ok)| ok.then_some(k));
        self.shared.release(taken.collect()).await;
    }
}

impl Fetcher {
    /// [`Fetcher::run`] with other nodes sharing the store: one node at a time fetches and
    /// diffs a topic (it holds the topic's lease). A node that finds the topic taken leaves its
    /// light pings to the holder, whose fetch answers every ping received before it started,
    /// and waits for the topic: then only pings nobody answered are left to fetch for.
    async fn run_shared(&self, topic: String, batch: Vec<Ping>) {
        let keys: Vec<WorkKey> = batch.iter().map(|p| WorkKey::Ping(p.id)).collect();
        let got = self.shared.take(keys).await;
        let mut mine: Vec<Ping> = Vec::new();
        for (p, ok) in batch.into_iter().zip(got) {
            if ok {
                mine.push(p);
            } else {
                self.take_ack(p.id); // another node's: not answered here
            }
        }
        let topic_key = WorkKey::Topic(topic.clone());
        let mut left: Option<Vec<Ping>> = None;
        loop {
            if self.shared.take(vec![topic_key.clone()]).await == [true] {
                break;
            }
            if left.is_none() {
                // Stored light pings go to the holder's fetch; unstored (fat) ones stay here.
                let (lights, rest): (Vec<Ping>, Vec<Ping>) = mine
                    .into_iter()
                    .partition(|p| p.fat.is_none() && !self.expects(p.id));
                self.shared
                    .release(lights.iter().map(|p| WorkKey::Ping(p.id)).collect())
                    .await;
                mine = rest;
                left = Some(lights);
            }
            tokio::select! {
                _ = tokio::time::sleep(TOPIC_TAKEN_PAUSE) => {}
                _ = self.shared.shutdown.cancelled() => {
                    self.shared.release(mine.iter().map(|p| WorkKey::Ping(p.id)).collect()).await;
                    return;
                }
            }
        }
        // The light pings left while waiting come back unless another node holds them now
        // (this node's own rescan may have claimed them again meanwhile: its queue holds them
        // as in progress here). Those the holder answered are dropped below.
        if let Some(lights) = left.filter(|l| !l.is_empty()) {
            let keys: Vec<WorkKey> = lights.iter().map(|p| WorkKey::Ping(p.id)).collect();
            let got = self.shared.take(keys).await;
            mine.extend(
                lights
                    .into_iter()
                    .zip(got)
                    .filter_map(|(p, ok)| ok.then_some(p)),
            );
        }
        // Pings of the topic that reach other nodes at about the same moment join this batch:
        // they find the topic taken and leave their light pings to this node.
        let gather = self.shared.cfg.cluster.ping_gather;
        if !gather.is_zero() && mine.iter().any(|p| p.fat.is_none()) {
            tokio::select! {
                _ = tokio::time::sleep(gather) => {}
                _ = self.shared.shutdown.cancelled() => {}
            }
        }
        // Light pings of the topic nobody answered yet (left here by other nodes, or by this one
        // while it waited).
        let claim = self.shared.claims.claim();
        let swept = self
            .persist("pings of a topic", || {
                self.shared
                    .store
                    .claims
                    .claim_topic_pings(&claim, &topic, claim.now_ms, SWEEP)
            })
            .await
            .unwrap_or_default();
        self.shared
            .claims
            .hold(swept.iter().map(|p| WorkKey::Ping(p.id)));
        mine.extend(swept);
        let held: Vec<WorkKey> = mine.iter().map(|p| WorkKey::Ping(p.id)).collect();
        // Light pings received before the topic's last fetch started (another node's, made
        // while this one waited) were answered by it: they go without a fetch of their own.
        if mine.iter().any(|p| p.fat.is_none()) {
            let started = match stored_state(self, &topic).await {
                Some(s) => s.fetch_started_ms,
                None => 0,
            };
            let (answered, rest): (Vec<Ping>, Vec<Ping>) = mine
                .into_iter()
                .partition(|p| p.fat.is_none() && !self.expects(p.id) && p.received_ms <= started);
            for p in answered {
                let store = &self.shared.store.publish;
                self.persist("answered ping", || store.drop_ping(p.id, &topic, None))
                    .await;
            }
            mine = rest;
        }
        if !mine.is_empty() {
            run(self, topic, mine).await;
        }
        let mut done = held;
        done.push(topic_key);
        self.shared.release(done).await;
    }

    /// Whether a ping's answer waits here (a fat ping that was not stored).
    fn expects(&self, id: u64) -> bool {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }
}

/// How long a node waits before asking again for a topic another node is fetching.
const TOPIC_TAKEN_PAUSE: Duration = Duration::from_millis(50);
/// Most pings of a topic another node left that one fetch takes.
const SWEEP: usize = 1_000;

async fn run(fetcher: &Fetcher, topic: String, batch: Vec<Ping>) {
    let mut lights = Vec::new();
    // Taken first, so that returning early (stopping) drops them unanswered.
    let acks: Vec<Option<Ack>> = batch.iter().map(|p| fetcher.take_ack(p.id)).collect();
    for (ping, ack) in batch.into_iter().zip(acks) {
        match ping.fat.clone() {
            Some(fat) => {
                let body = Bytes::from(fat.body);
                let Some(prev) = stored_state(fetcher, &topic).await else {
                    return;
                };
                // A ping that was not stored has nothing to remove.
                let ids = if ack.is_some() {
                    &[][..]
                } else {
                    &[ping.id][..]
                };
                let processed =
                    process(fetcher, &topic, ids, &fat.content_type, body, prev, None).await;
                if let Some(ack) = ack {
                    fetcher.answer(ack, processed);
                }
            }
            None => lights.push(ping.id),
        }
    }
    if !lights.is_empty() {
        fetch_and_process(fetcher, &topic, &lights).await;
    }
}

impl Fetcher {
    /// A storage call, retried with backoff while the store fails; `None` when the hub stops
    /// first (the pings stay stored and are taken up after a restart).
    async fn persist<T, F, Fut>(&self, what: &'static str, call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::storage::Result<T>>,
    {
        let s = &self.shared;
        s.health.persist(what, &s.shutdown, call).await
    }
}

async fn stored_state(fetcher: &Fetcher, topic: &str) -> Option<TopicState> {
    let store = &fetcher.shared.store;
    let state = fetcher
        .persist("topic state", || store.publish.topic_state(topic))
        .await?;
    Some(state.unwrap_or_default())
}

struct Fetched {
    content_type: String,
    body: Bytes,
    etag: Option<String>,
    last_modified: Option<String>,
}

enum FetchResult {
    NotModified,
    Content(Fetched),
}

async fn fetch_and_process(fetcher: &Fetcher, topic: &str, ping_ids: &[u64]) {
    let store = &fetcher.shared.store;
    let count = || store.subs.count_for_topic(topic);
    let Some(subscribers) = fetcher.persist("subscriber count", count).await else {
        return;
    };
    let followed = fetcher.shared.cfg.relay.followed(topic);
    if subscribers == 0 && !followed {
        // Nobody to tell: no fetch.
        finish(fetcher, topic, ping_ids, None).await;
        return;
    }
    let Some(mut state) = stored_state(fetcher, topic).await else {
        return;
    };
    let mut attempt = 0;
    let origin = OriginLimit::origin_of(topic);
    let mut fetch_started: u64;
    let result = loop {
        // The topic's rate (pings arriving meanwhile wait for the next fetch), then a place
        // among the fetches in flight, held for one attempt (not its backoff).
        let place = tokio::select! {
            p = async {
                fetcher.rate.until_ready(&topic.to_owned()).await;
                fetcher.fetches.acquire(&origin).await
            } => p,
            _ = fetcher.shared.shutdown.cancelled() => return, // the pings stay stored
        };
        fetch_started = fetcher.shared.clock.now_ms();
        let fetched = fetch(fetcher, topic, &state, subscribers).await;
        drop(place);
        match fetched {
            Ok(r) => break Ok(r),
            Err(f) if attempt < FETCH_BACKOFF.len() && transient(&f) => {
                tracing::debug!(%topic, failure = %f, "topic fetch failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(FETCH_BACKOFF[attempt]) => {}
                    _ = fetcher.shared.shutdown.cancelled() => return, // the pings stay stored
                }
                attempt += 1;
            }
            Err(f) => break Err(f),
        }
    };
    state.last_fetch_ms = fetcher.shared.clock.now_ms();
    state.fetch_started_ms = fetch_started;
    // With other nodes: the light pings they left for this topic, received before this fetch
    // started, are answered by it too.
    let mut ids = ping_ids.to_vec();
    let mut swept = Vec::new();
    if fetcher.shared.store.shared {
        let claim = fetcher.shared.claims.claim();
        let store = &fetcher.shared.store.claims;
        let got = fetcher
            .persist("pings of a topic", || {
                store.claim_topic_pings(&claim, topic, fetch_started, SWEEP)
            })
            .await
            .unwrap_or_default();
        fetcher
            .shared
            .claims
            .hold(got.iter().map(|p| WorkKey::Ping(p.id)));
        ids.extend(got.iter().map(|p| p.id));
        swept = got.iter().map(|p| WorkKey::Ping(p.id)).collect();
    }
    let ping_ids = &ids[..];
    answer_fetch(fetcher, topic, ping_ids, state, result).await;
    fetcher.shared.release(swept).await;
}

async fn answer_fetch(
    fetcher: &Fetcher,
    topic: &str,
    ping_ids: &[u64],
    mut state: TopicState,
    result: Result<FetchResult, Failure>,
) {
    match result {
        Ok(FetchResult::NotModified) => {
            state.last_result = "304 not modified".into();
            fetcher.shared.metrics.fetch(Fetch::NotModified);
            finish(fetcher, topic, ping_ids, Some(state)).await;
        }
        Ok(FetchResult::Content(f)) => {
            let validators = Some((f.etag, f.last_modified));
            process(
                fetcher,
                topic,
                ping_ids,
                &f.content_type,
                f.body,
                state,
                validators,
            )
            .await;
        }
        Err(f) => {
            let hint = matches!(f, Failure::Blocked(_)).then_some(TOPIC_HINT);
            tracing::warn!(%topic, failure = %f, hint = hint.unwrap_or_default(),
                "topic fetch failed; update not delivered");
            state.last_result = match hint {
                Some(hint) => format!("error: {f} ({hint})"),
                None => format!("error: {f}"),
            };
            fetcher.shared.metrics.fetch(Fetch::Error);
            finish(fetcher, topic, ping_ids, Some(state)).await;
        }
    }
}

fn transient(f: &Failure) -> bool {
    matches!(f, Failure::Timeout | Failure::Refused | Failure::Other(_))
        || matches!(f, Failure::Status(s) if *s >= 500 || *s == 429)
}

async fn fetch(
    fetcher: &Fetcher,
    topic: &str,
    state: &TopicState,
    subscribers: u64,
) -> Result<FetchResult, Failure> {
    let url = url::Url::parse(topic).map_err(|e| Failure::Other(e.to_string()))?;
    fetcher
        .clients
        .topic_policy
        .check_literal(&url)
        .map_err(|e| Failure::Blocked(e.to_string()))?;
    let plural = if subscribers == 1 { "" } else { "s" };
    let mut req = fetcher
        .clients
        .topics
        .get(url)
        .timeout(fetcher.shared.cfg.fetch_timeout)
        .header(
            header::USER_AGENT,
            format!(
                "{USER_AGENT} (+{}; {subscribers} subscriber{plural})",
                fetcher.shared.hub_url
            ),
        );
    // Conditional only when the content those validators describe is known.
    if state.content_hash.is_some() {
        if let Some(etag) = &state.etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &state.last_modified {
            req = req.header(header::IF_MODIFIED_SINCE, lm);
        }
    }
    let resp = req.send().await.map_err(|e| classify(&e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(FetchResult::NotModified);
    }
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    check_encoding(&resp)?;
    let text = |name: header::HeaderName| {
        resp.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type =
        text(header::CONTENT_TYPE).unwrap_or_else(|| "application/octet-stream".into());
    let etag = text(header::ETAG);
    let last_modified = text(header::LAST_MODIFIED);
    let body = read_limited(resp, fetcher.shared.cfg.fetch_max_bytes).await?;
    Ok(FetchResult::Content(Fetched {
        content_type,
        body,
        etag,
        last_modified,
    }))
}

/// What became of an update.
enum Processed {
    /// Committed (appended; durable with the stream's next flush), with its event's number
    /// when it had one.
    Committed(Option<u64>),
    /// The content was refused, for this reason (the topic's state says it too).
    Refused(String),
    /// The store failed; nothing was committed.
    Failed(StorageError),
    /// The hub stopped first.
    Stopped,
}

/// Diffs `body` against `state` and records the outcome; plans and starts the deliveries.
async fn process(
    fetcher: &Fetcher,
    topic: &str,
    ping_ids: &[u64],
    content_type: &str,
    body: Bytes,
    mut state: TopicState,
    validators: Option<(Option<String>, Option<String>)>,
) -> Processed {
    let Ok(_processing) = fetcher.processing.acquire().await else {
        return Processed::Stopped; // never closed
    };
    let now = fetcher.shared.clock.now_ms();
    let diff = match feed::diff(&fetcher.shared.cfg.diff, content_type, &body, Some(&state)) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(%topic, error = %e, "content refused; update not delivered");
            state.last_result = format!("refused: {e}");
            fetcher.shared.metrics.fetch(Fetch::Refused);
            state.last_fetch_ms = now;
            return match finish(fetcher, topic, ping_ids, Some(state)).await {
                true => Processed::Refused(e.to_string()),
                false => Processed::Stopped,
            };
        }
    };
    if let Some((etag, lm)) = validators {
        state.etag = etag;
        state.last_modified = lm;
        state.last_result = "200".into();
        fetcher.shared.metrics.fetch(Fetch::Ok);
    } else {
        state.last_result = "fat ping".into();
        fetcher.shared.metrics.fetch(Fetch::FatPing);
    }
    state.content_hash = Some(diff.content_hash);
    state.entries = diff.entries;
    let (event, destinations, subscribers) = match diff.deliver {
        Some(payload) => match fetcher
            .persist("subscribers of a topic", || {
                subscribers_of(&fetcher.shared, topic)
            })
            .await
        {
            None => return Processed::Stopped,
            // Nobody left to tell (everyone unsubscribed since the ping): no event, unless
            // peer hubs follow the topic.
            Some((d, _)) if d.is_empty() && !fetcher.shared.cfg.relay.followed(topic) => {
                (None, d, None)
            }
            Some((d, subscribers)) => {
                let event = NewEvent {
                    content_type: content_type.to_owned(),
                    body: payload,
                    created_ms: now,
                    relayed: None,
                };
                (Some(event), d, subscribers)
            }
        },
        None => (None, Vec::new(), None),
    };
    let commit = Commit {
        topic: topic.to_owned(),
        state: Some(state),
        ping_ids: ping_ids.to_vec(),
        event,
        destinations,
        cursor: None,
        hosted: None,
    };
    // Appended with its jobs when it returns (the next diff sees the new state); the stream
    // flushes it before the planner, following the stream, hands the jobs to the dispatcher.
    match fetcher.stream.commit(commit, subscribers).await {
        Ok(seq) => {
            tracing::info!(%topic, note = %diff.note, event = ?seq, "topic processed");
            Processed::Committed(seq)
        }
        Err(CommitError::Stopping) => {
            tracing::debug!(%topic, "stopping before the update was committed; the ping stays");
            Processed::Stopped
        }
        Err(CommitError::Storage(e)) => {
            tracing::error!(%topic, error = %e, "cannot commit the update; the ping stays");
            Processed::Failed(e)
        }
    }
}

/// The destination servers of `topic`'s subscribers and, when it has few enough to keep (at
/// most [`snapshot::MAX_SUBSCRIBERS`]), the subscribers themselves, read in one pass.
pub(super) async fn subscribers_of(
    shared: &Shared,
    topic: &str,
) -> Result<(Vec<String>, Option<Snapshot>), StorageError> {
    let store = &shared.store;
    let changes = store.sub_changes.of(topic);
    let subs = store
        .subs
        .scan(Some(topic), None, snapshot::MAX_SUBSCRIBERS + 1)
        .await?;
    if subs.len() > snapshot::MAX_SUBSCRIBERS {
        return Ok((store.subs.destinations(topic).await?, None));
    }
    let snapshot = Snapshot::new(subs, changes);
    Ok((snapshot.destinations(), Some(snapshot)))
}

/// Removes pings that need nothing more, storing `state` if given (without pings: storing
/// it alone). `false` when the hub stopped first.
async fn finish(
    fetcher: &Fetcher,
    topic: &str,
    ping_ids: &[u64],
    mut state: Option<TopicState>,
) -> bool {
    let store = &fetcher.shared.store;
    if ping_ids.is_empty() {
        let Some(state) = state else { return true };
        let put = || store.publish.put_topic_state(topic, state.clone());
        return fetcher.persist("topic state", put).await.is_some();
    }
    for id in ping_ids {
        let state = state.take();
        let dropped = fetcher
            .persist("processed ping removal", || {
                store.publish.drop_ping(*id, topic, state.clone())
            })
            .await;
        if dropped.is_none() {
            return false; // stopping: the pings stay and are processed again after a restart
        }
    }
    true
}
