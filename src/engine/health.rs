//! Storage failures are never silent: each one is counted (by class, for `/metrics`), logged,
//! and remembered until a later write succeeds, so `/readyz` answers 503 while the store fails.
//! [`Health::persist`] is how the engine waits: it retries a storage call with backoff.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::storage::StorageError;

/// First and longest pause between two attempts of a failing storage call.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A storage call that failed and has not succeeded since.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failing {
    pub what: &'static str,
    pub class: &'static str,
    /// The latest error.
    pub error: String,
    /// When it first failed, and most recently.
    pub since_ms: u64,
    pub last_ms: u64,
}

/// A failure not seen again for this long is forgotten, for calls that are not retried (a
/// retried call clears it by succeeding).
const FORGET_AFTER_MS: u64 = 60_000;

pub struct Health {
    clock: Clock,
    /// Failures by class: transient, conflict, permanent, corrupt.
    errors: [AtomicU64; 4],
    /// Calls failing now, by what they do.
    failing: Mutex<HashMap<&'static str, Failing>>,
    /// Whether `failing` has entries: a success costs one atomic load when nothing failed.
    is_failing: AtomicBool,
}

impl Health {
    pub fn new(clock: Clock) -> Health {
        Health {
            clock,
            errors: Default::default(),
            failing: Mutex::new(HashMap::new()),
            is_failing: AtomicBool::new(false),
        }
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Failing>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure of `what`.
    pub fn failed(&self, what: &'static str, e: &StorageError) {
        let i = match e {
            StorageError::Transient(_) => 0,
            StorageError::Conflict(_) => 1,
            StorageError::Permanent(_) => 2,
            StorageError::Corrupt(_) => 3,
        };
        self.errors[i].fetch_add(1, Ordering::Relaxed);
        tracing::error!(what, class = e.class(), error = %e, "storage failed");
        let now = self.clock.now_ms();
        let mut f = self.failing();
        self.is_failing.store(true, Ordering::Release);
        let entry = f.entry(what).or_insert_with(|| Failing {
            what,
            class: e.class(),
            error: String::new(),
            since_ms: now,
            last_ms: now,
        });
        entry.class = e.class();
        entry.error = e.to_string();
        entry.last_ms = now;
    }

    /// Records a success of `what`: it works again.
    pub fn succeeded(&self, what: &'static str) {
        if !self.is_failing.load(Ordering::Acquire) {
            return;
        }
        let mut f = self.failing();
        if f.remove(what).is_some() {
            tracing::info!(what, "storage answers again");
        }
        self.is_failing.store(!f.is_empty(), Ordering::Release);
    }

    /// Whether `what` failed and has not succeeded since.
    pub fn is_failing(&self, what: &str) -> bool {
        self.is_failing.load(Ordering::Acquire) && self.failing().contains_key(what)
    }

    /// The call failing longest, if any is failing (failures of calls not seen again for a
    /// minute are forgotten).
    pub fn status(&self) -> Option<Failing> {
        if !self.is_failing.load(Ordering::Acquire) {
            return None;
        }
        let now = self.clock.now_ms();
        let mut f = self.failing();
        f.retain(|_, v| v.last_ms + FORGET_AFTER_MS >= now);
        self.is_failing.store(!f.is_empty(), Ordering::Release);
        f.values().min_by_key(|v| v.since_ms).cloned()
    }

    /// Failures so far by class: [transient, conflict, permanent, corrupt].
    pub fn errors(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Runs `call` until it succeeds, pausing with exponential backoff after each failure
    /// (every failure is recorded). `None` when `stop` is cancelled first: the work is still
    /// stored and is taken up again after a restart.
    pub async fn persist<T, F, Fut>(
        &self,
        what: &'static str,
        stop: &CancellationToken,
        call: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let retried = self.retry(what, stop, |_| true, call).await?;
        Some(retried.expect("every failure is retried"))
    }

    /// [`Health::persist`] for a call whose permanent failures are final: those come back as
    /// `Some(Err(_))`; transient ones and conflicts are retried.
    pub async fn persist_transient<T, F, Fut>(
        &self,
        what: &'static str,
        stop: &CancellationToken,
        call: F,
    ) -> Option<Result<T, StorageError>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        self.retry(what, stop, StorageError::is_transient, call)
            .await
    }

    async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        stop: &CancellationToken,
        retried: impl Fn(&StorageError) -> bool,
        mut call: F,
    ) -> Option<Result<T, StorageError>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut pause = FIRST_BACKOFF;
        loop {
            match call().await {
                Ok(v) => {
                    self.succeeded(what);
                    return Some(Ok(v));
                }
                Err(e) => {
                    self.failed(what, &e);
                    if !retried(&e) {
                        return Some(Err(e));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => return None,
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn persist_retries_with_backoff_until_the_store_answers() {
        let health = Health::new(Clock::new());
        let stop = CancellationToken::new();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let got = health
            .persist("test write", &stop, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(StorageError::Transient("disk full".into()))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(got, Some(7));
        // 100 + 200 + 400 ms of backoff.
        assert_eq!(started.elapsed(), Duration::from_millis(700));
        assert_eq!(health.errors(), [3, 0, 0, 0]);
        assert!(health.status().is_none(), "a success clears the failure");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_reported_until_a_success_and_stopping_gives_up() {
        let health = Health::new(Clock::new());
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            stopper.cancel();
        });
        let got: Option<()> = health
            .persist("event log append", &stop, || async {
                Err(StorageError::Permanent("unsupported".into()))
            })
            .await;
        assert_eq!(got, None);
        let failing = health.status().expect("still failing");
        assert_eq!(
            (failing.what, failing.class),
            ("event log append", "permanent")
        );
        // Backoff is capped: about 60 s / 5 s of attempts, not a handful.
        assert!(health.errors()[2] > 10, "{:?}", health.errors());
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_final_where_the_caller_says_so() {
        let health = Health::new(Clock::new());
        let stop = CancellationToken::new();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let got: Option<Result<(), _>> = health
            .persist_transient("event log append", &stop, || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(StorageError::Conflict("raced".into()))
                } else {
                    Err(StorageError::Corrupt("bad record".into()))
                }
            })
            .await;
        assert!(
            matches!(got, Some(Err(StorageError::Corrupt(_)))),
            "{got:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the conflict was retried once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_success_of_the_same_call_clears_its_failure_and_old_ones_are_forgotten() {
        let health = Health::new(Clock::new());
        let full = StorageError::Transient("disk full".into());
        health.failed("event log append", &full);
        health.succeeded("topic state");
        assert_eq!(health.status().unwrap().what, "event log append");
        tokio::time::advance(std::time::Duration::from_secs(30)).await;
        health.failed("sweep", &full);
        health.succeeded("event log append");
        assert_eq!(health.status().unwrap().what, "sweep");
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert!(health.status().is_none(), "not seen again for a minute");
    }
}
