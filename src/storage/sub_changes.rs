//! Subscription changes, counted per topic. Every subscription store the hub holds is wrapped
//! in [`Watched`], which counts each insert, replacement and removal after it is written, under
//! the topic's shard of [`SubChanges`]. A reader that noted a topic's count before reading its
//! subscribers can later tell, cheaply, whether they may have changed since (a shared count
//! can only make it re-read needlessly, never miss a change). Changes made by another node
//! sharing the store are not seen: only a node alone on its store relies on it.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{Intent, Result, Subscription, SubscriptionStore};

/// Shards of the count: topics whose hashes meet share one.
const SHARDS: usize = 4_096;

pub struct SubChanges {
    shards: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

impl Default for SubChanges {
    fn default() -> Self {
        SubChanges {
            shards: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl SubChanges {
    fn shard(&self, topic: &str) -> &AtomicU64 {
        &self.shards[(self.hasher.hash_one(topic) % SHARDS as u64) as usize]
    }

    /// The count of `topic`'s shard: read it before reading the topic's subscribers.
    pub fn of(&self, topic: &str) -> u64 {
        self.shard(topic).load(Ordering::Acquire)
    }

    pub(crate) fn changed(&self, topic: &str) {
        self.shard(topic).fetch_add(1, Ordering::Release);
    }
}

/// A subscription store whose writes are counted in [`SubChanges`].
pub struct Watched {
    pub inner: Arc<dyn SubscriptionStore>,
    pub changes: Arc<SubChanges>,
}

#[async_trait]
impl SubscriptionStore for Watched {
    async fn upsert(&self, sub: Subscription) -> Result<()> {
        let topic = sub.topic.clone();
        let r = self.inner.upsert(sub).await;
        self.changes.changed(&topic);
        r
    }
    async fn get(&self, topic: &str, callback: &str) -> Result<Option<Subscription>> {
        self.inner.get(topic, callback).await
    }
    async fn remove(&self, topic: &str, callback: &str) -> Result<bool> {
        let r = self.inner.remove(topic, callback).await;
        self.changes.changed(topic);
        r
    }
    async fn count_for_topic(&self, topic: &str) -> Result<u64> {
        self.inner.count_for_topic(topic).await
    }
    async fn destinations(&self, topic: &str) -> Result<Vec<String>> {
        self.inner.destinations(topic).await
    }
    async fn page(
        &self,
        topic: &str,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        self.inner.page(topic, destination, after, limit).await
    }
    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>> {
        self.inner.expired(now_ms, limit).await
    }
    async fn totals(&self) -> Result<(u64, u64)> {
        self.inner.totals().await
    }
    async fn scan(
        &self,
        topic: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        self.inner.scan(topic, after, limit).await
    }
    async fn for_callback(&self, callback: &str, limit: usize) -> Result<Vec<Subscription>> {
        self.inner.for_callback(callback, limit).await
    }
    async fn put_intent(&self, intent: Intent) -> Result<()> {
        self.inner.put_intent(intent).await
    }
    async fn remove_intent(&self, id: u64) -> Result<()> {
        self.inner.remove_intent(id).await
    }
    async fn intents(&self) -> Result<Vec<Intent>> {
        self.inner.intents().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn sub(topic: &str) -> Subscription {
        Subscription {
            topic: topic.into(),
            callback: "http://cb/1".into(),
            destination: "http://cb:80".into(),
            secret: None,
            lease_seconds: 60,
            expires_ms: u64::MAX,
            created_ms: 0,
        }
    }

    #[tokio::test]
    async fn writes_move_their_topics_count_and_reads_do_not() {
        let changes = Arc::new(SubChanges::default());
        let w = Watched {
            inner: Arc::new(MemoryStore::new()),
            changes: changes.clone(),
        };
        let before = changes.of("http://t/a");
        w.upsert(sub("http://t/a")).await.unwrap();
        let after_upsert = changes.of("http://t/a");
        assert_ne!(before, after_upsert);
        w.scan(Some("http://t/a"), None, 10).await.unwrap();
        w.get("http://t/a", "http://cb/1").await.unwrap();
        assert_eq!(
            changes.of("http://t/a"),
            after_upsert,
            "reads count nothing"
        );
        w.remove("http://t/a", "http://cb/1").await.unwrap();
        assert_ne!(changes.of("http://t/a"), after_upsert);
    }
}
