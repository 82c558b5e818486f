//! Delegated delivery: while a destination server has a registered relay (`hub.mode=relay`,
//! stored as a subscription to [`RELAY_TOPIC`] whose destination is that server), its
//! deliveries go as batches, `POST RELAY_URL` with `application/vnd.hubcast.batch+json`: the
//! content once, and per delivery its callback and exactly the signature its subscriber would
//! have received, so the relay forwards them verbatim without knowing any subscriber's secret.
//! The batch itself is signed with the relay's secret (`X-Hub-Signature: sha256=…`).
//!
//! A 2xx answer settles every delivery of the batch (`{"gone": [URL, …]}` removes those
//! subscriptions, as a 410 would); anything else makes each delivery a retry of its own (sent
//! through the relay again, one per batch, through the destination's window and retry
//! schedule; one dead letter each when the schedule is used up). Without a registration, or
//! once it lapses, deliveries go direct again.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::client::Failure;
use super::deliver::{Outcome, Prepared};
use super::shared::Shared;
use super::transport::http::failure_of;
use super::transport::lean::LeanClient;
use crate::signature::{self, Algorithm};
use crate::ssrf::Policy;
use crate::storage::{RELAY_TOPIC, Retry, StorageError, Subscription};

/// The batch's media type; the version changes with the format.
pub const MEDIA_TYPE: &str = "application/vnd.hubcast.batch+json";

/// Relay registrations of one destination looked at for a live one.
const RELAYS_PER_DESTINATION: usize = 16;

/// The relay registered for `destination`, unless there is none whose lease runs.
pub async fn relay_of(
    shared: &Shared,
    destination: &str,
) -> Result<Option<Subscription>, StorageError> {
    let now = shared.clock.now_ms();
    // A destination may have registered more than one relay URL: the first whose lease runs.
    let found = shared
        .store
        .subs
        .page(RELAY_TOPIC, destination, None, RELAYS_PER_DESTINATION)
        .await?;
    Ok(found
        .into_iter()
        .find(|r| r.destination == destination && r.expires_ms >= now))
}

#[derive(Serialize)]
struct Batch<'a> {
    hub: &'a str,
    event: &'a str,
    topic: &'a str,
    content_type: &'a str,
    link: &'a str,
    content: &'a str,
    deliveries: Vec<BatchDelivery<'a>>,
}

#[derive(Serialize)]
struct BatchDelivery<'a> {
    callback: &'a str,
    signature: Option<String>,
}

/// A relay's answer to a batch it took.
#[derive(Deserialize, Default)]
struct Taken {
    #[serde(default)]
    gone: Vec<String>,
}

/// What became of a batch.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Taken: the relay is responsible for every delivery; these callbacks are gone.
    Taken {
        gone: Vec<String>,
    },
    Failed(Failure),
}

/// Sends batches.
pub struct BatchSender {
    client: Arc<LeanClient>,
    policy: Policy,
    timeout: Duration,
    algorithm: Algorithm,
    pub max_batch: usize,
}

impl BatchSender {
    pub fn new(
        client: Arc<LeanClient>,
        policy: Policy,
        timeout: Duration,
        algorithm: Algorithm,
        max_batch: usize,
    ) -> BatchSender {
        BatchSender {
            client,
            policy,
            timeout,
            algorithm,
            max_batch,
        }
    }

    /// The batch document for `subs` (all of one destination).
    pub fn body(
        &self,
        hub_url: &str,
        p: &Prepared,
        content: &str,
        subs: &[&Subscription],
    ) -> Vec<u8> {
        let deliveries = subs
            .iter()
            .map(|s| BatchDelivery {
                callback: &s.callback,
                signature: p.signature_for(self.algorithm, s.secret.as_deref()),
            })
            .collect();
        let batch = Batch {
            hub: hub_url,
            event: &p.event_id,
            topic: &p.topic,
            content_type: &p.content_type,
            link: &p.link,
            content,
            deliveries,
        };
        serde_json::to_vec(&batch).expect("batches serialise")
    }

    /// POSTs a batch to the relay, signed with its secret.
    pub async fn send(&self, relay: &Subscription, body: Vec<u8>) -> BatchOutcome {
        let url = match url::Url::parse(&relay.callback) {
            Ok(u) => u,
            Err(e) => return BatchOutcome::Failed(Failure::Other(e.to_string())),
        };
        if let Err(e) = self.policy.check_literal(&url) {
            return BatchOutcome::Failed(Failure::Blocked(e.to_string()));
        }
        let secret = relay.secret.as_deref().unwrap_or_default();
        let sig = signature::sign(Algorithm::Sha256, secret.as_bytes(), &body);
        let (Ok(sig), ct) = (
            HeaderValue::from_str(&sig),
            HeaderValue::from_static(MEDIA_TYPE),
        ) else {
            return BatchOutcome::Failed(Failure::Other("bad signature header".into()));
        };
        let headers = [
            (hyper::header::CONTENT_TYPE, ct),
            (HeaderName::from_static("x-hub-signature"), sig),
        ];
        let sent = self.client.post(&url, &headers, Bytes::from(body));
        let answer = match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(a)) => a,
            Ok(Err(f)) => return BatchOutcome::Failed(f),
            Err(_) => return BatchOutcome::Failed(Failure::Timeout),
        };
        if !answer.status.is_success() {
            return BatchOutcome::Failed(failure_of(&answer));
        }
        let taken: Taken = serde_json::from_slice(&answer.body).unwrap_or_default();
        BatchOutcome::Taken { gone: taken.gone }
    }
}

impl BatchOutcome {
    /// As one delivery's outcome (a batch of one, sent for a retry).
    pub fn for_one(self, callback: &str) -> Outcome {
        match self {
            BatchOutcome::Taken { gone } if gone.iter().any(|g| g == callback) => Outcome::Gone,
            BatchOutcome::Taken { .. } => Outcome::Delivered,
            BatchOutcome::Failed(f) => Outcome::Failed(f),
        }
    }
}

/// The content as the batch carries it.
pub fn content(p: &Prepared) -> String {
    B64.encode(&p.body)
}

/// Records the failure of a whole batch: a retry for each of its deliveries, made durable
/// with one flush. `previous[i]` is the retry record `subs[i]` was attempted from, if any (it
/// is replaced). One jitter for the whole batch keeps its deliveries due together, so the
/// retry loop sends them as one batch again.
pub async fn retry_each(
    shared: &Shared,
    p: &Prepared,
    subs: &[&Subscription],
    previous: &[Option<&Retry>],
    failure: &Failure,
) -> Result<(), StorageError> {
    let now = shared.clock.now_ms();
    let not_before = match failure {
        Failure::Throttled { retry_after, .. } => {
            (*retry_after).min(shared.cfg.window.max_retry_after)
        }
        _ => Duration::ZERO,
    };
    let jitter = super::deliver::jitter();
    for (i, sub) in subs.iter().enumerate() {
        let prev = previous.get(i).copied().flatten();
        let attempts = prev.map_or(0, |r| r.attempts) + 1;
        let delay = super::deliver::backoff_with(&shared.cfg.retry_schedule, attempts, jitter);
        let due_ms = now + delay.unwrap_or_default().max(not_before).as_millis() as u64;
        let retry = Retry {
            event: p.event,
            topic: sub.topic.clone(),
            callback: sub.callback.clone(),
            destination: sub.destination.clone(),
            attempts,
            due_ms,
            last_error: format!("relay batch: {failure}"),
            forward: None,
        };
        // The new record first: a crash between the two leaves one too many, never none.
        if delay.is_none() {
            shared.store.delivery.dead_letter(&retry, now).await?;
            shared.metrics.dead_lettered();
        } else {
            shared.store.delivery.put_retry(retry).await?;
            shared.metrics.retry_scheduled();
        }
        // (Unless the new record took the old one's key: then it replaced it.)
        if let Some(prev) = prev.filter(|p| p.due_ms != due_ms || delay.is_none()) {
            shared.store.delivery.remove_retry(prev).await?;
        }
    }
    shared.store.flush().await?;
    shared.retry_wake.notify_one();
    Ok(())
}
