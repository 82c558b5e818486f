//! One delivery through its endpoint's transport ([`super::transport`]) and what its outcome
//! does to storage.

use std::time::Duration;

use super::client::Failure;
use super::dispatch::Dispatcher;
use super::shared::Shared;
use super::window::Signal;
use crate::signature::{self, Algorithm};
use crate::storage::{Event, Retry, Subscription};
use bytes::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use rand::Rng;

/// What is the same for every subscriber of one event, prepared once.
pub struct Prepared {
    pub event: u64,
    pub topic: String,
    pub content_type: String,
    /// `Content-Type` and `Link: <hub>; rel="hub", <topic>; rel="self"` as HTTP header values;
    /// `None` when either is not a valid header value (each delivery then fails, saying so).
    pub http_headers: Option<[(HeaderName, HeaderValue); 2]>,
    pub body: Bytes,
    /// `ORIGIN:SEQ`: the event where it entered the network (relay batches name it).
    pub event_id: String,
    /// The `Link` header value.
    pub link: String,
    /// The `X-Hub-Signature` to send instead of one computed with the subscriber's secret:
    /// a delivery forwarded for another hub carries the origin's.
    pub signature: Option<String>,
}

impl Prepared {
    pub fn new(hub_url: &str, event: &Event) -> Prepared {
        let link = format!("<{hub_url}>; rel=\"hub\", <{}>; rel=\"self\"", event.topic);
        Prepared::with(event, link, None)
    }

    fn with(event: &Event, link: String, signature: Option<String>) -> Prepared {
        let http_headers = match (
            HeaderValue::from_str(&event.content_type),
            HeaderValue::from_str(&link),
        ) {
            (Ok(ct), Ok(link)) => Some([(header::CONTENT_TYPE, ct), (header::LINK, link)]),
            _ => None,
        };
        Prepared {
            event: event.seq,
            topic: event.topic.clone(),
            content_type: event.content_type.clone(),
            http_headers,
            body: event.body.clone(),
            event_id: format!("{}:{}", event.origin, event.origin_number()),
            link,
            signature,
        }
    }

    /// The delivery of `event` (a batch taken as a relay) that its origin hub prepared: its
    /// `Link` header and signature as they came.
    pub fn forwarded(event: &Event, forward: &crate::storage::Forward) -> Prepared {
        Prepared::with(event, forward.link.clone(), forward.signature.clone())
    }

    /// The `X-Hub-Signature` value for a subscriber with `secret`, if any.
    pub fn signature_for(&self, algorithm: Algorithm, secret: Option<&str>) -> Option<String> {
        match (&self.signature, secret) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(k)) => Some(signature::sign(algorithm, k.as_bytes(), &self.body)),
            (None, None) => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// 410 Gone: the subscriber ended the subscription.
    Gone,
    Failed(Failure),
    /// The lease ended: not sent.
    Expired,
    /// Not sent, or cut off, because the hub is stopping: the delivery stays pending.
    Deferred,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed(_) => "failed",
            Outcome::Expired => "expired",
            Outcome::Deferred => "deferred",
        }
    }
}

/// Sends one delivery through the transport of the subscription's endpoint, unless its lease
/// has ended. `via_relay`: look for the destination's registered relay first (a job has
/// looked already).
pub async fn send(d: &Dispatcher, p: &Prepared, sub: &Subscription, via_relay: bool) -> Outcome {
    if sub.expires_ms < d.shared().clock.now_ms() {
        return Outcome::Expired;
    }
    // A destination with a registered relay takes even a single delivery (a retry) as a batch;
    // a delivery forwarded for another hub never goes back to a relay (it could be this one).
    let relay = match via_relay && p.signature.is_none() {
        true => super::relay_batch::relay_of(d.shared(), &sub.destination).await,
        false => Ok(None),
    };
    match relay {
        Ok(Some(relay)) => {
            let batch = d.batches();
            let content = super::relay_batch::content(p);
            let body = batch.body(&d.shared().hub_url, p, &content, &[sub]);
            return batch.send(&relay, body).await.for_one(&sub.callback);
        }
        Ok(None) => {}
        Err(e) => return Outcome::Failed(Failure::Other(format!("storage: {e}"))),
    }
    match d.transports().for_endpoint(&sub.callback) {
        Some(t) => t.send(p, sub).await,
        None => Outcome::Failed(Failure::Other(format!(
            "no transport for the endpoint {}",
            sub.callback
        ))),
    }
}

/// What an outcome says about the destination server; `None` when no request was made.
pub fn signal(outcome: &Outcome) -> Option<Signal> {
    Some(match outcome {
        Outcome::Delivered => Signal::Success,
        Outcome::Gone => Signal::Answered,
        Outcome::Expired | Outcome::Deferred => return None,
        Outcome::Failed(f) => match f {
            Failure::Throttled { retry_after, .. } => Signal::Throttled(*retry_after),
            Failure::Status(s) if *s == 429 || *s >= 500 => Signal::Failure,
            Failure::Status(_) | Failure::Redirect(_) | Failure::Encoding(_) => Signal::Answered,
            // Refused by policy, before any connection: says nothing about the server.
            Failure::Blocked(_) => return None,
            Failure::Timeout
            | Failure::Dns(_)
            | Failure::Refused
            | Failure::Tls(_)
            | Failure::Redirects(_)
            | Failure::TooLarge
            | Failure::Other(_) => Signal::Failure,
        },
    })
}

/// Delay before attempt `failed + 1`, jittered by ±20%; `None` when the schedule is used up.
pub fn backoff(schedule: &[Duration], failed: u32) -> Option<Duration> {
    backoff_with(schedule, failed, jitter())
}

/// A jitter factor for [`backoff_with`]: ±20%.
pub fn jitter() -> f64 {
    rand::rng().random_range(0.8..1.2)
}

/// [`backoff`] with a given jitter factor (shared by the deliveries of one batch).
pub fn backoff_with(schedule: &[Duration], failed: u32, jitter: f64) -> Option<Duration> {
    let base = *schedule.get(failed.checked_sub(1)? as usize)?;
    Some(base.mul_f64(jitter))
}

/// Records an outcome. `previous` is the retry record this attempt came from, if any.
pub async fn settle(
    shared: &Shared,
    p: &Prepared,
    sub: &Subscription,
    previous: Option<&Retry>,
    outcome: Outcome,
) -> crate::storage::Result<()> {
    let store = &shared.store;
    match outcome {
        // Still pending: a retry record stays as it is; a job keeps its cursor.
        Outcome::Deferred => return Ok(()),
        Outcome::Delivered => {
            tracing::debug!(callback = %sub.callback, event = p.event, "delivered");
        }
        Outcome::Gone => {
            tracing::info!(topic = %sub.topic, callback = %sub.callback, "410 Gone: subscription removed");
            store.subs.remove(&sub.topic, &sub.callback).await?;
        }
        Outcome::Expired => {
            tracing::info!(topic = %sub.topic, callback = %sub.callback, "lease expired: subscription removed");
            store.subs.remove(&sub.topic, &sub.callback).await?;
        }
        Outcome::Failed(failure) => {
            let attempts = previous.map_or(0, |r| r.attempts) + 1;
            let now = shared.clock.now_ms();
            let retry = Retry {
                event: p.event,
                topic: sub.topic.clone(),
                callback: sub.callback.clone(),
                destination: sub.destination.clone(),
                attempts,
                due_ms: now,
                last_error: failure.to_string(),
                forward: previous.and_then(|r| r.forward.clone()),
            };
            let not_before = match &failure {
                Failure::Throttled { retry_after, .. } => {
                    (*retry_after).min(shared.cfg.window.max_retry_after)
                }
                _ => Duration::ZERO,
            };
            match backoff(&shared.cfg.retry_schedule, attempts) {
                Some(delay) => {
                    let delay = delay.max(not_before);
                    let retry = Retry {
                        due_ms: now + delay.as_millis() as u64,
                        ..retry
                    };
                    tracing::debug!(callback = %sub.callback, attempts, failure = %failure,
                        class = failure.class(), "delivery failed; retry scheduled");
                    store.delivery.put_retry(retry).await?;
                    shared.metrics.retry_scheduled();
                    // Failures are rare and must survive a crash: make them durable now.
                    store.flush().await?;
                    shared.retry_wake.notify_one();
                }
                None => {
                    tracing::warn!(callback = %sub.callback, attempts, failure = %failure,
                        "delivery failed for good; dead letter recorded");
                    let last = previous.cloned().unwrap_or(retry.clone());
                    let dead = Retry {
                        attempts,
                        last_error: retry.last_error,
                        ..last
                    };
                    store.delivery.dead_letter(&dead, now).await?;
                    shared.metrics.dead_lettered();
                    store.flush().await?;
                }
            }
        }
    }
    if let Some(prev) = previous {
        store.delivery.remove_retry(prev).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule_with_jitter() {
        let s = [Duration::from_secs(2), Duration::from_secs(10)];
        for _ in 0..100 {
            let d = backoff(&s, 1).unwrap();
            assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400));
        }
        assert!(backoff(&s, 2).unwrap() >= Duration::from_secs(8));
        assert_eq!(backoff(&s, 3), None);
        assert_eq!(backoff(&[], 1), None);
    }
}
