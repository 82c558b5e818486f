//! The engine: everything that makes outbound calls, on its own tokio runtime.
//!
//! The ingest service persists work and hands it off through [`Intake`] (a bounded channel).
//! The engine's parts, each holding what it needs ([`shared::Shared`] and its own clients,
//! queues and limits): the verifier ([`verify`]) checks intents; the fetcher ([`publish`])
//! fetches and diffs topics and commits events to the log through the committed-event stream
//! ([`stream`]), which stores the event's jobs (one per destination) with it; the planner
//! ([`planner`]) follows that stream and hands the jobs on; the dispatcher ([`dispatch`])
//! delivers them through destination windows and transports ([`transport`]) and removes the
//! jobs of an event together once done ([`completion`]); the retry loop ([`retry`]) and the
//! sweeper ([`sweep`]) do the rest. At start, and after the hand-off channel overflowed, the engine claims pending work
//! from storage ([`claims`]), so a crash loses nothing that was acknowledged.

pub mod bounded_set;
pub mod chain;
pub mod claims;
pub mod client;
pub mod cluster;
pub mod completion;
pub mod deliver;
pub mod delivery_cap;
pub mod dispatch;
pub mod forward;
pub mod health;
pub mod history;
pub mod hosted;
pub mod keyed;
pub mod mirror;
pub mod multicast_rx;
pub mod multicast_tx;
pub mod origin_limit;
pub mod owners;
pub mod peer_stream;
pub mod planner;
pub mod publish;
pub mod relay_batch;
pub mod relay_dispatch;
pub mod relay_register;
pub mod retry;
pub mod shared;
pub mod snapshot;
pub mod stream;
pub mod sweep;
pub mod taker;
mod topic_queue;
pub mod transport;
pub mod upstream;
pub mod verify;
pub mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::storage::{Intent, Ping, Retention, Storage, StorageError, WorkKey};
use client::Clients;
use dispatch::Dispatcher;
use keyed::{Keyed, KeyedQueue};
use shared::Shared;

/// Capacity of the hand-off channel; beyond it work waits in storage for a rescan.
const INTAKE_CAPACITY: usize = 10_000;
/// Items claimed from storage per call.
const CLAIM_PAGE: usize = 1_000;
/// Claimed items of each kind (verifications, pings, jobs) held in memory at most; beyond it
/// work waits in storage, and is claimed as the queues drain.
const MAX_CLAIMED: usize = 20_000;
/// How long tasks get, once cut off, to store where they stopped.
const ABORT_GRACE: Duration = Duration::from_secs(3);

pub enum Work {
    Intent(Intent),
    Ping(Ping),
    /// A fat ping that is not stored: `ack` is answered once its update is durable (its event
    /// flushed), or with the reason it was not committed. Dropped unanswered when the hub stops.
    Fat(Ping, Ack),
}

/// The answer to a [`Work::Fat`] ping.
pub type Ack = tokio::sync::oneshot::Sender<Result<FatOutcome, StorageError>>;

/// What became of a fat ping's content, once durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatOutcome {
    /// Committed: an event (when it changed something), to be delivered.
    Committed,
    /// Not distributed, for this reason (e.g. an XML document with entity declarations).
    Refused(String),
}

/// The intake channel is full: the work was not taken.
#[derive(Debug, thiserror::Error)]
#[error("the engine has {INTAKE_CAPACITY} items waiting")]
pub struct Busy;

impl Keyed for Intent {
    fn key(&self) -> String {
        format!("{}\0{}", self.topic, self.callback)
    }
    fn id(&self) -> u64 {
        self.id
    }
}

impl Keyed for Ping {
    fn key(&self) -> String {
        self.topic.clone()
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// The handlers' side of the hand-off.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Work>,
    overflow: Arc<AtomicBool>,
}

impl Intake {
    /// Never blocks: the work is already durable, so when the channel is full the engine
    /// finds it in storage on its next rescan.
    pub fn hand_off(&self, work: Work) {
        if self.tx.try_send(work).is_err() {
            self.overflow.store(true, Ordering::Relaxed);
        }
    }

    /// Hands off work that is not stored: refused when the channel is full, as nothing would
    /// find it later.
    pub fn hand_off_now(&self, work: Work) -> Result<(), Busy> {
        self.tx.try_send(work).map_err(|_| Busy)
    }

    /// Work was stored but not handed off (its flush failed after the write): the engine
    /// claims it from storage at its next rescan.
    pub fn mark_pending(&self) {
        self.overflow.store(true, Ordering::Relaxed);
    }
}

/// The running engine: its parts and the handles to stop them. Operators' views read it
/// through methods ([`crate::admin::EngineView`]), never through its parts.
pub struct Engine {
    shared: Arc<Shared>,
    dispatcher: Arc<Dispatcher>,
    stream: Arc<stream::EventStream>,
    intents: Arc<KeyedQueue<Intent>>,
    pings: Arc<KeyedQueue<Ping>>,
    fetcher: Arc<publish::Fetcher>,
    verifier: Arc<verify::Verifier>,
    peers: peer_stream::PeerStreams,
    upstreams: Vec<Arc<upstream::Upstream>>,
    /// The stream's multicast sender (`[multicast]`, `send = true`).
    multicast: Option<Arc<multicast_tx::Sender>>,
    forwarder: Arc<forward::Forwarder>,
    registrations: Arc<relay_register::Registrations>,
    chain: Arc<chain::Chain>,
    hosted: Arc<hosted::Hosted>,
    /// Mail out (`[smtp]`), when on.
    mail: Option<Arc<crate::mail::smtp::MailSender>>,
    /// The topic client (SSRF-guarded, bounded redirects): names are looked up with it.
    topic_client: reqwest::Client,
    topic_policy: crate::ssrf::Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot set up TLS for deliveries: {0}")]
    Tls(#[from] rustls::Error),
}

impl Engine {
    /// Starts the engine's tasks on the current runtime and claims pending work.
    pub async fn start(
        cfg: Config,
        store: Storage,
        hub_url: String,
    ) -> Result<(Arc<Engine>, Intake), EngineError> {
        let clients = Clients::build(&cfg)?;
        let tracker = TaskTracker::new();
        let clock = Clock::new();
        let shutdown = CancellationToken::new();
        let health = Arc::new(health::Health::new(clock));
        // The jobs of every event up to the lead are stored (claimed below by `reload`): the
        // planner follows from there.
        let lead = store.log.bounds().await?.lead;
        // The node's name in claims: configured, or the store's id (one node per store). A
        // restarted node lets go of what its previous run held instead of waiting for those
        // leases to end.
        let node = cfg.node_id.clone().unwrap_or_else(|| store.log.hub_id());
        let released = store.claims.release_all(&node).await?;
        if released > 0 {
            tracing::info!(released, "leases of the previous run released");
        }
        let claims = Arc::new(claims::Claims::new(
            store.claims.clone(),
            node,
            clock,
            cfg.cluster.lease,
        ));
        let stream = Arc::new(stream::EventStream::start(
            store.clone(),
            health.clone(),
            lead,
            &tracker,
            shutdown.clone(),
        ));
        let follower = stream.follow(lead);
        let lean = Arc::new(transport::lean::LeanClient::new(
            clients.callback_policy.clone(),
            cfg.connect_timeout,
            cfg.per_destination,
        )?);
        let mail = cfg.smtp.enabled.then(|| {
            Arc::new(crate::mail::smtp::MailSender::new(
                cfg.smtp.clone(),
                cfg.lmtp.clone(),
                &hub_url,
                store.log.hub_key(),
            ))
        });
        let transports =
            transport::Transports::of_hub(&cfg, lean.clone(), &clients.callback_policy, &mail);
        let batches = relay_batch::BatchSender::new(
            lean,
            clients.callback_policy.clone(),
            cfg.delivery_timeout,
            cfg.signature,
            cfg.relay.max_batch,
        );
        let history =
            history::History::new(cfg.admin.history_per_callback, cfg.admin.history_callbacks);
        let shared = Arc::new(Shared {
            cfg,
            store,
            clock,
            hub_url,
            shutdown,
            abort: CancellationToken::new(),
            tracker: tracker.clone(),
            metrics: Default::default(),
            health,
            owners: owners::Owners::new(claims.node().to_owned()),
            claims,
            retry_wake: Notify::new(),
            planned: std::sync::atomic::AtomicU64::new(lead),
            relay_gone: Default::default(),
            chain_changed: Default::default(),
        });
        let dispatcher =
            Dispatcher::new(shared.clone(), stream.clone(), transports, batches, history);
        let verifier = Arc::new(verify::Verifier::new(
            shared.clone(),
            &clients,
            mail.clone(),
        ));
        let fetcher = Arc::new(publish::Fetcher::new(
            shared.clone(),
            &clients,
            stream.clone(),
        ));
        let intents = {
            let verifier = verifier.clone();
            KeyedQueue::new(tracker.clone(), move |_key, batch: Vec<Intent>| {
                let verifier = verifier.clone();
                async move { verifier.run(batch).await }
            })
        };
        let pings = {
            let fetcher = fetcher.clone();
            KeyedQueue::new(tracker.clone(), move |topic, batch: Vec<Ping>| {
                let fetcher = fetcher.clone();
                async move { fetcher.run(topic, batch).await }
            })
        };
        let peers = peer_stream::PeerStreams::new(
            stream.clone(),
            shared.store.log.clone(),
            shared.cfg.relay.heartbeat,
            shared.cfg.relay.max_range,
            shared.shutdown.child_token(),
            tracker.clone(),
        );
        let upstreams: Vec<Arc<upstream::Upstream>> = shared
            .cfg
            .relay
            .upstreams
            .iter()
            .cloned()
            .map(upstream::Upstream::new)
            .collect();
        let follow = Arc::new(upstream::Follow {
            seen: Default::default(),
            shared: shared.clone(),
            stream: stream.clone(),
            clients: clients.clone(),
            pings: pings.clone(),
        });
        for up in &upstreams {
            if up.cfg.multicast.is_some() {
                tracker.spawn(multicast_rx::run(follow.clone(), up.clone()));
            } else {
                tracker.spawn(upstream::run(follow.clone(), up.clone()));
            }
        }
        let multicast = shared.cfg.relay.multicast.send.then(|| {
            let sender = Arc::new(multicast_tx::Sender::default());
            tracker.spawn(multicast_tx::run(
                shared.clone(),
                stream.clone(),
                sender.clone(),
            ));
            sender
        });
        let forwarder = Arc::new(forward::Forwarder::new(shared.clone(), stream.clone()));
        let registrations = Arc::new(relay_register::Registrations::new(
            &shared.cfg.relay.register,
        ));
        relay_register::start(&shared, &clients, &registrations);
        let chain = Arc::new(chain::Chain::new(
            shared.clone(),
            stream.clone(),
            clients.clone(),
        ));
        tracker.spawn(chain::run(chain.clone()));
        let hosted = Arc::new(hosted::Hosted::new(shared.clone(), stream.clone()));
        if shared.cfg.nntp.enabled {
            tracker.spawn(mirror::run(shared.clone(), stream.clone()));
        }
        let engine = Arc::new(Engine {
            mail,
            hosted,
            topic_client: clients.topics.clone(),
            topic_policy: clients.topic_policy.clone(),
            multicast,
            chain,
            forwarder,
            registrations,
            upstreams,
            peers,
            shared: shared.clone(),
            dispatcher: dispatcher.clone(),
            stream,
            intents,
            pings,
            fetcher,
            verifier,
        });

        let (tx, rx) = mpsc::channel(INTAKE_CAPACITY);
        // Work left in storage by a full queue is claimed by the intake loop as queues drain.
        let overflow = Arc::new(AtomicBool::new(!engine.reload().await?));
        tracker.spawn(intake_loop(engine.clone(), rx, overflow.clone()));
        tracker.spawn(planner::run(dispatcher.clone(), follower));
        tracker.spawn(
            shared
                .claims
                .clone()
                .renew_until(shared.health.clone(), shared.shutdown.clone()),
        );
        tracker.spawn(completion::run(
            shared.clone(),
            dispatcher.completions().clone(),
        ));
        tracker.spawn(retry::run(dispatcher));
        tracker.spawn(cluster::run(engine.clone(), overflow.clone()));
        tracker.spawn(sweep::run(shared));
        Ok((engine, Intake { tx, overflow }))
    }

    /// The last verifications for a callback, newest first.
    pub fn recent_verifications(&self, callback: &str) -> Vec<history::VerificationRecord> {
        self.verifier.recent_for_callback(callback)
    }

    /// The last verifications for subscriptions to a topic, newest first.
    pub fn recent_topic_verifications(&self, topic: &str) -> Vec<history::VerificationRecord> {
        self.verifier.recent_for_topic(topic)
    }

    fn submit(&self, work: Work) {
        match work {
            Work::Intent(i) => {
                self.verifier.note(&i);
                self.intents.submit(i);
            }
            Work::Ping(p) => self.pings.submit(p),
            Work::Fat(p, ack) => {
                self.fetcher.expect(p.id, ack);
                self.pings.submit(p);
            }
        }
    }

    /// Claims pending work nobody holds from storage, a page at a time, while each queue
    /// holds fewer than [`MAX_CLAIMED`] items: intents, pings, delivery jobs (due retries are
    /// claimed by the retry loop). `true` when everything claimable was claimed; `false` when a
    /// queue was full and work was left in storage for a later call.
    async fn reload(&self) -> Result<bool, StorageError> {
        let store = &self.shared.store.claims;
        let claims = &self.shared.claims;
        let intents = claims::claim_pages(
            claims,
            || self.intents.pending(),
            |c| async move { store.claim_intents(&c, CLAIM_PAGE).await },
            |i| WorkKey::Intent(i.id),
            |i| self.submit(Work::Intent(i)),
        );
        let pings = claims::claim_pages(
            claims,
            || self.pings.pending(),
            |c| async move { store.claim_pings(&c, CLAIM_PAGE).await },
            |p| WorkKey::Ping(p.id),
            |p| self.submit(Work::Ping(p)),
        );
        // Jobs of events the planner has not reached are its to hand out.
        let planned = self.shared.planned.load(Ordering::Relaxed);
        let jobs = claims::claim_pages(
            claims,
            || self.dispatcher.queued_jobs(),
            |c| async move { store.claim_jobs(&c, planned, CLAIM_PAGE).await },
            WorkKey::job,
            |j| self.dispatcher.enqueue(j),
        );
        Ok(intents.await? & pings.await? & jobs.await?)
    }

    /// Takes batches as another hub's relay.
    pub fn forwarder(&self) -> &Arc<forward::Forwarder> {
        &self.forwarder
    }

    /// Hosted topics' writes.
    pub fn hosted(&self) -> &Arc<hosted::Hosted> {
        &self.hosted
    }

    /// Mail out, when `[smtp]` is on.
    pub fn mail(&self) -> Option<&Arc<crate::mail::smtp::MailSender>> {
        self.mail.as_ref()
    }

    /// The client of outbound calls made for operators (name lookups), guarded like topic
    /// fetches.
    pub fn topic_client(&self) -> &reqwest::Client {
        &self.topic_client
    }

    /// The address policy of topic fetches (for the literal addresses the resolver never sees).
    pub fn topic_policy(&self) -> &crate::ssrf::Policy {
        &self.topic_policy
    }

    /// Hub chaining: upstream subscriptions and what their hubs push.
    pub fn chain(&self) -> &Arc<chain::Chain> {
        &self.chain
    }

    /// This hub's registrations as a relay (`[[relay.register]]`).
    pub fn registrations(&self) -> &Arc<relay_register::Registrations> {
        &self.registrations
    }

    /// The streams served to peer hubs.
    pub fn peer_streams(&self) -> &peer_stream::PeerStreams {
        &self.peers
    }

    /// The peers reading this hub's stream and the upstreams it follows.
    pub async fn relay_view(&self) -> crate::relay::view::RelayView {
        let mut view = self.relay_counts();
        view.relays = self.relays().await;
        view.chained = self
            .chain
            .views(crate::relay::view::RELAYS_SHOWN)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "upstream subscriptions could not be read");
                Vec::new()
            });
        view
    }

    /// [`Engine::relay_view`] without the lists read from storage (relays, chained topics):
    /// what `/metrics` renders, at no storage cost per scrape.
    pub fn relay_counts(&self) -> crate::relay::view::RelayView {
        let counts = self.peers.metrics.snapshot();
        let peers = self
            .shared
            .cfg
            .relay
            .peers
            .iter()
            .map(|p| crate::relay::view::PeerView {
                name: p.name.clone(),
                topics: p.topics.clone(),
                counts: counts
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|(_, c)| *c)
                    .unwrap_or_default(),
            })
            .collect();
        crate::relay::view::RelayView {
            peers,
            upstreams: self.upstreams.iter().map(|u| u.status()).collect(),
            relays: Vec::new(),
            registrations: self.registrations.status(),
            chained: Vec::new(),
            multicast: self.multicast.as_ref().map(|m| m.counts()),
        }
    }

    /// Destinations with a registered relay (a storage failure shows none, and is logged).
    async fn relays(&self) -> Vec<crate::relay::view::RelayEntry> {
        let page = self
            .shared
            .store
            .subs
            .scan(
                Some(crate::storage::RELAY_TOPIC),
                None,
                crate::relay::view::RELAYS_SHOWN,
            )
            .await;
        let relays = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "registered relays could not be read");
                return Vec::new();
            }
        };
        relays
            .into_iter()
            .map(|r| {
                let view = self.dispatcher.view_of(&r.destination);
                let batches = view.as_ref().map(|v| v.batches).unwrap_or_default();
                let error = view.and_then(|v| v.last_error);
                crate::relay::view::RelayEntry {
                    batches,
                    last_error: error.as_ref().map(|e| e.error.clone()),
                    last_error_ms: error.map(|e| e.at_ms),
                    destination: r.destination,
                    relay: r.callback,
                    expires_ms: r.expires_ms,
                }
            })
            .collect()
    }

    /// The store the engine works on.
    /// This node's name in claims and in the cluster's list.
    pub fn node_id(&self) -> &str {
        self.shared.claims.node()
    }

    pub fn store(&self) -> &Storage {
        &self.shared.store
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// Storage failures and their counts.
    pub fn health(&self) -> &Arc<health::Health> {
        &self.shared.health
    }

    pub fn retention(&self) -> Retention {
        self.shared.cfg.retention
    }

    /// The destination servers, their windows and queues.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Wakes the retry loop (a retry was stored behind its back, e.g. a replay).
    pub fn wake_retries(&self) {
        self.shared.retry_wake.notify_one();
    }

    /// Whether the hub has started stopping.
    pub fn is_stopping(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// One housekeeping pass now (lease expiry, retention), for operators and tests.
    pub async fn sweep_now(&self) -> Result<(), StorageError> {
        sweep::sweep_once(&self.shared, &[]).await.map(|_| ())
    }

    /// Where the event log stands, as far as it is durable: an event appended but not yet
    /// flushed is not shown (a crash could give its number to another event).
    pub async fn log_bounds(&self) -> Result<crate::storage::LogBounds, StorageError> {
        let mut b = self.shared.store.log.bounds().await?;
        let durable = self.stream.lead();
        if b.lead > durable {
            b.lead = durable;
            b.trail = b.trail.min(durable + 1);
        }
        Ok(b)
    }

    /// The gauges `/metrics` and the status page show: queued jobs, stored retries,
    /// destinations by state, the event log, storage failures.
    pub async fn gauges(&self) -> Result<crate::metrics::Gauges, StorageError> {
        Ok(crate::metrics::Gauges {
            queued_jobs: self.dispatcher.queued_jobs() as u64,
            retries: self.shared.store.delivery.count_retries().await?,
            destinations: self.dispatcher.destination_states(),
            log: self.log_bounds().await?,
            storage_errors: self.shared.health.errors(),
        })
    }

    /// Stops taking work and waits for the tasks to end.
    pub async fn stopped(&self) {
        let tracker = &self.shared.tracker;
        tracker.close();
        tracker.wait().await;
    }

    /// Drains: nothing new starts, work in flight gets `deadline` to finish, then it is cut off
    /// (and stays stored, to be resumed at the next start). Waits at most `deadline` plus a
    /// short grace for the tasks to end; whatever is left is dropped with the runtime.
    pub async fn drain(&self, deadline: Duration) {
        self.shared.shutdown.cancel();
        if tokio::time::timeout(deadline, self.stopped()).await.is_ok() {
            return;
        }
        tracing::warn!(
            ?deadline,
            "shutdown deadline passed; cutting off deliveries in flight"
        );
        self.shared.abort.cancel();
        if tokio::time::timeout(ABORT_GRACE, self.stopped())
            .await
            .is_err()
        {
            tracing::warn!("engine tasks still running after the deadline; leaving them");
        }
    }
}

async fn intake_loop(engine: Arc<Engine>, mut rx: mpsc::Receiver<Work>, overflow: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stop = engine.shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            work = rx.recv() => match work {
                Some(w) => engine.submit(w),
                None => return,
            },
            _ = tick.tick() => {
                if overflow.swap(false, Ordering::Relaxed) {
                    match engine.reload().await {
                        Ok(all) => overflow.fetch_or(!all, Ordering::Relaxed),
                        Err(e) => {
                            engine.shared.health.failed("rescan of pending work", &e);
                            overflow.store(true, Ordering::Relaxed);
                            true
                        }
                    };
                }
            }
        }
    }
}
