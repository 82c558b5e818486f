//! One content-distribution request (W3C WebSub 7) and what its outcome does to storage.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header;

use super::Engine;
use super::client::{Failure, classify};
use crate::signature;
use crate::storage::{Event, Retry, Subscription};

/// What is the same for every subscriber of one event, prepared once.
pub struct Prepared {
    pub event: u64,
    pub topic: String,
    pub content_type: String,
    pub link: String,
    pub body: Bytes,
}

impl Prepared {
    pub fn new(engine: &Engine, event: &Event) -> Prepared {
        Prepared {
            event: event.seq,
            topic: event.topic.clone(),
            content_type: event.content_type.clone(),
            link: format!(
                "<{}>; rel=\"hub\", <{}>; rel=\"self\"",
                engine.hub_url, event.topic
            ),
            body: event.body.clone(),
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
}

pub async fn send(engine: &Engine, p: &Prepared, sub: &Subscription) -> Outcome {
    if sub.expires_ms < engine.clock.now_ms() {
        return Outcome::Expired;
    }
    let url = match url::Url::parse(&sub.callback) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(Failure::Other(e.to_string())),
    };
    if let Err(e) = engine.clients.callback_policy.check_literal(&url) {
        return Outcome::Failed(Failure::Blocked(e.to_string()));
    }
    let mut req = engine
        .clients
        .callbacks
        .post(url)
        .timeout(engine.cfg.delivery_timeout)
        .header(header::CONTENT_TYPE, p.content_type.as_str())
        .header(header::LINK, p.link.as_str())
        .body(p.body.clone());
    if let Some(secret) = &sub.secret {
        let sig = signature::sign(engine.cfg.signature, secret.as_bytes(), &p.body);
        req = req.header("X-Hub-Signature", sig);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            // The answer's body is ignored; dropping the response may close the connection
            // if the subscriber sent a large one, which is its own cost.
            if status.is_success() {
                Outcome::Delivered
            } else if status == reqwest::StatusCode::GONE {
                Outcome::Gone
            } else if status.is_redirection() {
                Outcome::Failed(Failure::Redirect(status.as_u16()))
            } else {
                Outcome::Failed(Failure::Status(status.as_u16()))
            }
        }
        Err(e) => Outcome::Failed(classify(&e)),
    }
}

/// Delay before attempt `failed + 1`, jittered by ±20%; `None` when the schedule is used up.
pub fn backoff(schedule: &[Duration], failed: u32) -> Option<Duration> {
    let base = *schedule.get(failed.checked_sub(1)? as usize)?;
    let jitter = rand::rng().random_range(0.8..1.2);
    Some(base.mul_f64(jitter))
}

/// Records an outcome. `previous` is the retry record this attempt came from, if any.
pub async fn settle(
    engine: &Engine,
    p: &Prepared,
    sub: &Subscription,
    previous: Option<&Retry>,
    outcome: Outcome,
) -> crate::storage::Result<()> {
    let store = &engine.store;
    match outcome {
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
            let now = engine.clock.now_ms();
            let retry = Retry {
                event: p.event,
                topic: sub.topic.clone(),
                callback: sub.callback.clone(),
                destination: sub.destination.clone(),
                attempts,
                due_ms: now,
                last_error: failure.to_string(),
            };
            match backoff(&engine.cfg.retry_schedule, attempts) {
                Some(delay) => {
                    let retry = Retry {
                        due_ms: now + delay.as_millis() as u64,
                        ..retry
                    };
                    tracing::debug!(callback = %sub.callback, attempts, failure = %failure,
                        class = failure.class(), "delivery failed; retry scheduled");
                    store.delivery.put_retry(retry).await?;
                    // Failures are rare and must survive a crash: make them durable now.
                    store.flush().await?;
                    engine.retry_wake.notify_one();
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
