//! The engine: everything that makes outbound calls, on its own tokio runtime.
//!
//! Handlers persist work and hand it off through [`Intake`] (a bounded channel). The engine
//! verifies intents ([`verify`]), fetches and diffs topics ([`publish`]), plans one job per
//! (event, destination) and delivers them ([`dispatch`], [`deliver`]), retries failures
//! ([`retry`]) and sweeps expired leases and old events ([`sweep`]). At start it reloads all
//! pending work from storage, so a crash loses nothing that was acknowledged.

pub mod claims;
pub mod client;
pub mod deliver;
pub mod dispatch;
pub mod health;
pub mod history;
pub mod keyed;
pub mod planner;
pub mod publish;
pub mod retry;
pub mod stream;
pub mod sweep;
pub mod transport;
pub mod verify;
pub mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::storage::{Intent, PLANNER, Ping, Storage, StorageError, WorkKey};
use client::Clients;
use keyed::{Keyed, KeyedQueue};

/// Capacity of the hand-off channel; beyond it work waits in storage for a rescan.
const INTAKE_CAPACITY: usize = 10_000;
/// Concurrent topic fetches and verifications.
const FETCH_CONCURRENCY: usize = 32;
const VERIFY_CONCURRENCY: usize = 64;
/// Items claimed from storage per call.
const CLAIM_PAGE: usize = 1_000;
/// How long tasks get, once cut off, to store where they stopped.
const ABORT_GRACE: Duration = Duration::from_secs(3);

pub enum Work {
    Intent(Intent),
    Ping(Ping),
}

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
}

pub struct Engine {
    pub cfg: Config,
    pub store: Storage,
    pub clients: Clients,
    /// How deliveries reach endpoints, by scheme.
    pub transports: transport::Transports,
    pub clock: Clock,
    /// The hub URL sent as `rel="hub"`.
    pub hub_url: String,
    /// Cancelled when the hub starts stopping: nothing new is started.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline has passed: requests in flight are cut off.
    pub abort: CancellationToken,
    pub tracker: TaskTracker,
    /// Recent deliveries per callback, for operators.
    pub history: history::History,
    pub dispatcher: dispatch::Dispatcher,
    pub retry_wake: Notify,
    pub metrics: crate::metrics::Metrics,
    /// Storage failures: counted, reported by `/readyz`, retried with backoff.
    pub health: Arc<health::Health>,
    /// Where committed events go, and where the planner (and later relays) follow them.
    pub stream: stream::EventStream,
    /// The work this node has claimed.
    pub claims: Arc<claims::Claims>,
    fetch_permits: Semaphore,
    verify_permits: Semaphore,
    intents: std::sync::OnceLock<Arc<KeyedQueue<Intent>>>,
    pings: std::sync::OnceLock<Arc<KeyedQueue<Ping>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Engine {
    /// Starts the engine's tasks on the current runtime and reloads pending work.
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
        let lead = store.log.bounds().await?.lead;
        // A new store's planner starts at the lead (nothing before it needs planning); from
        // then on its cursor moves only with the jobs it stores.
        let planned = match store.log.cursor(PLANNER).await? {
            Some(c) => c,
            None => {
                store.log.put_cursor(PLANNER, lead).await?;
                store.flush().await?;
                lead
            }
        };
        let stream = stream::EventStream::start(
            store.clone(),
            health.clone(),
            lead,
            &tracker,
            shutdown.clone(),
        );
        let follower = stream.follow(planned);
        // One node per embedded store, so the store's id names the node; a restarted node lets
        // go of what its previous run held instead of waiting for those leases to end.
        let node = store.log.hub_id();
        let released = store.claims.release_all(&node).await?;
        if released > 0 {
            tracing::info!(released, "leases of the previous run released");
        }
        let claims = Arc::new(claims::Claims::new(store.claims.clone(), node, clock));
        let history =
            history::History::new(cfg.admin.history_per_callback, cfg.admin.history_callbacks);
        let transports =
            transport::Transports::new(vec![Arc::new(transport::http::HttpTransport::new(
                clients.callbacks.clone(),
                clients.callback_policy.clone(),
                cfg.delivery_timeout,
                cfg.signature,
            ))]);
        let engine = Arc::new(Engine {
            transports,
            history,
            dispatcher: dispatch::Dispatcher::new(&cfg),
            cfg,
            store,
            clients,
            clock,
            hub_url,
            shutdown,
            health,
            stream,
            claims,
            abort: CancellationToken::new(),
            tracker: tracker.clone(),
            retry_wake: Notify::new(),
            metrics: Default::default(),
            fetch_permits: Semaphore::new(FETCH_CONCURRENCY),
            verify_permits: Semaphore::new(VERIFY_CONCURRENCY),
            intents: Default::default(),
            pings: Default::default(),
        });
        // The queues live inside the engine, so their workers hold it weakly: a strong
        // reference would be a cycle, and the store (and its file lock) would outlive `stop`.
        let weak = Arc::downgrade(&engine);
        let intents = KeyedQueue::new(tracker.clone(), move |_key, batch: Vec<Intent>| {
            let e = weak.upgrade();
            async move {
                let Some(e) = e else { return };
                let _permit = e.verify_permits.acquire().await;
                for intent in batch {
                    let key = WorkKey::Intent(intent.id);
                    if !e.take(vec![key.clone()]).await.contains(&true) {
                        continue; // another node has it
                    }
                    verify::run(&e, intent).await;
                    e.release(vec![key]).await;
                }
            }
        });
        let weak = Arc::downgrade(&engine);
        let pings = KeyedQueue::new(tracker.clone(), move |topic, batch: Vec<Ping>| {
            let e = weak.upgrade();
            async move {
                let Some(e) = e else { return };
                let _permit = e.fetch_permits.acquire().await;
                let keys: Vec<WorkKey> = batch.iter().map(|p| WorkKey::Ping(p.id)).collect();
                let got = e.take(keys.clone()).await;
                let mine: Vec<Ping> = batch
                    .into_iter()
                    .zip(&got)
                    .filter_map(|(p, ok)| ok.then_some(p))
                    .collect();
                if !mine.is_empty() {
                    publish::run(&e, topic, mine).await;
                }
                let taken = keys
                    .into_iter()
                    .zip(got)
                    .filter_map(|(k, ok)| ok.then_some(k));
                e.release(taken.collect()).await;
            }
        });
        let _ = engine.intents.set(intents);
        let _ = engine.pings.set(pings);

        let (tx, rx) = mpsc::channel(INTAKE_CAPACITY);
        let overflow = Arc::new(AtomicBool::new(false));
        engine.reload().await?;
        tracker.spawn(intake_loop(engine.clone(), rx, overflow.clone()));
        tracker.spawn(planner::run(engine.clone(), follower));
        tracker.spawn(
            engine
                .claims
                .clone()
                .renew_until(engine.health.clone(), engine.shutdown.clone()),
        );
        tracker.spawn(retry::run(engine.clone()));
        tracker.spawn(sweep::run(engine.clone()));
        Ok((engine, Intake { tx, overflow }))
    }

    fn submit(&self, work: Work) {
        match work {
            Work::Intent(i) => self.intents.get().expect("set at start").submit(i),
            Work::Ping(p) => self.pings.get().expect("set at start").submit(p),
        }
    }

    /// Claims pending work nobody holds from storage, a page at a time: intents, pings,
    /// delivery jobs (due retries are claimed by the retry loop).
    async fn reload(self: &Arc<Self>) -> Result<(), StorageError> {
        let store = &self.store.claims;
        loop {
            let page = store
                .claim_intents(&self.claims.claim(), CLAIM_PAGE)
                .await?;
            self.claims.hold(page.iter().map(|i| WorkKey::Intent(i.id)));
            let done = page.len() < CLAIM_PAGE;
            for intent in page {
                self.submit(Work::Intent(intent));
            }
            if done {
                break;
            }
        }
        loop {
            let page = store.claim_pings(&self.claims.claim(), CLAIM_PAGE).await?;
            self.claims.hold(page.iter().map(|p| WorkKey::Ping(p.id)));
            let done = page.len() < CLAIM_PAGE;
            for ping in page {
                self.submit(Work::Ping(ping));
            }
            if done {
                break;
            }
        }
        loop {
            let page = store.claim_jobs(&self.claims.claim(), CLAIM_PAGE).await?;
            self.claims.hold(page.iter().map(WorkKey::job));
            let done = page.len() < CLAIM_PAGE;
            for job in page {
                self.dispatcher.enqueue(self, job);
            }
            if done {
                break;
            }
        }
        Ok(())
    }

    /// Acquires work for this node (see [`claims::Claims::acquire`]); a failing store is
    /// retried with backoff. All `false` when the hub stops first (the work stays stored).
    pub async fn take(&self, keys: Vec<WorkKey>) -> Vec<bool> {
        let n = keys.len();
        self.health
            .persist("work claim", &self.shutdown, || {
                self.claims.acquire(keys.clone())
            })
            .await
            .unwrap_or_else(|| vec![false; n])
    }

    /// Releases work this node is done with. A failure is reported, not retried: the lease
    /// ends by itself.
    pub async fn release(&self, keys: Vec<WorkKey>) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self.claims.release(keys).await {
            self.health.failed("work release", &e);
        }
    }

    /// The gauges `/metrics` and the status page show: queued jobs, stored retries,
    /// destinations by state.
    pub async fn gauges(&self) -> Result<crate::metrics::Gauges, StorageError> {
        Ok(crate::metrics::Gauges {
            queued_jobs: self.dispatcher.queued_jobs() as u64,
            retries: self.store.delivery.count_retries().await?,
            destinations: self.dispatcher.destination_states(),
            log: self.store.log.bounds().await?,
            storage_errors: self.health.errors(),
        })
    }

    /// Stops taking work and waits for the tasks to end.
    pub async fn stopped(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Drains: nothing new starts, work in flight gets `deadline` to finish, then it is cut off
    /// (and stays stored, to be resumed at the next start). Waits at most `deadline` plus a
    /// short grace for the tasks to end; whatever is left is dropped with the runtime.
    pub async fn drain(&self, deadline: Duration) {
        self.shutdown.cancel();
        if tokio::time::timeout(deadline, self.stopped()).await.is_ok() {
            return;
        }
        tracing::warn!(
            ?deadline,
            "shutdown deadline passed; cutting off deliveries in flight"
        );
        self.abort.cancel();
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
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            work = rx.recv() => match work {
                Some(w) => engine.submit(w),
                None => return,
            },
            _ = tick.tick() => {
                if overflow.swap(false, Ordering::Relaxed)
                    && let Err(e) = engine.reload().await
                {
                    tracing::error!(error = %e, "rescan of pending work failed");
                    overflow.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}
