//! Recent deliveries per callback, and recent verifications per callback and per topic, kept
//! in memory for the status page and the admin API ("my subscription is verified but nothing
//! arrives — why?", "I subscribed and nothing happened — why?"). Bounded twice: `per_key`
//! records per key, and `keys` keys (the one first seen longest ago is forgotten first).
//! Nothing here is persisted: a restart starts with an empty history.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// One delivery attempt as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    /// When it completed (ms since the Unix epoch).
    pub at_ms: u64,
    pub event: u64,
    pub topic: String,
    /// `delivered`, `failed`, `gone`, `expired` or `deferred` (not sent: the hub was stopping).
    pub outcome: &'static str,
    /// Failure class (`timeout`, `dns`, `refused`, `tls`, `blocked`, `4xx`, `5xx`, …), if failed.
    pub class: Option<&'static str>,
    /// The error as reported, if failed.
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
}

/// One verification of intent (or denial) as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerificationRecord {
    /// When it finished (ms since the Unix epoch).
    pub at_ms: u64,
    pub topic: String,
    pub callback: String,
    /// `subscribe` or `unsubscribe`.
    pub mode: &'static str,
    /// `verified`, `failed` (the callback did not confirm, or could not be asked), `denied`
    /// (refused by policy; the callback was told), or `superseded` (a newer request for the
    /// same subscription came first).
    pub outcome: &'static str,
    /// Failure class, if failed.
    pub class: Option<&'static str>,
    /// Why it failed or was denied.
    pub reason: Option<String>,
    /// The setting that would change the outcome, when one would.
    pub hint: Option<&'static str>,
}

/// The newest records per key (a callback, a topic), bounded.
pub struct History<R = DeliveryRecord> {
    per_key: usize,
    keys: usize,
    inner: Mutex<Inner<R>>,
}

struct Inner<R> {
    by_key: HashMap<String, VecDeque<R>>,
    /// Keys in the order they were first recorded, for eviction.
    order: VecDeque<String>,
}

impl<R: Clone> History<R> {
    pub fn new(per_key: usize, keys: usize) -> History<R> {
        History {
            per_key,
            keys,
            inner: Mutex::new(Inner {
                by_key: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records for keys already remembered only, taking one lock for all: a batch's
    /// successes add to the histories operators are following without pushing older keys out.
    pub fn record_known<'k>(&self, keys: impl Iterator<Item = &'k str>, record: impl Fn() -> R) {
        if self.per_key == 0 || self.keys == 0 {
            return;
        }
        let mut g = self.lock();
        if g.by_key.is_empty() {
            return;
        }
        for key in keys {
            if let Some(list) = g.by_key.get_mut(key) {
                if list.len() >= self.per_key {
                    list.pop_front();
                }
                list.push_back(record());
            }
        }
    }

    pub fn record(&self, key: &str, record: R) {
        if self.per_key == 0 || self.keys == 0 {
            return;
        }
        let mut g = self.lock();
        if let Some(list) = g.by_key.get_mut(key) {
            if list.len() >= self.per_key {
                list.pop_front();
            }
            list.push_back(record);
            return;
        }
        while g.order.len() >= self.keys {
            if let Some(old) = g.order.pop_front() {
                g.by_key.remove(&old);
            }
        }
        g.order.push_back(key.to_owned());
        g.by_key.insert(key.to_owned(), VecDeque::from([record]));
    }

    /// The key's recent records, newest first.
    pub fn recent(&self, key: &str) -> Vec<R> {
        self.lock()
            .by_key
            .get(key)
            .map(|l| l.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_only_are_added_to() {
        let h: History<u32> = History::new(2, 10);
        h.record("a", 1);
        h.record_known(["a", "b"].into_iter(), || 2);
        h.record_known(["a"].into_iter(), || 3);
        assert_eq!(h.recent("a"), vec![3, 2], "newest first, two kept");
        assert!(h.recent("b").is_empty(), "no new key");
    }

    fn rec(event: u64) -> DeliveryRecord {
        DeliveryRecord {
            at_ms: event,
            event,
            topic: "t".into(),
            outcome: "delivered",
            class: None,
            error: None,
            latency_ms: Some(1.0),
        }
    }

    #[test]
    fn keeps_the_newest_per_callback_and_forgets_old_callbacks() {
        let h: History = History::new(3, 2);
        for e in 1..=5 {
            h.record("a", rec(e));
        }
        let events: Vec<u64> = h.recent("a").iter().map(|r| r.event).collect();
        assert_eq!(events, [5, 4, 3]);
        h.record("b", rec(1));
        h.record("c", rec(1));
        assert!(h.recent("a").is_empty(), "a was first seen longest ago");
        assert_eq!(h.recent("b").len(), 1);
        assert_eq!(h.recent("c").len(), 1);
        assert!(h.recent("nobody").is_empty());
    }

    #[test]
    fn zero_sizes_remember_nothing() {
        let h: History = History::new(0, 10);
        h.record("a", rec(1));
        assert!(h.recent("a").is_empty());
    }
}
