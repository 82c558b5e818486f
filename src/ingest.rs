//! The ingest service: every door into the hub (the HTTP hub endpoint today; mail and news
//! doors next) validates its own protocol, then calls this to make the request durable and
//! hand it to the engine. Nothing here knows HTTP, and nothing here makes an outbound call.
//!
//! Acknowledged means durable: each call returns once its records are flushed (group commit:
//! concurrent calls share one flush). A storage failure is returned as [`IngestError`], which
//! a door answers with "try again later" (HTTP `503` with `Retry-After`).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Intake;
use crate::engine::chain::{Chain, ChainError, Pushed};
use crate::engine::forward::{ForwardError, Forwarder, TakenBatch};
use crate::engine::health::Health;
use crate::engine::hosted::Hosted;
use crate::engine::{Busy, Engine, FatOutcome, Work, stream};
use crate::storage::{FatContent, Intent, IntentMode, Ping, Storage, StorageError};
use crate::urls::HttpUrl;
use crate::websub::SubRequest;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("storage unavailable; try again shortly")]
    Storage(#[from] StorageError),
    #[error("the hub has too much work waiting; try again shortly")]
    Busy(#[from] Busy),
    #[error("the hub is stopping; try again shortly")]
    Stopping,
    #[error("the update was not committed within {}s; try again", FAT_PING_WAIT.as_secs())]
    NotCommitted,
    /// The content itself is refused: sending it again will not help.
    #[error("the content will not be distributed: {0}")]
    Refused(String),
}

/// Longest a fat ping's publisher waits for its update to be durable.
const FAT_PING_WAIT: Duration = Duration::from_secs(30);

/// What a publish notification led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Pings stored (topics without subscribers cost nothing and store nothing).
    pub pings: usize,
}

#[derive(Clone)]
pub struct Ingest {
    cfg: Arc<Config>,
    store: Storage,
    intake: Intake,
    clock: Clock,
    health: Arc<Health>,
    forwarder: Arc<Forwarder>,
    chain: Arc<Chain>,
    hosted: Arc<Hosted>,
    /// Mail out, when on (bounce tags of confirmed mail subscribers).
    mail: Option<Arc<crate::mail::smtp::MailSender>>,
}

impl Ingest {
    /// The ingest service of `engine`: what is accepted goes to its intake, its parts (the
    /// forwarder, hub chaining, hosted topics) take their own requests.
    pub fn new(cfg: Arc<Config>, store: Storage, intake: Intake, engine: &Engine) -> Ingest {
        Ingest {
            cfg,
            store,
            intake,
            clock: engine.clock(),
            health: engine.health().clone(),
            forwarder: engine.forwarder().clone(),
            chain: engine.chain().clone(),
            hosted: engine.hosted().clone(),
            mail: engine.mail().cloned(),
        }
    }

    /// Hosted topics' writes (posts, edits, deletions; mail into a topic): each returns once
    /// the entry and its fan-out are durable.
    pub fn hosted(&self) -> &Hosted {
        &self.hosted
    }

    /// An upstream hub verifying this hub's subscription of `topic` (hub chaining): whether
    /// to echo the challenge.
    pub async fn chain_verification(
        &self,
        topic: &str,
        mode: &str,
        lease_seconds: Option<u64>,
    ) -> Result<bool, IngestError> {
        let r = self.chain.verification(topic, mode, lease_seconds).await;
        self.reported("upstream subscription", r)
    }

    /// Content an upstream hub pushed for `topic`: durable when this returns `Taken`.
    pub async fn chain_push(
        &self,
        topic: &str,
        content_type: &str,
        signature: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Pushed, IngestError> {
        match self.chain.push(topic, content_type, signature, body).await {
            Ok(p) => Ok(p),
            Err(ChainError::Stopping) => Err(IngestError::Stopping),
            Err(ChainError::Storage(e)) => {
                self.health.failed("upstream push", &e);
                Err(e.into())
            }
        }
    }

    /// A batch taken as another hub's relay: durable (its content and a delivery record per
    /// callback) when this returns; the callbacks gone since that hub's last batch.
    pub async fn forward(&self, batch: TakenBatch) -> Result<Vec<String>, IngestError> {
        match self.forwarder.take(batch).await {
            Ok(gone) => {
                self.health.succeeded("relay batch");
                Ok(gone)
            }
            Err(ForwardError::Stopping) => Err(IngestError::Stopping),
            Err(ForwardError::Storage(e)) => {
                self.health.failed("relay batch", &e);
                Err(e.into())
            }
        }
    }

    /// Records the outcome for `/readyz` and the metrics: a failure before it goes back to
    /// the door, a success because it ends a failure reported earlier.
    fn reported<T>(
        &self,
        what: &'static str,
        r: Result<T, StorageError>,
    ) -> Result<T, IngestError> {
        match r {
            Ok(v) => {
                self.health.succeeded(what);
                Ok(v)
            }
            Err(e) => {
                self.health.failed(what, &e);
                Err(e.into())
            }
        }
    }

    /// Flushes what was just written. When that fails the client is told to try again, and
    /// the engine is told to look in storage: the records may be there (and are then done).
    async fn flushed(&self) -> Result<(), IngestError> {
        let flushed = self.store.flush().await;
        if flushed.is_err() {
            self.intake.mark_pending();
        }
        self.reported("flush of accepted work", flushed)
    }

    /// A (un)subscription request, to be verified by the engine. The lease asked for is
    /// clamped to the configured bounds.
    pub async fn subscription(&self, mode: IntentMode, s: SubRequest) -> Result<(), IngestError> {
        let lease_seconds = match mode {
            IntentMode::Subscribe => self.cfg.clamp_lease(s.lease_seconds),
            _ => 0,
        };
        let id = self.reported("id allocation", self.store.next_id().await)?;
        let intent = Intent {
            id,
            mode,
            topic: s.topic.to_string(),
            callback: s.callback.to_string(),
            secret: s.secret,
            lease_seconds,
            created_ms: self.clock.now_ms(),
        };
        let put = self.store.subs.put_intent(intent.clone()).await;
        self.reported("pending verification", put)?;
        self.flushed().await?;
        self.intake.hand_off(Work::Intent(intent));
        Ok(())
    }

    /// A mail subscription (or its end), to be confirmed by mail by the engine: `false` when
    /// mail subscriptions are off.
    pub async fn mail_request(&self, r: crate::websub::MailRequest) -> Result<bool, IngestError> {
        if !self.cfg.smtp.enabled {
            return Ok(false);
        }
        let mode = if r.subscribe {
            IntentMode::Subscribe
        } else {
            IntentMode::Unsubscribe
        };
        let id = self.reported("id allocation", self.store.next_id().await)?;
        let intent = Intent {
            id,
            mode,
            topic: r.topic.to_string(),
            callback: format!("mailto:{}", r.address),
            secret: None,
            lease_seconds: 0,
            created_ms: self.clock.now_ms(),
        };
        let put = self.store.subs.put_intent(intent.clone()).await;
        self.reported("pending verification", put)?;
        self.flushed().await?;
        self.intake.hand_off(Work::Intent(intent));
        Ok(true)
    }

    /// A mail subscription confirmed (the link in its confirmation mail): stored, or removed,
    /// and flushed. Mail subscriptions have no lease: they last until unsubscribed or bounced.
    pub async fn mail_confirmed(
        &self,
        claim: &crate::mail::token::Claim,
    ) -> Result<bool, IngestError> {
        let callback = format!("mailto:{}", claim.address);
        let changed = match claim.act {
            crate::mail::token::Action::Subscribe => {
                let now = self.clock.now_ms();
                let sub = crate::storage::Subscription {
                    topic: claim.topic.clone(),
                    destination: crate::storage::destination_of(&callback),
                    callback,
                    secret: None,
                    lease_seconds: 0,
                    expires_ms: u64::MAX,
                    created_ms: now,
                };
                let put = self.store.subs.upsert(sub).await;
                self.reported("mail subscription", put)?;
                if let Some(mail) = &self.mail {
                    let tag = mail.signer.bounce_tag(&claim.topic, &claim.address);
                    let put = self
                        .store
                        .hosted
                        .put_bounce_tag(&tag, &claim.topic, &claim.address)
                        .await;
                    self.reported("mail subscription", put)?;
                }
                true
            }
            crate::mail::token::Action::Unsubscribe => {
                let removed = self.store.subs.remove(&claim.topic, &callback).await;
                self.reported("mail subscription", removed)?
            }
        };
        self.flushed().await?;
        Ok(changed)
    }

    /// A relay registration (or its end), to be verified by the engine like a subscription.
    pub async fn relay(
        &self,
        mode: IntentMode,
        r: crate::websub::RelayRequest,
    ) -> Result<(), IngestError> {
        let lease_seconds = match mode {
            IntentMode::Relay => self.cfg.clamp_lease(r.lease_seconds),
            _ => 0,
        };
        let id = self.reported("id allocation", self.store.next_id().await)?;
        let intent = Intent {
            id,
            mode,
            topic: crate::storage::RELAY_TOPIC.to_owned(),
            callback: r.callback.to_string(),
            secret: r.secret,
            lease_seconds,
            created_ms: self.clock.now_ms(),
        };
        let put = self.store.subs.put_intent(intent.clone()).await;
        self.reported("pending verification", put)?;
        self.flushed().await?;
        self.intake.hand_off(Work::Intent(intent));
        Ok(())
    }

    /// A light ping: the engine fetches each topic that has subscribers.
    pub async fn publish(&self, topics: &[HttpUrl]) -> Result<Accepted, IngestError> {
        let now = self.clock.now_ms();
        let mut pings = Vec::new();
        for topic in topics {
            // A topic nobody subscribed to costs one read and nothing more, unless a peer hub
            // follows it (its subscribers may want it).
            if !self.cfg.relay.followed(topic.as_str()) {
                let n = self.store.subs.count_for_topic(topic.as_str()).await;
                if self.reported("subscriber count", n)? == 0 {
                    continue;
                }
            }
            let id = self.reported("id allocation", self.store.next_id().await)?;
            pings.push(Ping {
                id,
                topic: topic.to_string(),
                fat: None,
                received_ms: now,
            });
        }
        self.store_pings(pings).await
    }

    /// Content pushed for one topic by a publisher the door has authenticated. It is not
    /// stored as a ping: the engine commits it (topic state and event, one group commit with
    /// whatever else is committing), and the call returns once that is durable. A crash before
    /// then leaves the publisher unanswered, so it sends again; nothing acknowledged is lost.
    /// An update committed after its publisher stopped waiting (the store was failing for
    /// longer than [`FAT_PING_WAIT`], or the hub stopped) may arrive twice if it is sent again.
    pub async fn publish_content(
        &self,
        topic: &HttpUrl,
        content: FatContent,
    ) -> Result<Accepted, IngestError> {
        // While the log refuses appends nothing new could be committed: say so now rather
        // than keep the publisher waiting.
        for what in [stream::APPEND, stream::FLUSH] {
            if self.health.is_failing(what) {
                let why = format!("{what} is failing");
                return Err(StorageError::Transient(why).into());
            }
        }
        let id = self.reported("id allocation", self.store.next_id().await)?;
        let ping = Ping {
            id,
            topic: topic.to_string(),
            fat: Some(content),
            received_ms: self.clock.now_ms(),
        };
        let (ack, answer) = tokio::sync::oneshot::channel();
        self.intake.hand_off_now(Work::Fat(ping, ack))?;
        match tokio::time::timeout(FAT_PING_WAIT, answer).await {
            Ok(Ok(Ok(FatOutcome::Committed))) => Ok(Accepted { pings: 1 }),
            Ok(Ok(Ok(FatOutcome::Refused(why)))) => Err(IngestError::Refused(why)),
            Ok(Ok(Err(e))) => {
                self.health.failed("fat ping commit", &e);
                Err(e.into())
            }
            Ok(Err(_)) => Err(IngestError::Stopping),
            Err(_) => Err(IngestError::NotCommitted),
        }
    }

    async fn store_pings(&self, pings: Vec<Ping>) -> Result<Accepted, IngestError> {
        let accepted = Accepted { pings: pings.len() };
        if pings.is_empty() {
            return Ok(accepted);
        }
        let put = self.store.publish.put_pings(pings.clone()).await;
        self.reported("accepted ping", put)?;
        self.flushed().await?;
        for p in pings {
            self.intake.hand_off(Work::Ping(p));
        }
        Ok(accepted)
    }
}
