//! Hub chaining (`relay.chain = true`): a topic with local subscribers that advertises another
//! hub (an HTTP `Link: <…>; rel="hub"`, or `<link rel="hub" href="…">` in the document) is
//! subscribed at that hub once, with this hub's callback (`/chain?topic=…`) and a secret of
//! its own; the subscription is renewed while local subscribers remain and ended after the
//! last one leaves. What the upstream hub pushes (signature checked) becomes an event of the
//! topic here, delivered to the local subscribers as it came (the upstream hub diffed it).
//!
//! An upstream subscription is stored as a subscription to [`CHAIN_TOPIC`] whose callback is
//! the topic URL (so it is found by topic) and whose secret field holds `SECRET HUB_URL`
//! (see [`Upstream`]); `lease_seconds == 0` marks one requested but not yet verified.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::client::{Clients, classify, read_limited};
use super::shared::Shared;
use super::stream::EventStream;
use crate::storage::{Commit, NewEvent, StorageError, Subscription};

/// The topic under which upstream subscriptions are stored.
pub const CHAIN_TOPIC: &str = "hubcast:chain";
/// Topics waiting to be looked at; beyond this the renewal scan finds them.
const MAX_DIRTY: usize = 10_000;
/// A request not verified within this is sent again.
const UNVERIFIED_RETRY: Duration = Duration::from_secs(30);
/// Longest pause between renewal scans.
const MAX_TICK: Duration = Duration::from_secs(60);
/// Most of a topic read to find its hub.
const MAX_DISCOVERY: usize = 1 << 20;
/// Most upstream subscriptions looked at per scan.
const SCAN: usize = 10_000;

/// The secret and hub of an upstream subscription record.
struct Upstream<'a> {
    secret: &'a str,
    hub: &'a str,
}

impl Upstream<'_> {
    fn of(rec: &Subscription) -> Upstream<'_> {
        let (secret, hub) = rec
            .secret
            .as_deref()
            .unwrap_or_default()
            .split_once(' ')
            .unwrap_or_default();
        Upstream { secret, hub }
    }
}

/// What a push to `/chain` led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Taken into the log as event `seq`.
    Taken(u64),
    /// No upstream subscription of this topic here: the upstream hub should stop (410).
    Unknown,
    /// Unsigned or wrongly signed: acknowledged and ignored, as W3C WebSub asks.
    BadSignature,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the hub is stopping; send it again shortly")]
    Stopping,
}

/// Topics whose local subscribers changed (kept in [`Shared`], noted by the verifier).
#[derive(Default)]
pub struct Changed {
    dirty: Mutex<HashSet<String>>,
    wake: Notify,
}

impl Changed {
    /// Local subscribers of `topic` changed: look at its upstream subscription soon.
    pub fn note(&self, topic: &str) {
        if topic.starts_with("hubcast:") {
            return;
        }
        let mut dirty = lock(&self.dirty);
        if dirty.len() < MAX_DIRTY {
            dirty.insert(topic.to_owned());
        }
        drop(dirty);
        self.wake.notify_one();
    }
}

pub struct Chain {
    shared: Arc<Shared>,
    stream: Arc<EventStream>,
    clients: Clients,
    busy: Mutex<HashSet<String>>,
    /// Requests sent and not yet verified, by topic: the mode and when. Only these are
    /// echoed, so nobody else can confirm (or end) an upstream subscription.
    requested: Mutex<HashMap<String, (&'static str, tokio::time::Instant)>>,
}

impl Chain {
    pub fn new(shared: Arc<Shared>, stream: Arc<EventStream>, clients: Clients) -> Chain {
        Chain {
            shared,
            stream,
            clients,
            busy: Mutex::default(),
            requested: Mutex::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.shared.cfg.relay.chain
    }

    /// This hub's callback for `topic` at upstream hubs.
    fn callback(&self, topic: &str) -> String {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("topic", topic)
            .finish();
        format!("{}/chain?{q}", self.shared.hub_url.trim_end_matches('/'))
    }

    /// A verification of intent from an upstream hub: whether to echo its challenge (the
    /// registration is then recorded, or removed).
    pub async fn verification(
        &self,
        topic: &str,
        mode: &str,
        lease_seconds: Option<u64>,
    ) -> Result<bool, StorageError> {
        let store = &self.shared.store;
        let asked = lock(&self.requested)
            .get(topic)
            .is_some_and(|(m, at)| *m == mode && at.elapsed() < UNVERIFIED_RETRY);
        if !asked {
            return Ok(false);
        }
        let Some(rec) = store.subs.get(CHAIN_TOPIC, topic).await? else {
            return Ok(false);
        };
        lock(&self.requested).remove(topic);
        let wanted = store.subs.count_for_topic(topic).await? > 0;
        match (mode, wanted) {
            ("subscribe", true) => {
                // Never longer than asked for (the arithmetic below stays in range).
                let asked = self.shared.cfg.relay.chain_lease.as_secs();
                let lease = lease_seconds.unwrap_or(asked).clamp(1, asked);
                let hub = Upstream::of(&rec).hub.to_owned();
                let now = self.shared.clock.now_ms();
                store
                    .subs
                    .upsert(Subscription {
                        lease_seconds: lease,
                        expires_ms: now + lease * 1000,
                        created_ms: now,
                        ..rec
                    })
                    .await?;
                store.flush().await?;
                self.shared.metrics.chain(ChainCount::Verified);
                tracing::info!(%topic, %hub, lease, "upstream subscription verified");
                Ok(true)
            }
            ("unsubscribe", false) => {
                store.subs.remove(CHAIN_TOPIC, topic).await?;
                store.flush().await?;
                tracing::info!(%topic, hub = %Upstream::of(&rec).hub, "upstream subscription ended");
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Content an upstream hub pushed for `topic`.
    pub async fn push(
        &self,
        topic: &str,
        content_type: &str,
        signature: Option<&str>,
        body: Bytes,
    ) -> Result<Pushed, ChainError> {
        let s = &self.shared;
        let Some(rec) = s.store.subs.get(CHAIN_TOPIC, topic).await? else {
            return Ok(Pushed::Unknown);
        };
        let Upstream { secret, hub } = Upstream::of(&rec);
        if !signature.is_some_and(|sig| crate::signature::verify(sig, secret.as_bytes(), &body)) {
            s.metrics.chain(ChainCount::BadSignature);
            tracing::warn!(%topic, %hub,
                "push from the upstream hub ignored: missing or wrong X-Hub-Signature");
            return Ok(Pushed::BadSignature);
        }
        let (destinations, snapshot) = s
            .health
            .persist("subscribers of a topic", &s.shutdown, || {
                super::publish::subscribers_of(s, topic)
            })
            .await
            .ok_or(ChainError::Stopping)?;
        let commit = Commit {
            topic: topic.to_owned(),
            state: None,
            ping_ids: Vec::new(),
            event: Some(NewEvent {
                content_type: content_type.to_owned(),
                body,
                created_ms: s.clock.now_ms(),
                relayed: None,
            }),
            destinations,
            cursor: None,
            hosted: None,
        };
        let seq = self
            .stream
            .commit(commit, snapshot)
            .await
            .map_err(|e| match e {
                super::stream::CommitError::Storage(e) => ChainError::Storage(e),
                super::stream::CommitError::Stopping => ChainError::Stopping,
            })?
            .ok_or(ChainError::Stopping)?;
        if !self.stream.durable(seq).await {
            return Err(ChainError::Stopping);
        }
        s.metrics.chain(ChainCount::Pushed);
        Ok(Pushed::Taken(seq))
    }

    /// Upstream subscriptions.
    async fn upstreams(&self, limit: usize) -> Result<Vec<Subscription>, StorageError> {
        self.shared
            .store
            .subs
            .scan(Some(CHAIN_TOPIC), None, limit)
            .await
    }

    /// Upstream subscriptions, for operators.
    pub async fn views(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::relay::view::ChainedView>, StorageError> {
        Ok(self
            .upstreams(limit)
            .await?
            .iter()
            .map(|r| crate::relay::view::ChainedView {
                topic: r.callback.clone(),
                hub: Upstream::of(r).hub.to_owned(),
                verified: r.lease_seconds > 0,
                lease_seconds: r.lease_seconds,
                expires_ms: r.expires_ms,
            })
            .collect())
    }
}

/// The manager: looks at changed topics, renews and ends upstream subscriptions.
pub async fn run(chain: Arc<Chain>) {
    if !chain.enabled() {
        return;
    }
    let s = chain.shared.clone();
    let tick = (s.cfg.relay.chain_lease / 6).clamp(Duration::from_millis(200), MAX_TICK);
    let mut next_scan = tokio::time::Instant::now();
    loop {
        let topics: Vec<String> = lock(&s.chain_changed.dirty).drain().collect();
        for topic in topics {
            spawn_reconcile(&chain, topic, None);
        }
        if tokio::time::Instant::now() >= next_scan {
            next_scan = tokio::time::Instant::now() + tick;
            match chain.upstreams(SCAN).await {
                Ok(recs) => {
                    for rec in recs {
                        spawn_reconcile(&chain, rec.callback.clone(), Some(rec));
                    }
                }
                Err(e) => s.health.failed("upstream subscriptions", &e),
            }
        }
        tokio::select! {
            _ = s.shutdown.cancelled() => return,
            _ = s.chain_changed.wake.notified() => {}
            _ = tokio::time::sleep_until(next_scan) => {}
        }
    }
}

/// Looks at one topic in a task of its own (one at a time per topic), so a slow upstream
/// hub holds up only its own topics.
fn spawn_reconcile(chain: &Arc<Chain>, topic: String, scanned: Option<Subscription>) {
    if !lock(&chain.busy).insert(topic.clone()) {
        return;
    }
    let chain = chain.clone();
    chain.shared.tracker.clone().spawn(async move {
        if let Err(e) = reconcile(&chain, &topic, scanned).await {
            chain.shared.health.failed("upstream subscription", &e);
        }
        lock(&chain.busy).remove(&topic);
    });
}

async fn reconcile(
    chain: &Chain,
    topic: &str,
    scanned: Option<Subscription>,
) -> Result<(), StorageError> {
    let s = &chain.shared;
    let store = &s.store;
    let wanted = store.subs.count_for_topic(topic).await? > 0;
    let rec = match scanned {
        Some(r) => Some(r),
        None => store.subs.get(CHAIN_TOPIC, topic).await?,
    };
    let now = s.clock.now_ms();
    match (wanted, rec) {
        (true, None) => {
            let Some(hub) = discover(chain, topic).await else {
                return Ok(());
            };
            let rec = Subscription {
                topic: CHAIN_TOPIC.to_owned(),
                callback: topic.to_owned(),
                destination: crate::urls::destination_of_endpoint(topic),
                secret: Some(format!("{} {hub}", super::verify::challenge())),
                lease_seconds: 0,
                // Kept while the request awaits its verification.
                expires_ms: now + 10 * UNVERIFIED_RETRY.as_millis() as u64,
                created_ms: now,
            };
            store.subs.upsert(rec.clone()).await?;
            store.flush().await?;
            request(chain, &rec, "subscribe").await;
        }
        (true, Some(rec)) => {
            let due = if rec.lease_seconds == 0 {
                now >= rec.created_ms + UNVERIFIED_RETRY.as_millis() as u64
            } else {
                // Renewed once two thirds of the lease have passed.
                now >= rec.created_ms + rec.lease_seconds * 2000 / 3
            };
            // Sent at each scan until the upstream hub verifies it (which moves
            // `created_ms`).
            if due {
                request(chain, &rec, "subscribe").await;
            }
        }
        (false, Some(rec)) => {
            // Sent again at each scan until the upstream hub verifies it (the record goes
            // then) or the lease ends.
            request(chain, &rec, "unsubscribe").await;
            if rec.expires_ms < now {
                store.subs.remove(CHAIN_TOPIC, topic).await?;
            }
        }
        (false, None) => {}
    }
    Ok(())
}

/// The hub `topic` advertises, unless it is this hub or none.
async fn discover(chain: &Chain, topic: &str) -> Option<String> {
    let s = &chain.shared;
    let url = url::Url::parse(topic).ok()?;
    if let Err(e) = chain.clients.topic_policy.check_literal(&url) {
        tracing::info!(%topic, error = %e, "topic not fetched to find its hub");
        return None;
    }
    let answer = chain
        .clients
        .topics
        .get(url.clone())
        .timeout(s.cfg.fetch_timeout)
        .send()
        .await;
    let answer = match answer {
        Ok(a) if a.status().is_success() => a,
        Ok(a) => {
            tracing::info!(%topic, status = %a.status(), "topic not read to find its hub");
            return None;
        }
        Err(e) => {
            tracing::info!(%topic, failure = %classify(&e), "topic not read to find its hub");
            return None;
        }
    };
    let mut hubs: Vec<String> = answer
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(hub_links)
        .collect();
    if hubs.is_empty() {
        let body = read_limited(answer, MAX_DISCOVERY).await.ok()?;
        hubs = document_hubs(&body);
    }
    let own = s.hub_url.trim_end_matches('/');
    let hubs: Vec<url::Url> = hubs
        .into_iter()
        .filter_map(|h| url.join(&h).ok())
        .filter(|h| matches!(h.scheme(), "http" | "https"))
        .collect();
    // A topic that names this hub pings it itself: nothing to chain (and two hubs both named
    // would otherwise subscribe at each other for good).
    if hubs.iter().any(|h| h.as_str().trim_end_matches('/') == own) {
        return None;
    }
    let hub = hubs.into_iter().next()?;
    tracing::info!(%topic, %hub, "topic advertises another hub: subscribing there");
    Some(hub.to_string())
}

/// Sends `hub.mode=MODE` for the upstream subscription; failures are logged and the next
/// scan tries again.
async fn request(chain: &Chain, rec: &Subscription, mode: &str) {
    let s = &chain.shared;
    let up = Upstream::of(rec);
    let form = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("hub.mode", mode)
            .append_pair("hub.topic", &rec.callback)
            .append_pair("hub.callback", &chain.callback(&rec.callback));
        if mode == "subscribe" {
            form.append_pair("hub.secret", up.secret).append_pair(
                "hub.lease_seconds",
                &s.cfg.relay.chain_lease.as_secs().to_string(),
            );
        }
        form.finish()
    };
    let pending = if mode == "subscribe" {
        "subscribe"
    } else {
        "unsubscribe"
    };
    lock(&chain.requested).insert(rec.callback.clone(), (pending, tokio::time::Instant::now()));
    let Ok(hub) = url::Url::parse(up.hub) else {
        return;
    };
    if let Err(e) = chain.clients.topic_policy.check_literal(&hub) {
        tracing::warn!(hub = %up.hub, error = %e, "upstream hub blocked by policy");
        return;
    }
    let sent = chain
        .clients
        .topics
        .post(hub)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .timeout(s.cfg.fetch_timeout)
        .send()
        .await;
    s.metrics.chain(ChainCount::Requested);
    match sent {
        Ok(a) if a.status().is_success() => {
            tracing::debug!(topic = %rec.callback, hub = %up.hub, mode, "upstream request accepted");
        }
        Ok(a) => {
            tracing::warn!(topic = %rec.callback, hub = %up.hub, mode, status = %a.status(),
                "upstream hub refused the request; trying again later");
        }
        Err(e) => {
            tracing::warn!(topic = %rec.callback, hub = %up.hub, mode, failure = %classify(&e),
                "upstream hub not reached; trying again later");
        }
    }
}

/// An upstream subscription whose lease ended while the topic still has local subscribers
/// (found by the sweep): kept, as requested and not verified, so it is asked for again.
pub async fn lapsed(shared: &Shared, rec: &Subscription) -> Result<(), StorageError> {
    let now = shared.clock.now_ms();
    shared
        .store
        .subs
        .upsert(Subscription {
            lease_seconds: 0,
            created_ms: 0,
            expires_ms: now + 10 * UNVERIFIED_RETRY.as_millis() as u64,
            ..rec.clone()
        })
        .await?;
    shared.chain_changed.note(&rec.callback);
    Ok(())
}

/// The `rel="hub"` targets of a `Link` header value.
fn hub_links(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in value.split(',') {
        let Some((target, params)) = part.trim().split_once('>') else {
            continue;
        };
        let Some(target) = target.trim().strip_prefix('<') else {
            continue;
        };
        let is_hub = params.split(';').any(|p| {
            p.trim().split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("hub"))
            })
        });
        if is_hub {
            out.push(target.to_owned());
        }
    }
    out
}

/// The `href` of `<link rel="hub">` elements (Atom, RSS with atom:link, XHTML).
fn document_hubs(body: &[u8]) -> Vec<String> {
    use quick_xml::events::Event as X;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(X::Start(e)) | Ok(X::Empty(e)) if e.local_name().as_ref() == "link" => {
                let (mut rel, mut href) = (false, None);
                for a in e.attributes().flatten() {
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match a.key.local_name().as_ref() {
                        "rel" => {
                            rel = value
                                .split_ascii_whitespace()
                                .any(|r| r.eq_ignore_ascii_case("hub"))
                        }
                        "href" => href = Some(value),
                        _ => {}
                    }
                }
                if let (true, Some(h)) = (rel, href) {
                    out.push(h);
                }
            }
            Ok(X::Eof) | Err(_) => return out,
            _ => {}
        }
        buf.clear();
    }
}

/// Chain counters.
#[derive(Debug, Clone, Copy)]
pub enum ChainCount {
    Requested = 0,
    Verified = 1,
    Pushed = 2,
    BadSignature = 3,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_name_their_hubs() {
        assert_eq!(
            hub_links(r#"<https://hub.example/>; rel="hub", <https://t.example/f>; rel="self""#),
            vec!["https://hub.example/"]
        );
        assert_eq!(
            hub_links(r#"<https://a/>; rel="self hub""#),
            vec!["https://a/"]
        );
        assert!(hub_links(r#"<https://a/>; rel="hubs""#).is_empty());
        assert!(hub_links("garbage").is_empty());
    }

    #[test]
    fn documents_name_their_hubs() {
        let atom = br#"<feed xmlns="http://www.w3.org/2005/Atom"><link rel="self" href="http://t/"/>
            <link rel="hub" href="http://hub.example/"/><entry><link href="http://x/"/></entry></feed>"#;
        assert_eq!(document_hubs(atom), vec!["http://hub.example/"]);
        let rss = br#"<rss xmlns:atom="http://www.w3.org/2005/Atom"><channel>
            <atom:link rel="hub" href="http://h2/"/></channel></rss>"#;
        assert_eq!(document_hubs(rss), vec!["http://h2/"]);
        assert!(document_hubs(b"not xml <").is_empty());
    }
}
