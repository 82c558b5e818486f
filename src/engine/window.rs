//! The adaptive concurrency window of one destination server, after Postfix's queue manager.
//!
//! - A destination starts with `initial` concurrent deliveries. Each window-full of successes
//!   adds one, up to `max`. A timeout, connection failure, 429 or 5xx halves it (once per
//!   window generation, so the failures of requests that were already in flight count once).
//! - After `dead_after` consecutive failures the destination is dead: nothing is sent but one
//!   probe request after `probe_interval`, then after twice that, up to `max_probe_interval`.
//!   A successful probe brings it back with the initial window.
//! - `429`/`503` with `Retry-After` pauses the whole destination that long.
//!
//! Slots come from a FIFO semaphore, so waiting deliveries are served in order; the semaphore's
//! size follows the window (permits are added when it grows and forgotten when it shrinks).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::WindowConfig;

/// What one delivery says about its destination's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// 2xx.
    Success,
    /// The server answered but refused this one delivery (4xx, 410, a redirect): alive.
    Answered,
    /// Timeout, connection failure, TLS or DNS failure, 429 or 5xx.
    Failure,
    /// 429/503 with Retry-After: pause the destination.
    Throttled(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Paused by Retry-After.
    Throttled,
    Dead,
}

#[derive(Debug)]
struct State {
    limit: usize,
    /// Permits to forget as they come back (the window shrank below what is in flight).
    debt: usize,
    generation: u64,
    successes: usize,
    failures: u32,
    paused_until: Option<Instant>,
    dead: Option<Dead>,
    probing: bool,
}

#[derive(Debug, Clone, Copy)]
struct Dead {
    next_probe: Instant,
    interval: Duration,
}

pub struct Window {
    cfg: WindowConfig,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// Wakes waiters when the destination comes back from dead or its next probe time moves.
    revived: Notify,
}

/// A right to send one request. Report its outcome with [`Slot::done`]; dropping it unreported
/// returns it without a signal.
pub struct Slot<'a> {
    window: &'a Window,
    permit: Option<OwnedSemaphorePermit>,
    generation: u64,
    probe: bool,
}

/// A snapshot for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowStatus {
    pub health: Health,
    pub limit: usize,
    pub consecutive_failures: u32,
    /// Dead: time until the next probe (zero when due or under way).
    pub next_probe_in: Option<Duration>,
    /// Throttled: time until the destination takes requests again.
    pub paused_for: Option<Duration>,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Throttled => "throttled",
            Health::Dead => "dead",
        }
    }
}

impl Window {
    pub fn new(cfg: WindowConfig) -> Window {
        Window {
            slots: Arc::new(Semaphore::new(cfg.initial)),
            state: Mutex::new(State {
                limit: cfg.initial,
                debt: 0,
                generation: 0,
                successes: 0,
                failures: 0,
                paused_until: None,
                dead: None,
                probing: false,
            }),
            revived: Notify::new(),
            cfg,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> WindowStatus {
        let s = self.lock();
        let now = Instant::now();
        let paused_for = s
            .paused_until
            .filter(|p| *p > now)
            .map(|p| p.duration_since(now));
        WindowStatus {
            health: if s.dead.is_some() {
                Health::Dead
            } else if paused_for.is_some() {
                Health::Throttled
            } else {
                Health::Healthy
            },
            limit: s.limit,
            consecutive_failures: s.failures,
            next_probe_in: s.dead.map(|d| d.next_probe.saturating_duration_since(now)),
            paused_for,
        }
    }

    /// When the destination takes requests again, if it does not now.
    pub fn blocked_until(&self) -> Option<Instant> {
        let s = self.lock();
        let now = Instant::now();
        if let Some(p) = s.paused_until.filter(|p| *p > now) {
            return Some(p);
        }
        s.dead.map(|d| d.next_probe.max(now))
    }

    /// Waits for a slot: a window slot when healthy, the probe when dead and due.
    pub async fn acquire(&self) -> Slot<'_> {
        enum Step {
            Probe(u64),
            Wait(Option<Instant>),
            Queue,
        }
        loop {
            let revived = self.revived.notified();
            tokio::pin!(revived);
            revived.as_mut().enable();
            let step = {
                let mut s = self.lock();
                let now = Instant::now();
                match (s.paused_until, s.dead) {
                    (Some(p), _) if p > now => Step::Wait(Some(p)),
                    (_, Some(dead)) if !s.probing && dead.next_probe <= now => {
                        s.probing = true;
                        Step::Probe(s.generation)
                    }
                    // Someone is probing (wait for the outcome) or the probe is not due.
                    (_, Some(dead)) => Step::Wait((!s.probing).then_some(dead.next_probe)),
                    _ => {
                        s.paused_until = None;
                        Step::Queue
                    }
                }
            };
            match step {
                Step::Probe(generation) => {
                    return Slot {
                        window: self,
                        permit: None,
                        generation,
                        probe: true,
                    };
                }
                Step::Wait(Some(at)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = revived => {}
                    }
                }
                Step::Wait(None) => revived.await,
                Step::Queue => {
                    let permit = self
                        .slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    let generation = {
                        let s = self.lock();
                        let down =
                            s.dead.is_some() || s.paused_until.is_some_and(|p| p > Instant::now());
                        (!down).then_some(s.generation)
                    };
                    // If it went down while we queued, wait like everyone else.
                    if let Some(generation) = generation {
                        return Slot {
                            window: self,
                            permit: Some(permit),
                            generation,
                            probe: false,
                        };
                    }
                }
            }
        }
    }

    fn report(
        &self,
        generation: u64,
        probe: bool,
        permit: Option<OwnedSemaphorePermit>,
        signal: Signal,
    ) {
        let cfg = &self.cfg;
        let mut s = self.lock();
        let now = Instant::now();
        let mut revived = false;
        if probe {
            s.probing = false;
        }
        match signal {
            Signal::Success | Signal::Answered => {
                s.failures = 0;
                if s.dead.take().is_some() {
                    // Back from dead: start over with the initial window.
                    self.resize(&mut s, cfg.initial);
                    s.generation += 1;
                    revived = true;
                }
                if signal == Signal::Success {
                    s.successes += 1;
                    if s.successes >= s.limit && s.limit < cfg.max {
                        s.successes = 0;
                        let grown = s.limit + 1;
                        self.resize(&mut s, grown);
                    }
                }
            }
            Signal::Failure | Signal::Throttled(_) => {
                s.successes = 0;
                if generation == s.generation && s.limit > 1 {
                    let halved = (s.limit / 2).max(1);
                    self.resize(&mut s, halved);
                    s.generation += 1;
                }
                if let Signal::Throttled(pause) = signal {
                    // A throttling server is alive; its pause is not a step towards dead.
                    let until = now + pause.min(cfg.max_retry_after);
                    s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
                } else {
                    s.failures = s.failures.saturating_add(1);
                    match s.dead {
                        Some(d) if probe => {
                            let interval = (d.interval * 2).min(cfg.max_probe_interval);
                            s.dead = Some(Dead {
                                next_probe: now + interval,
                                interval,
                            });
                            revived = true; // waiters re-read the next probe time
                        }
                        Some(_) => {}
                        None if s.failures >= cfg.dead_after => {
                            tracing::warn!(failures = s.failures, "destination is dead; probing");
                            s.dead = Some(Dead {
                                next_probe: now + cfg.probe_interval,
                                interval: cfg.probe_interval,
                            });
                        }
                        None => {}
                    }
                }
            }
        }
        if let Some(permit) = permit {
            Self::give_back(&mut s, permit);
        }
        drop(s);
        if revived {
            self.revived.notify_waiters();
        }
    }

    /// Returns a permit, or forgets it while the window owes some.
    fn give_back(s: &mut State, permit: OwnedSemaphorePermit) {
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        }
    }

    /// Makes the semaphore's size follow a new window.
    fn resize(&self, s: &mut State, to: usize) {
        if to > s.limit {
            let mut add = to - s.limit;
            let repaid = add.min(s.debt);
            s.debt -= repaid;
            add -= repaid;
            self.slots.add_permits(add);
        } else {
            let mut remove = s.limit - to;
            remove -= self.slots.forget_permits(remove);
            s.debt += remove;
        }
        s.limit = to;
    }
}

impl Slot<'_> {
    /// Reports what the request said about the destination and frees the slot.
    pub fn done(mut self, signal: Signal) {
        let permit = self.permit.take();
        self.window
            .report(self.generation, self.probe, permit, signal);
        self.probe = false;
    }
}

impl Drop for Slot<'_> {
    /// An unreported slot (its request was cancelled) is returned without a signal.
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            Window::give_back(&mut self.window.lock(), permit);
        }
        if self.probe {
            self.window.lock().probing = false;
            self.window.revived.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WindowConfig {
        WindowConfig {
            initial: 2,
            max: 8,
            dead_after: 3,
            probe_interval: Duration::from_secs(1),
            max_probe_interval: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// Slots available right now (without waiting).
    async fn take_all(w: &Window) -> Vec<Slot<'_>> {
        let mut slots = Vec::new();
        loop {
            tokio::select! {
                biased;
                s = w.acquire() => slots.push(s),
                _ = tokio::task::yield_now() => return slots,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn grows_with_successes_up_to_the_maximum() {
        let w = Window::new(cfg());
        assert_eq!(take_all(&w).await.len(), 2);
        for _ in 0..200 {
            w.acquire().await.done(Signal::Success);
        }
        assert_eq!(w.status().limit, 8);
        assert_eq!(take_all(&w).await.len(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn shrinks_once_for_failures_of_one_generation() {
        let w = Window::new(cfg());
        for _ in 0..200 {
            w.acquire().await.done(Signal::Success);
        }
        let slots = take_all(&w).await;
        assert_eq!(slots.len(), 8);
        // Two of the eight fail: the window halves once, not twice.
        let mut slots = slots.into_iter();
        slots.next().unwrap().done(Signal::Failure);
        slots.next().unwrap().done(Signal::Failure);
        assert_eq!(w.status().limit, 4);
        // The six still in flight come back; only then are four slots free.
        drop(slots);
        assert_eq!(take_all(&w).await.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_destination_gets_one_probe_at_growing_intervals() {
        let w = Window::new(cfg());
        for _ in 0..3 {
            w.acquire().await.done(Signal::Failure);
        }
        assert_eq!(w.status().health, Health::Dead);
        assert!(
            take_all(&w).await.is_empty(),
            "nothing before the probe is due"
        );

        let start = Instant::now();
        let probe = w.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(take_all(&w).await.is_empty(), "one probe at a time");
        probe.done(Signal::Failure);

        let start = Instant::now();
        w.acquire().await.done(Signal::Failure);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let start = Instant::now();
        w.acquire().await.done(Signal::Failure);
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        let start = Instant::now();
        let probe = w.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(4), "capped");

        probe.done(Signal::Success);
        assert_eq!(w.status().health, Health::Healthy);
        assert_eq!(w.status().limit, 2);
        assert_eq!(take_all(&w).await.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_resume_when_the_probe_succeeds() {
        let w = Arc::new(Window::new(cfg()));
        for _ in 0..3 {
            w.acquire().await.done(Signal::Failure);
        }
        let probe = w.acquire().await;
        let probe_at = Instant::now();
        let other = w.clone();
        let waiter = tokio::spawn(async move {
            other.acquire().await.done(Signal::Success);
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "nobody passes while the probe is out"
        );
        probe.done(Signal::Success);
        let resumed_at = waiter.await.unwrap();
        assert_eq!(resumed_at - probe_at, Duration::from_millis(300));
        assert_eq!(w.status().health, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_the_destination_without_killing_it() {
        let w = Window::new(cfg());
        w.acquire()
            .await
            .done(Signal::Throttled(Duration::from_secs(30)));
        assert_eq!(w.status().health, Health::Throttled);
        assert_eq!(w.status().consecutive_failures, 0);
        let start = Instant::now();
        w.acquire().await.done(Signal::Success);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // Capped by max_retry_after.
        w.acquire()
            .await
            .done(Signal::Throttled(Duration::from_secs(3600)));
        assert_eq!(
            w.blocked_until().unwrap() - Instant::now(),
            Duration::from_secs(60)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answers_other_than_success_keep_it_alive_but_do_not_grow_it() {
        let w = Window::new(cfg());
        for _ in 0..2 {
            w.acquire().await.done(Signal::Failure);
        }
        w.acquire().await.done(Signal::Answered);
        for _ in 0..2 {
            w.acquire().await.done(Signal::Failure);
        }
        assert_eq!(w.status().health, Health::Healthy, "the 4xx broke the run");
        for _ in 0..50 {
            w.acquire().await.done(Signal::Answered);
        }
        assert_eq!(w.status().limit, 1);
    }
}
