//! Outbound calls of one kind (topic fetches, verifications) shared fairly between origins.
//!
//! A global cap bounds the calls in flight; each origin (a host name: every port and scheme of
//! one host counts as one origin, so an attacker cannot multiply its share by opening ports)
//! has at most `per_origin` of them. Half of the global cap is kept for origins with nothing
//! in flight: a busy origin's second and later calls only use the other half, so no group of
//! slow origins can hold the hub's whole capacity while a new origin waits (a new origin is
//! served at once while fewer than half of the cap's origins hang). Waiting origins
//! are served in turn (round robin), each origin's callers first come, first served.
//!
//! A self-contained state machine: [`OriginLimit::acquire`] returns a permit that gives its
//! place back when dropped (a caller that stops waiting gives up its place too).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Shares `cap` calls in flight between origins.
pub struct OriginLimit {
    state: Mutex<State>,
}

struct State {
    cap: usize,
    per_origin: usize,
    in_flight: usize,
    origins: HashMap<String, Origin>,
    /// Origins with callers waiting, in the order they are served.
    turns: VecDeque<String>,
}

#[derive(Default)]
struct Origin {
    in_flight: usize,
    waiting: VecDeque<oneshot::Sender<OriginPermit>>,
}

/// One call's place; given back when dropped.
pub struct OriginPermit {
    limit: Arc<OriginLimit>,
    origin: String,
}

/// What [`OriginLimit::snapshot`] shows.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub in_flight: usize,
    pub waiting: usize,
    pub origins: usize,
}

impl OriginLimit {
    /// `cap` calls at once in all, at most `per_origin` (at least 1) for one origin.
    pub fn new(cap: usize, per_origin: usize) -> Arc<OriginLimit> {
        Arc::new(OriginLimit {
            state: Mutex::new(State {
                cap: cap.max(1),
                per_origin: per_origin.max(1),
                in_flight: 0,
                origins: HashMap::new(),
                turns: VecDeque::new(),
            }),
        })
    }

    /// The origin a URL's calls count against: its host, lowercased (the whole string when it
    /// has none).
    pub fn origin_of(url: &str) -> String {
        match url::Url::parse(url) {
            Ok(u) => match u.host_str() {
                Some(h) => h.to_ascii_lowercase(),
                None => url.to_owned(),
            },
            Err(_) => url.to_owned(),
        }
    }

    /// Waits for a place for one call to `origin`.
    pub async fn acquire(self: &Arc<Self>, origin: &str) -> OriginPermit {
        loop {
            let rx = {
                let mut s = self.lock();
                if s.grantable(origin) && !s.has_waiting(origin) {
                    s.take(origin);
                    return self.permit(origin);
                }
                let (tx, rx) = oneshot::channel();
                let o = s.origins.entry(origin.to_owned()).or_default();
                o.waiting.push_back(tx);
                if o.waiting.len() == 1 {
                    s.turns.push_back(origin.to_owned());
                }
                rx
            };
            // A waiting caller's sender is only ever dropped by sending; should that change,
            // asking again is right.
            if let Ok(permit) = rx.await {
                return permit;
            }
        }
    }

    #[cfg(test)]
    fn snapshot(&self) -> Usage {
        let s = self.lock();
        Usage {
            in_flight: s.in_flight,
            waiting: s.origins.values().map(|o| o.waiting.len()).sum(),
            origins: s.origins.len(),
        }
    }

    fn permit(self: &Arc<Self>, origin: &str) -> OriginPermit {
        OriginPermit {
            limit: self.clone(),
            origin: origin.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `origin`'s place back and hands free places to waiting origins in turn.
    fn give_back(self: &Arc<Self>, origin: &str) {
        let mut refused = Vec::new();
        {
            let mut s = self.lock();
            s.in_flight -= 1;
            if let Some(o) = s.origins.get_mut(origin) {
                o.in_flight -= 1;
                if o.in_flight == 0 && o.waiting.is_empty() {
                    s.origins.remove(origin);
                }
            }
            // One round over the waiting origins without a grant ends the pass.
            let mut idle = 0;
            while idle < s.turns.len() {
                let Some(next) = s.turns.pop_front() else {
                    break;
                };
                if !s.grantable(&next) {
                    s.turns.push_back(next);
                    idle += 1;
                    continue;
                }
                let Some(tx) = s.origins.get_mut(&next).and_then(|o| o.waiting.pop_front()) else {
                    continue;
                };
                s.take(&next);
                if s.has_waiting(&next) {
                    s.turns.push_back(next.clone());
                }
                idle = 0;
                // A caller that stopped waiting hands the place back once the lock is free.
                if let Err(p) = tx.send(self.permit(&next)) {
                    refused.push(p);
                }
            }
        }
        drop(refused);
    }
}

impl State {
    fn grantable(&self, origin: &str) -> bool {
        let busy = self.origins.get(origin).map_or(0, |o| o.in_flight);
        if busy >= self.per_origin {
            return false;
        }
        if busy == 0 {
            self.in_flight < self.cap
        } else {
            self.in_flight < self.cap - self.cap / 2
        }
    }

    fn has_waiting(&self, origin: &str) -> bool {
        self.origins
            .get(origin)
            .is_some_and(|o| !o.waiting.is_empty())
    }

    fn take(&mut self, origin: &str) {
        self.in_flight += 1;
        self.origins.entry(origin.to_owned()).or_default().in_flight += 1;
    }
}

impl Drop for OriginPermit {
    fn drop(&mut self) {
        self.limit.give_back(&self.origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ready<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        let mut f = Box::pin(f);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn origin_is_the_host() {
        assert_eq!(
            OriginLimit::origin_of("http://Example.COM:8080/a"),
            "example.com"
        );
        assert_eq!(
            OriginLimit::origin_of("https://example.com/b"),
            "example.com"
        );
        assert_eq!(OriginLimit::origin_of("http://127.0.0.1:1/"), "127.0.0.1");
        assert_eq!(OriginLimit::origin_of("not a url"), "not a url");
    }

    #[test]
    fn per_origin_cap_and_reserved_half() {
        let l = OriginLimit::new(8, 3);
        let a: Vec<_> = (0..3).map(|_| ready(l.acquire("a")).unwrap()).collect();
        assert!(ready(l.acquire("a")).is_none(), "a's fourth call waits");
        let b = ready(l.acquire("b")).unwrap();
        // 4 in flight: busy origins may not go past half of 8.
        assert!(ready(l.acquire("b")).is_none(), "b's second call waits");
        // Origins with nothing in flight still get places, up to the whole cap.
        let fresh: Vec<_> = ["c", "d", "e", "f"]
            .iter()
            .map(|o| ready(l.acquire(o)).unwrap())
            .collect();
        assert_eq!(l.snapshot().in_flight, 8);
        assert!(ready(l.acquire("g")).is_none(), "the cap holds");
        drop((a, b, fresh));
        assert_eq!(l.snapshot().in_flight, 0);
        assert_eq!(
            l.snapshot().origins,
            0,
            "origins without calls are forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_origins_take_turns() {
        let l = OriginLimit::new(2, 2);
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = l.acquire("x").await;
        let second = l.acquire("y").await;
        let mut tasks = Vec::new();
        // Three of a's callers queue before b's one: b still gets the second free place.
        for (i, o) in ["a", "a", "a", "b"].into_iter().enumerate() {
            let (l, order) = (l.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = l.acquire(o).await;
                order.lock().unwrap().push((i, o));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(l.snapshot().waiting, 4);
        drop(first);
        drop(second);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(&order[..2], &[(0, "a"), (3, "b")]);
        assert_eq!(
            l.snapshot(),
            Usage {
                in_flight: 0,
                waiting: 0,
                origins: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_stops_waiting_gives_its_place_back() {
        let l = OriginLimit::new(1, 1);
        let held = l.acquire("a").await;
        let gone = tokio::spawn({
            let l = l.clone();
            async move {
                let _p = l.acquire("b").await;
            }
        });
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), l.acquire("c")).await;
        assert!(again.is_ok(), "the place of the caller that left is free");
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_origins_leave_room_for_a_new_one() {
        let l = OriginLimit::new(16, 4);
        let mut held = Vec::new();
        // Six hanging origins (fewer than half the cap), each trying to run five calls.
        for o in 0..6 {
            for _ in 0..5 {
                let l = l.clone();
                let origin = format!("slow{o}");
                held.push(tokio::spawn(async move {
                    let _p = l.acquire(&origin).await;
                    std::future::pending::<()>().await;
                }));
            }
        }
        tokio::task::yield_now().await;
        assert!(l.snapshot().in_flight <= 16);
        let healthy = tokio::time::timeout(Duration::from_millis(10), l.acquire("healthy")).await;
        assert!(healthy.is_ok(), "a new origin is served while others hang");
        for h in held {
            h.abort();
        }
    }
}
