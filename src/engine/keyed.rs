//! Work serialised per key: items with the same key are handled in order by one worker at a
//! time (one topic's pings, one subscription's verifications), different keys in parallel.
//! An item already queued or in progress (by id) is not queued twice, so a rescan of storage
//! after an overflow cannot double work.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

pub trait Keyed: Send + 'static {
    fn key(&self) -> String;
    fn id(&self) -> u64;
}

type Handler<T> =
    Arc<dyn Fn(String, Vec<T>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub struct KeyedQueue<T: Keyed> {
    queues: Mutex<HashMap<String, VecDeque<T>>>,
    known: Mutex<HashSet<u64>>,
    handler: Handler<T>,
    tracker: tokio_util::task::TaskTracker,
}

impl<T: Keyed> KeyedQueue<T> {
    /// `handler` receives every item queued for a key since its last call, in order.
    pub fn new<F, Fut>(tracker: tokio_util::task::TaskTracker, handler: F) -> Arc<KeyedQueue<T>>
    where
        F: Fn(String, Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Arc::new(KeyedQueue {
            queues: Mutex::new(HashMap::new()),
            known: Mutex::new(HashSet::new()),
            handler: Arc::new(move |k, items| Box::pin(handler(k, items))),
            tracker,
        })
    }

    /// Queues `item`; starts a worker for its key when none runs. Must be called on the engine
    /// runtime.
    pub fn submit(self: &Arc<Self>, item: T) {
        if !lock(&self.known).insert(item.id()) {
            return;
        }
        let key = item.key();
        let start = {
            let mut queues = lock(&self.queues);
            match queues.get_mut(&key) {
                Some(q) => {
                    q.push_back(item);
                    false
                }
                None => {
                    queues.insert(key.clone(), VecDeque::from([item]));
                    true
                }
            }
        };
        if start {
            let this = self.clone();
            self.tracker.spawn(async move { this.work(key).await });
        }
    }

    async fn work(self: Arc<Self>, key: String) {
        loop {
            let batch: Vec<T> = {
                let mut queues = lock(&self.queues);
                match queues.get_mut(&key) {
                    Some(q) if !q.is_empty() => q.drain(..).collect(),
                    _ => {
                        queues.remove(&key);
                        return;
                    }
                }
            };
            let ids: Vec<u64> = batch.iter().map(Keyed::id).collect();
            (self.handler)(key.clone(), batch).await;
            let mut known = lock(&self.known);
            for id in ids {
                known.remove(&id);
            }
        }
    }

    pub fn pending(&self) -> usize {
        lock(&self.known).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(&'static str, u64);
    impl Keyed for Item {
        fn key(&self) -> String {
            self.0.to_owned()
        }
        fn id(&self) -> u64 {
            self.1
        }
    }

    #[tokio::test]
    async fn per_key_order_and_dedup() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tracker = tokio_util::task::TaskTracker::new();
        let s = seen.clone();
        let q = KeyedQueue::new(tracker.clone(), move |k: String, items: Vec<Item>| {
            let s = s.clone();
            async move {
                tokio::task::yield_now().await;
                s.lock()
                    .unwrap()
                    .push((k, items.iter().map(|i| i.1).collect::<Vec<_>>()));
            }
        });
        q.submit(Item("a", 1));
        q.submit(Item("a", 2));
        q.submit(Item("a", 2)); // duplicate id: ignored
        q.submit(Item("b", 3));
        tracker.close();
        tracker.wait().await;
        let seen = seen.lock().unwrap().clone();
        let a: Vec<u64> = seen
            .iter()
            .filter(|(k, _)| k == "a")
            .flat_map(|(_, v)| v.clone())
            .collect();
        assert_eq!(a, [1, 2]);
        assert_eq!(q.pending(), 0);
    }
}
