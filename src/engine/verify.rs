//! Verification of intent (W3C WebSub 5.3) and denial (5.2).

use rand::RngCore;
use url::Url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::{CALLBACK_HINT, Clients, Failure, TOPIC_HINT, classify, read_limited};
use super::history::{History, VerificationRecord};
use super::origin_limit::{OriginLimit, OriginPermit};
use super::shared::Shared;
use crate::metrics::Verification;
use crate::rate_limit::Limiter;
use crate::ssrf::GuardError;
use crate::storage::{Intent, IntentMode, Subscription, WorkKey, destination_of};

/// How often an intent waiting for its host's rate looks whether a newer one superseded it.
const SUPERSEDED_CHECK: Duration = Duration::from_millis(50);

/// Largest verification answer read; a challenge is 64 hex characters.
const MAX_ANSWER: usize = 16 * 1024;

/// The verifier: checks intents against the subscribers' callbacks, through the callback
/// client (no redirects) under the callback policy.
pub struct Verifier {
    shared: Arc<Shared>,
    clients: Clients,
    /// Verifications in flight, shared between callback hosts.
    calls: Arc<OriginLimit>,
    /// Verification requests started per callback host (`limits.verifications_per_host`).
    rate: Limiter<String>,
    /// The newest intent queued for each subscription (topic, callback) with one waiting.
    newest: Mutex<HashMap<(String, String), u64>>,
    /// Recent outcomes, by callback and by topic (bounded like the delivery history).
    by_callback: History<VerificationRecord>,
    by_topic: History<VerificationRecord>,
    /// Mail subscriptions are confirmed by mail (when `[smtp]` is on).
    mail: Option<Arc<crate::mail::smtp::MailSender>>,
}

impl Verifier {
    pub fn new(
        shared: Arc<Shared>,
        clients: &Clients,
        mail: Option<Arc<crate::mail::smtp::MailSender>>,
    ) -> Verifier {
        let limit = shared.cfg.verify_limit;
        let (per_key, keys) = (
            shared.cfg.admin.history_per_callback,
            shared.cfg.admin.history_callbacks,
        );
        Verifier {
            clients: clients.clone(),
            calls: OriginLimit::new(limit.concurrency, limit.per_origin),
            rate: Limiter::new(shared.cfg.limits.verifications_per_host),
            newest: Mutex::new(HashMap::new()),
            by_callback: History::new(per_key, keys),
            by_topic: History::new(per_key, keys),
            mail,
            shared,
        }
    }

    /// Notes an intent queued for verification: it supersedes older ones of its subscription.
    pub fn note(&self, intent: &Intent) {
        let mut newest = lock(&self.newest);
        let id = newest.entry(subscription(intent)).or_insert(intent.id);
        *id = (*id).max(intent.id);
    }

    fn superseded_by_newer(&self, intent: &Intent) -> bool {
        lock(&self.newest)
            .get(&subscription(intent))
            .is_some_and(|&newest| newest > intent.id)
    }

    fn done(&self, intent: &Intent) {
        let mut newest = lock(&self.newest);
        let key = subscription(intent);
        if newest.get(&key) == Some(&intent.id) {
            newest.remove(&key);
        }
    }

    /// Verifies a batch of intents of one (topic, callback), each once claimed. Only the
    /// newest request counts (W3C WebSub: the subscriber's latest intent wins), so an intent
    /// that a newer one for the same subscription has joined is dropped unverified, also while
    /// it waits for its callback host's rate: ten thousand requests for one subscription cost
    /// its callback a verification or two, not ten thousand.
    pub async fn run(&self, batch: Vec<Intent>) {
        for intent in batch {
            let key = WorkKey::Intent(intent.id);
            // The host's rate, then a place among the verifications in flight (one callback's
            // requests, the denial included, count against its host).
            let origin = OriginLimit::origin_of(&intent.callback);
            let ready = tokio::select! {
                r = self.wait_turn(&intent, &origin) => r,
                _ = self.shared.shutdown.cancelled() => return, // the intents stay stored
            };
            if !self.shared.take(vec![key.clone()]).await.contains(&true) {
                self.done(&intent);
                continue; // another node has it
            }
            match ready {
                Some(place) => {
                    run(self, intent.clone()).await;
                    drop(place);
                }
                None => self.superseded(&intent).await,
            }
            self.done(&intent);
            self.shared.release(vec![key]).await;
        }
    }

    /// Waits for the callback host's rate and a place; `None` as soon as a newer intent of the
    /// same subscription supersedes this one.
    async fn wait_turn(&self, intent: &Intent, origin: &str) -> Option<OriginPermit> {
        let origin = origin.to_owned();
        loop {
            if self.superseded_by_newer(intent) {
                return None;
            }
            match self.rate.check(&origin) {
                Ok(()) => break,
                Err(wait) => tokio::time::sleep(wait.min(SUPERSEDED_CHECK)).await,
            }
        }
        Some(self.calls.acquire(&origin).await)
    }

    /// Remembers how a verification ended, for the callback's and the topic's lookups.
    fn record(
        &self,
        intent: &Intent,
        outcome: &'static str,
        class: Option<&'static str>,
        reason: Option<String>,
        hint: Option<&'static str>,
    ) {
        let record = VerificationRecord {
            at_ms: self.shared.clock.now_ms(),
            topic: intent.topic.clone(),
            callback: intent.callback.clone(),
            mode: intent.mode.as_str(),
            outcome,
            class,
            reason,
            hint,
        };
        self.by_topic.record(&intent.topic, record.clone());
        self.by_callback.record(&intent.callback, record);
    }

    /// The last verifications for a callback, newest first.
    pub fn recent_for_callback(&self, callback: &str) -> Vec<VerificationRecord> {
        self.by_callback.recent(callback)
    }

    /// The last verifications for subscriptions to a topic, newest first.
    pub fn recent_for_topic(&self, topic: &str) -> Vec<VerificationRecord> {
        self.by_topic.recent(topic)
    }

    async fn superseded(&self, intent: &Intent) {
        tracing::debug!(topic = %intent.topic, callback = %intent.callback,
            "a newer request for this subscription supersedes this one");
        self.shared.metrics.verification(Verification::Superseded);
        self.record(intent, "superseded", None, None, None);
        if let Err(e) = self.shared.store.subs.remove_intent(intent.id).await {
            tracing::error!(error = %e, "cannot remove a superseded intent");
        }
    }
}

fn subscription(intent: &Intent) -> (String, String) {
    (intent.topic.clone(), intent.callback.clone())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh challenge: 256 random bits, hex.
pub fn challenge() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Appends `params` to the callback's own query string, which is kept as it is.
pub fn with_params(callback: &str, params: &[(&str, &str)]) -> Option<Url> {
    let mut url = Url::parse(callback).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    Some(url)
}

/// A refusal by policy: why, and the setting that would allow it (when one would).
struct Refusal {
    reason: String,
    hint: Option<&'static str>,
}

/// Why a request accepted with 202 is refused by policy, if it is.
async fn policy_refusal(v: &Verifier, intent: &Intent) -> Option<Refusal> {
    if intent.mode != IntentMode::Subscribe {
        // Unsubscriptions are never validated; a relay registration names no topic, and its
        // verification goes to the destination's own origin.
        return None;
    }
    let allowed = &v.shared.cfg.allowed_topics;
    if !allowed.is_empty() && !allowed.iter().any(|p| p.covers(&intent.topic)) {
        return Some(Refusal {
            reason: "this hub does not serve that topic".into(),
            hint: Some("subscriptions.allowed_topics lists the topics this hub serves"),
        });
    }
    let topic = Url::parse(&intent.topic).ok()?;
    match v.clients.topic_policy.check_url(&topic).await {
        Err(GuardError::Blocked(reason)) => Some(Refusal {
            reason: format!("the topic is not fetchable: {reason}"),
            hint: Some(TOPIC_HINT),
        }),
        // An unresolvable topic may resolve later; the fetch will tell.
        Err(GuardError::Dns(_)) | Ok(()) => None,
    }
}

async fn run(v: &Verifier, intent: Intent) {
    let callback = intent.callback.clone();
    let topic = intent.topic.clone();
    let mode = intent.mode.as_str();
    let allowed = &v.shared.cfg.allowed_topics;
    let mail_refused = intent.mode == IntentMode::Subscribe
        && !allowed.is_empty()
        && !allowed.iter().any(|p| p.covers(&intent.topic));
    if let (Some(address), true) = (intent.callback.strip_prefix("mailto:"), mail_refused) {
        v.shared.metrics.verification(Verification::Denied);
        tracing::warn!(%topic, %address, "mail subscription refused: subscriptions.allowed_topics");
        v.record(
            &intent,
            "denied",
            None,
            Some("this hub does not serve that topic".into()),
            Some("subscriptions.allowed_topics lists the topics this hub serves"),
        );
    } else if let Some(address) = intent.callback.strip_prefix("mailto:") {
        confirm_by_mail(v, &intent, address).await;
    } else if let Some(refusal) = policy_refusal(v, &intent).await {
        v.shared.metrics.verification(Verification::Denied);
        tracing::warn!(mode, %topic, %callback, reason = %refusal.reason,
            hint = refusal.hint.unwrap_or_default(), "subscription request denied");
        deny(v, &intent, &refusal.reason).await;
        v.record(&intent, "denied", None, Some(refusal.reason), refusal.hint);
    } else {
        match verify(v, &intent).await {
            Ok(()) => {
                if let Err(e) = apply(v, &intent).await {
                    // Keep the intent: it is verified again after a restart.
                    tracing::error!(error = %e, %topic, %callback, "cannot store verified intent");
                    return;
                }
                v.shared.metrics.verification(Verification::Verified);
                tracing::info!(mode, %topic, %callback, "intent verified");
                v.record(&intent, "verified", None, None, None);
            }
            Err(f) => {
                v.shared.metrics.verification(Verification::Failed);
                let hint = matches!(f, Failure::Blocked(_)).then_some(CALLBACK_HINT);
                match hint {
                    Some(hint) => tracing::warn!(mode, %topic, %callback, failure = %f, hint,
                        "verification of intent not sent: the callback is blocked"),
                    None => tracing::info!(mode, %topic, %callback, failure = %f,
                        "verification of intent failed; state unchanged"),
                }
                v.record(
                    &intent,
                    "failed",
                    Some(f.class()),
                    Some(f.to_string()),
                    hint,
                );
            }
        }
    }
    if let Err(e) = v.shared.store.subs.remove_intent(intent.id).await {
        tracing::error!(error = %e, "cannot remove finished intent");
    }
}

/// A mail subscription (or its end) is verified by mail: a confirmation with a signed link
/// goes to the address, and the link makes the change. Nothing is stored until then.
async fn confirm_by_mail(v: &Verifier, intent: &Intent, address: &str) {
    let (topic, mode) = (&intent.topic, intent.mode.as_str());
    let Some(mail) = &v.mail else {
        v.record(
            intent,
            "failed",
            Some("other"),
            Some("mail subscriptions are off".into()),
            Some("smtp.enabled"),
        );
        return;
    };
    let act = if intent.mode.adds() {
        crate::mail::token::Action::Subscribe
    } else {
        crate::mail::token::Action::Unsubscribe
    };
    match mail
        .confirm(topic, address, act, v.shared.clock.now_ms())
        .await
    {
        Ok(()) => {
            tracing::info!(mode, %topic, %address, "confirmation mail sent");
            v.record(intent, "confirmation sent", None, None, None);
        }
        Err(f) => {
            v.shared.metrics.verification(Verification::Failed);
            tracing::warn!(mode, %topic, %address, failure = %f, "confirmation mail not sent");
            v.record(
                intent,
                "failed",
                Some(f.class()),
                Some(f.to_string()),
                Some("smtp.smarthost"),
            );
        }
    }
}

async fn verify(v: &Verifier, intent: &Intent) -> Result<(), Failure> {
    let challenge = challenge();
    let lease = intent.lease_seconds.to_string();
    let mut params = vec![("hub.mode", intent.mode.as_str())];
    if !intent.mode.is_relay() {
        params.push(("hub.topic", intent.topic.as_str()));
    }
    params.push(("hub.challenge", challenge.as_str()));
    if intent.mode.adds() {
        params.push(("hub.lease_seconds", lease.as_str()));
    }
    let url =
        with_params(&intent.callback, &params).ok_or(Failure::Other("bad callback".into()))?;
    v.clients
        .callback_policy
        .check_literal(&url)
        .map_err(|e| Failure::Blocked(e.to_string()))?;
    let resp = v
        .clients
        .callbacks
        .get(url)
        .timeout(v.shared.cfg.verify_timeout)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(Failure::Redirect(status.as_u16()));
    }
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    let body = read_limited(resp, MAX_ANSWER).await?;
    // Exact echo; surrounding white space (a trailing newline) is tolerated.
    if body.trim_ascii() == challenge.as_bytes() {
        Ok(())
    } else {
        Err(Failure::Other("answer does not echo hub.challenge".into()))
    }
}

async fn apply(v: &Verifier, intent: &Intent) -> crate::storage::Result<()> {
    match intent.mode {
        IntentMode::Subscribe | IntentMode::Relay => {
            let now = v.shared.clock.now_ms();
            let sub = Subscription {
                topic: intent.topic.clone(),
                callback: intent.callback.clone(),
                destination: destination_of(&intent.callback),
                secret: intent.secret.clone(),
                lease_seconds: intent.lease_seconds,
                expires_ms: now + intent.lease_seconds * 1000,
                created_ms: now,
            };
            v.shared.store.subs.upsert(sub).await?;
        }
        IntentMode::Unsubscribe | IntentMode::Unrelay => {
            v.shared
                .store
                .subs
                .remove(&intent.topic, &intent.callback)
                .await?;
        }
    }
    v.shared.store.flush().await?;
    if v.shared.cfg.relay.chain {
        v.shared.chain_changed.note(&intent.topic);
    }
    Ok(())
}

/// Tells the subscriber its request was refused (`hub.mode=denied`), where policy lets the hub
/// reach the callback at all.
async fn deny(v: &Verifier, intent: &Intent, reason: &str) {
    tracing::debug!(topic = %intent.topic, callback = %intent.callback, %reason, "sending the denial");
    let params = [
        ("hub.mode", "denied"),
        ("hub.topic", intent.topic.as_str()),
        ("hub.reason", reason),
    ];
    let Some(url) = with_params(&intent.callback, &params) else {
        return;
    };
    if let Err(e) = v.clients.callback_policy.check_literal(&url) {
        tracing::info!(callback = %intent.callback, error = %e, "denial not sent: callback unreachable under policy");
        return;
    }
    match v
        .clients
        .callbacks
        .get(url)
        .timeout(v.shared.cfg.verify_timeout)
        .send()
        .await
    {
        Ok(resp) => tracing::debug!(status = resp.status().as_u16(), "denial sent"),
        Err(e) => {
            tracing::info!(callback = %intent.callback, failure = %classify(&e), "denial not delivered")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_the_callback_query() {
        let u = with_params(
            "http://x/cb?a=1&hub.mode=mine",
            &[("hub.mode", "subscribe")],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://x/cb?a=1&hub.mode=mine&hub.mode=subscribe"
        );
        let u = with_params("http://x/cb", &[("hub.topic", "http://t/?a=b")]).unwrap();
        assert_eq!(
            u.as_str(),
            "http://x/cb?hub.topic=http%3A%2F%2Ft%2F%3Fa%3Db"
        );
    }

    #[test]
    fn challenges_are_long_and_unique() {
        let a = challenge();
        assert_eq!(a.len(), 64);
        assert_ne!(a, challenge());
    }
}
