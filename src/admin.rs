//! What operators see and do, independent of how it is shown: totals, destination servers, topic
//! and callback lookups, dead letters and their replay. The status page
//! ([`crate::http`]'s `status_page`) and the admin JSON API render these same values.
//! Secrets never appear here: a subscription only says whether it has one.

use std::sync::Arc;

use serde::Serialize;

use crate::engine::Engine;
use crate::engine::dispatch::{DestinationView, LastError};
use crate::engine::health::Failing;
use crate::engine::history::{DeliveryRecord, VerificationRecord};
use crate::metrics::{Gauges, Throughput};
use crate::storage::{
    DeadLetter, EventSummary, LogBounds, Retention, Retry, Storage, StorageError, Subscription,
};

/// What the operators' views need of a running engine, and no more: they read no engine part
/// directly.
#[async_trait::async_trait]
pub trait EngineView: Send + Sync {
    fn store(&self) -> &Storage;
    fn now_ms(&self) -> u64;
    /// Deliveries by outcome: [delivered, failed, gone, expired].
    fn deliveries(&self) -> [u64; 4];
    async fn gauges(&self) -> Result<Gauges, StorageError>;
    /// The event log's durable bounds.
    async fn log_bounds(&self) -> Result<LogBounds, StorageError>;
    fn storage_failing(&self) -> Option<Failing>;
    fn retention(&self) -> Retention;
    /// Every destination seen since start.
    fn destinations(&self) -> Vec<DestinationView>;
    fn destination(&self, name: &str) -> Option<DestinationView>;
    /// The last deliveries to a callback, newest first.
    fn recent_deliveries(&self, callback: &str) -> Vec<DeliveryRecord>;
    /// The last verifications for a callback, or for subscriptions to a topic, newest first.
    fn recent_verifications(&self, callback: &str) -> Vec<VerificationRecord>;
    fn recent_topic_verifications(&self, topic: &str) -> Vec<VerificationRecord>;
    /// A retry was stored behind the retry loop's back (a replay).
    fn wake_retries(&self);
}

#[async_trait::async_trait]
impl EngineView for Engine {
    fn store(&self) -> &Storage {
        Engine::store(self)
    }
    fn now_ms(&self) -> u64 {
        self.clock().now_ms()
    }
    fn deliveries(&self) -> [u64; 4] {
        self.metrics().deliveries()
    }
    async fn gauges(&self) -> Result<Gauges, StorageError> {
        Engine::gauges(self).await
    }
    async fn log_bounds(&self) -> Result<LogBounds, StorageError> {
        Engine::log_bounds(self).await
    }
    fn storage_failing(&self) -> Option<Failing> {
        self.health().status()
    }
    fn retention(&self) -> Retention {
        Engine::retention(self)
    }
    fn destinations(&self) -> Vec<DestinationView> {
        self.dispatcher().views()
    }
    fn destination(&self, name: &str) -> Option<DestinationView> {
        self.dispatcher().view_of(name)
    }
    fn recent_deliveries(&self, callback: &str) -> Vec<DeliveryRecord> {
        self.dispatcher().history().recent(callback)
    }
    fn recent_verifications(&self, callback: &str) -> Vec<VerificationRecord> {
        Engine::recent_verifications(self, callback)
    }
    fn recent_topic_verifications(&self, topic: &str) -> Vec<VerificationRecord> {
        Engine::recent_topic_verifications(self, topic)
    }
    fn wake_retries(&self) {
        Engine::wake_retries(self)
    }
}

/// Subscriptions listed by a topic lookup.
pub const TOPIC_SUBSCRIPTIONS: usize = 50;
/// Recent events listed by a topic lookup, and how many events back it looks.
const TOPIC_EVENTS: usize = 10;
const TOPIC_EVENTS_SCAN: usize = 5_000;
/// Subscriptions and retries listed by a callback lookup.
const CALLBACK_ITEMS: usize = 100;
/// Retries and dead letters a callback lookup looks through (there is no callback index).
const CALLBACK_SCAN: usize = 100_000;

pub struct Admin {
    engine: Arc<dyn EngineView>,
    throughput: Throughput,
    started_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct Overview {
    pub topics: u64,
    pub subscriptions: u64,
    /// Successful deliveries per second, recently.
    pub deliveries_per_second: f64,
    pub deliveries: Deliveries,
    /// Delivery jobs (event, destination) waiting or running.
    pub queued_jobs: u64,
    pub pending_retries: u64,
    pub dead_letters: u64,
    pub destinations: DestinationCounts,
    pub uptime_seconds: u64,
    /// The event log: newest and oldest event kept, how many and their bytes.
    pub log_lead: u64,
    pub log_trail: u64,
    pub log_events: u64,
    pub log_bytes: u64,
    pub retention: RetentionInfo,
    /// The storage failure not yet followed by a success, if any.
    pub storage_failing: Option<crate::engine::health::Failing>,
}

#[derive(Debug, Serialize)]
pub struct RetentionInfo {
    pub max_age_seconds: u64,
    pub max_bytes: u64,
}

/// A page of the event log.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    pub trail: u64,
    pub lead: u64,
    pub retention: RetentionInfo,
    pub events: Vec<EventSummary>,
}

#[derive(Debug, Serialize)]
pub struct Deliveries {
    pub delivered: u64,
    pub failed: u64,
    pub gone: u64,
    pub expired: u64,
}

#[derive(Debug, Serialize)]
pub struct DestinationCounts {
    pub healthy: u64,
    pub throttled: u64,
    pub dead: u64,
}

#[derive(Debug, Serialize)]
pub struct DestinationInfo {
    pub destination: String,
    /// `healthy`, `throttled` or `dead`.
    pub state: &'static str,
    pub window: usize,
    pub consecutive_failures: u32,
    /// Jobs waiting or running.
    pub queued_jobs: usize,
    /// Of those, the jobs running (at most one per topic).
    pub running_jobs: usize,
    /// Dead: seconds until the next probe.
    pub next_probe_in_seconds: Option<f64>,
    /// Throttled: seconds until it takes requests again.
    pub paused_for_seconds: Option<f64>,
    pub last_error: Option<LastError>,
}

impl From<DestinationView> for DestinationInfo {
    fn from(v: DestinationView) -> Self {
        DestinationInfo {
            destination: v.name,
            state: v.status.health.as_str(),
            window: v.status.limit,
            consecutive_failures: v.status.consecutive_failures,
            queued_jobs: v.queued_jobs,
            running_jobs: v.running_jobs,
            next_probe_in_seconds: v.status.next_probe_in.map(|d| d.as_secs_f64()),
            paused_for_seconds: v.status.paused_for.map(|d| d.as_secs_f64()),
            last_error: v.last_error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub callback: String,
    pub destination: String,
    /// `active`, or `expired` (the lease ended; removed at the next sweep).
    pub state: &'static str,
    pub lease_seconds: u64,
    pub expires_ms: u64,
    pub created_ms: u64,
    pub has_secret: bool,
}

impl SubscriptionInfo {
    pub fn new(s: Subscription, now_ms: u64) -> SubscriptionInfo {
        SubscriptionInfo {
            state: if s.expires_ms < now_ms {
                "expired"
            } else {
                "active"
            },
            has_secret: s.secret.is_some(),
            topic: s.topic,
            callback: s.callback,
            destination: s.destination,
            lease_seconds: s.lease_seconds,
            expires_ms: s.expires_ms,
            created_ms: s.created_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TopicInfo {
    pub topic: String,
    pub subscribers: u64,
    /// When the hub last fetched the topic or took a fat ping for it (ms), if ever.
    pub last_fetch_ms: Option<u64>,
    /// What that fetch gave ("200", "304", "error: …").
    pub last_result: Option<String>,
    pub recent_events: Vec<EventSummary>,
    /// The first subscriptions, in destination and callback order.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// Verifications of requests for this topic, newest first (kept in memory since start):
    /// failed and denied ones with the reason.
    pub recent_verifications: Vec<VerificationRecord>,
}

#[derive(Debug, Serialize)]
pub struct RetryInfo {
    pub event: u64,
    pub topic: String,
    pub attempts: u32,
    pub due_ms: u64,
    pub last_error: String,
}

impl From<Retry> for RetryInfo {
    fn from(r: Retry) -> Self {
        RetryInfo {
            event: r.event,
            topic: r.topic,
            attempts: r.attempts,
            due_ms: r.due_ms,
            last_error: r.last_error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PendingVerification {
    pub mode: &'static str,
    pub topic: String,
    pub requested_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct CallbackInfo {
    pub callback: String,
    pub subscriptions: Vec<SubscriptionInfo>,
    /// Requests accepted (202) whose verification of intent has not finished.
    pub pending_verifications: Vec<PendingVerification>,
    pub pending_retries: Vec<RetryInfo>,
    pub dead_letters: Vec<DeadLetter>,
    /// Newest first (kept in memory since the hub started).
    pub recent_deliveries: Vec<DeliveryRecord>,
    /// Verifications of requests for this callback, newest first (in memory since start).
    pub recent_verifications: Vec<VerificationRecord>,
    /// The callback's destination server, if the hub has delivered there since it started.
    pub destination: Option<DestinationInfo>,
}

impl Admin {
    pub fn new(engine: Arc<dyn EngineView>) -> Admin {
        let now = engine.now_ms();
        Admin {
            engine,
            throughput: Throughput::new(now),
            started_ms: now,
        }
    }

    fn now_ms(&self) -> u64 {
        self.engine.now_ms()
    }

    pub async fn overview(&self) -> Result<Overview, StorageError> {
        let store = self.engine.store();
        let (topics, subscriptions) = store.subs.totals().await?;
        let [delivered, failed, gone, expired] = self.engine.deliveries();
        let gauges = self.engine.gauges().await?;
        let [healthy, throttled, dead] = gauges.destinations;
        let now = self.now_ms();
        let log = gauges.log;
        Ok(Overview {
            topics,
            subscriptions,
            deliveries_per_second: self.throughput.per_second(now, delivered),
            deliveries: Deliveries {
                delivered,
                failed,
                gone,
                expired,
            },
            queued_jobs: gauges.queued_jobs,
            pending_retries: gauges.retries,
            dead_letters: store.delivery.count_dead_letters().await?,
            destinations: DestinationCounts {
                healthy,
                throttled,
                dead,
            },
            uptime_seconds: now.saturating_sub(self.started_ms) / 1000,
            log_lead: log.lead,
            log_trail: log.trail,
            log_events: log.events,
            log_bytes: log.bytes,
            retention: self.retention(),
            storage_failing: self.engine.storage_failing(),
        })
    }

    fn retention(&self) -> RetentionInfo {
        let r = self.engine.retention();
        RetentionInfo {
            max_age_seconds: r.max_age_ms / 1000,
            max_bytes: r.max_bytes,
        }
    }

    /// Events after `after` in sequence order (bodies left out), at most `limit`.
    pub async fn events(&self, after: u64, limit: usize) -> Result<EventsPage, StorageError> {
        let log = &self.engine.store().log;
        let bounds = self.engine.log_bounds().await?;
        let from = after.saturating_add(1).max(bounds.trail);
        let events = log
            .summaries(from, bounds.lead.saturating_add(1), limit)
            .await?;
        Ok(EventsPage {
            trail: bounds.trail,
            lead: bounds.lead,
            retention: self.retention(),
            events,
        })
    }

    /// Destination servers seen since start: dead first, then throttled, then by queued jobs;
    /// at most `limit`.
    pub fn destinations(&self, limit: usize) -> Vec<DestinationInfo> {
        let mut all: Vec<DestinationInfo> = self
            .engine
            .destinations()
            .into_iter()
            .map(DestinationInfo::from)
            .collect();
        let rank = |s: &str| match s {
            "dead" => 0,
            "throttled" => 1,
            _ => 2,
        };
        all.sort_by(|a, b| {
            rank(a.state)
                .cmp(&rank(b.state))
                .then(b.queued_jobs.cmp(&a.queued_jobs))
                .then(b.consecutive_failures.cmp(&a.consecutive_failures))
                .then(a.destination.cmp(&b.destination))
        });
        all.truncate(limit);
        all
    }

    pub async fn topic(&self, topic: &str) -> Result<TopicInfo, StorageError> {
        let store = self.engine.store();
        let state = store.publish.topic_state(topic).await?;
        let now = self.now_ms();
        let subscriptions = store
            .subs
            .scan(Some(topic), None, TOPIC_SUBSCRIPTIONS)
            .await?
            .into_iter()
            .map(|s| SubscriptionInfo::new(s, now))
            .collect();
        let recent_events = store
            .log
            .recent_for_topic(topic, TOPIC_EVENTS, TOPIC_EVENTS_SCAN)
            .await?;
        let (last_fetch_ms, last_result) = match state {
            Some(s) if s.last_fetch_ms > 0 || !s.last_result.is_empty() => {
                (Some(s.last_fetch_ms), Some(s.last_result))
            }
            _ => (None, None),
        };
        Ok(TopicInfo {
            topic: topic.to_owned(),
            subscribers: store.subs.count_for_topic(topic).await?,
            last_fetch_ms,
            last_result,
            recent_events,
            subscriptions,
            recent_verifications: self.engine.recent_topic_verifications(topic),
        })
    }

    /// Subscriptions in (topic, destination, callback) order, after (topic, callback).
    pub async fn subscriptions(
        &self,
        topic: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<SubscriptionInfo>, StorageError> {
        let now = self.now_ms();
        Ok(self
            .engine
            .store()
            .subs
            .scan(topic, after, limit)
            .await?
            .into_iter()
            .map(|s| SubscriptionInfo::new(s, now))
            .collect())
    }

    pub async fn callback(&self, callback: &str) -> Result<CallbackInfo, StorageError> {
        let store = self.engine.store();
        let now = self.now_ms();
        let subscriptions: Vec<SubscriptionInfo> = store
            .subs
            .for_callback(callback, CALLBACK_ITEMS)
            .await?
            .into_iter()
            .map(|s| SubscriptionInfo::new(s, now))
            .collect();
        let pending_verifications = store
            .subs
            .intents()
            .await?
            .into_iter()
            .filter(|i| i.callback == callback)
            .map(|i| PendingVerification {
                mode: i.mode.as_str(),
                topic: i.topic,
                requested_ms: i.created_ms,
            })
            .collect();
        let pending_retries = store
            .delivery
            .retries(CALLBACK_SCAN)
            .await?
            .into_iter()
            .filter(|r| r.callback == callback)
            .take(CALLBACK_ITEMS)
            .map(RetryInfo::from)
            .collect();
        let dead_letters = store
            .delivery
            .dead_letters(CALLBACK_SCAN)
            .await?
            .into_iter()
            .filter(|d| d.callback == callback)
            .take(CALLBACK_ITEMS)
            .collect();
        // The callback is normalised (the API and the page parse it as the hub stores it).
        let destination = self
            .engine
            .destination(&crate::storage::destination_of(callback))
            .map(DestinationInfo::from);
        Ok(CallbackInfo {
            callback: callback.to_owned(),
            subscriptions,
            pending_verifications,
            pending_retries,
            dead_letters,
            recent_deliveries: self.engine.recent_deliveries(callback),
            recent_verifications: self.engine.recent_verifications(callback),
            destination,
        })
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StorageError> {
        self.engine.store().delivery.dead_letters(limit).await
    }

    /// Turns one dead letter back into a retry due now; `None` if there is no such letter.
    pub async fn replay(&self, id: u64) -> Result<Option<Retry>, StorageError> {
        let store = self.engine.store();
        let retry = store.delivery.replay_dead_letter(id, self.now_ms()).await?;
        if retry.is_some() {
            store.flush().await?;
            tracing::info!(dead_letter = id, "dead letter replayed");
            self.engine.wake_retries();
        }
        Ok(retry)
    }

    /// Replays up to `limit` dead letters, oldest first. Returns how many.
    pub async fn replay_all(&self, limit: usize) -> Result<usize, StorageError> {
        let store = self.engine.store();
        let mut n = 0;
        for dl in store.delivery.dead_letters(limit).await? {
            if store
                .delivery
                .replay_dead_letter(dl.id, self.now_ms())
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        if n > 0 {
            store.flush().await?;
            tracing::info!(replayed = n, "dead letters replayed");
            self.engine.wake_retries();
        }
        Ok(n)
    }
}
