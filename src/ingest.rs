//! The ingest service: every door into the hub (the HTTP hub endpoint today; mail and news
//! doors next) validates its own protocol, then calls this to make the request durable and
//! hand it to the engine. Nothing here knows HTTP, and nothing here makes an outbound call.
//!
//! Acknowledged means durable: each call returns once its records are flushed (group commit:
//! concurrent calls share one flush). A storage failure is returned as [`IngestError`], which
//! a door answers with "try again later" (HTTP `503` with `Retry-After`).

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Intake;
use crate::engine::Work;
use crate::engine::health::Health;
use crate::storage::{FatContent, Intent, IntentMode, Ping, Storage, StorageError};
use crate::urls::HttpUrl;
use crate::websub::SubRequest;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("storage unavailable; try again shortly")]
    Storage(#[from] StorageError),
}

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
}

impl Ingest {
    pub fn new(
        cfg: Arc<Config>,
        store: Storage,
        intake: Intake,
        clock: Clock,
        health: Arc<Health>,
    ) -> Ingest {
        Ingest {
            cfg,
            store,
            intake,
            clock,
            health,
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
            IntentMode::Unsubscribe => 0,
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

    /// A light ping: the engine fetches each topic that has subscribers.
    pub async fn publish(&self, topics: &[HttpUrl]) -> Result<Accepted, IngestError> {
        let now = self.clock.now_ms();
        let mut pings = Vec::new();
        for topic in topics {
            // A topic nobody subscribed to costs one read and nothing more.
            let n = self.store.subs.count_for_topic(topic.as_str()).await;
            if self.reported("subscriber count", n)? == 0 {
                continue;
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

    /// Content pushed for one topic by a publisher the door has authenticated.
    pub async fn publish_content(
        &self,
        topic: &HttpUrl,
        content: FatContent,
    ) -> Result<Accepted, IngestError> {
        let id = self.reported("id allocation", self.store.next_id().await)?;
        let ping = Ping {
            id,
            topic: topic.to_string(),
            fat: Some(content),
            received_ms: self.clock.now_ms(),
        };
        self.store_pings(vec![ping]).await
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
