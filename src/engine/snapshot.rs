//! The subscribers of a topic as read when its event was committed, handed on with the event's
//! jobs: a job whose destination's subscribers fit in one page delivers to them without reading
//! them again, as long as the topic's subscriptions have not changed since
//! ([`crate::storage::SubChanges`]) and none of them has expired. Otherwise (or when the topic
//! has more subscribers than a snapshot holds) the job reads its pages from storage.

use std::ops::Range;
use std::sync::Arc;

use crate::storage::{SubChanges, Subscription};

/// Most subscribers a snapshot holds: a topic with more has its jobs read their pages.
pub const MAX_SUBSCRIBERS: usize = 256;

/// A topic's subscribers in (destination, callback) order, and the topic's change count read
/// before them.
#[derive(Clone)]
pub struct Snapshot {
    subs: Arc<[Subscription]>,
    changes: u64,
    /// Roughly what it holds in memory.
    bytes: usize,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("subscribers", &self.subs.len())
            .field("changes", &self.changes)
            .finish()
    }
}

impl Snapshot {
    /// `subs` must be every subscriber of one topic in (destination, callback) order, read
    /// after `changes` was.
    pub fn new(subs: Vec<Subscription>, changes: u64) -> Snapshot {
        let bytes = subs
            .iter()
            .map(|s| {
                std::mem::size_of::<Subscription>()
                    + s.topic.len()
                    + s.callback.len()
                    + s.destination.len()
                    + s.secret.as_ref().map_or(0, String::len)
            })
            .sum();
        Snapshot {
            subs: subs.into(),
            changes,
            bytes,
        }
    }

    /// The destination servers, in order.
    pub fn destinations(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.subs.iter() {
            if out.last() != Some(&s.destination) {
                out.push(s.destination.clone());
            }
        }
        out
    }

    /// Roughly what it holds in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The part of it at `destination`.
    pub fn at(&self, destination: &str) -> Page {
        let start = self
            .subs
            .partition_point(|s| s.destination.as_str() < destination);
        let end =
            start + self.subs[start..].partition_point(|s| s.destination.as_str() == destination);
        Page {
            snapshot: self.clone(),
            range: start..end,
        }
    }
}

/// The subscribers of one destination in a [`Snapshot`].
#[derive(Clone)]
pub struct Page {
    snapshot: Snapshot,
    range: Range<usize>,
}

impl Page {
    /// The subscribers, if they are still what storage holds: the topic's subscriptions have
    /// not changed since and none has expired by `now_ms`.
    pub fn current(
        &self,
        changes: &SubChanges,
        topic: &str,
        now_ms: u64,
    ) -> Option<&[Subscription]> {
        let subs = &self.snapshot.subs[self.range.clone()];
        let unchanged = changes.of(topic) == self.snapshot.changes;
        (unchanged && subs.iter().all(|s| s.expires_ms > now_ms)).then_some(subs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(destination: &str, callback: &str, expires_ms: u64) -> Subscription {
        Subscription {
            topic: "http://t/".into(),
            callback: callback.into(),
            destination: destination.into(),
            secret: None,
            lease_seconds: 60,
            expires_ms,
            created_ms: 0,
        }
    }

    #[test]
    fn a_page_is_one_destinations_subscribers_while_nothing_changed_or_expired() {
        let changes = SubChanges::default();
        let snap = Snapshot::new(
            vec![
                sub("http://a:80", "http://a/1", 100),
                sub("http://a:80", "http://a/2", 100),
                sub("http://b:80", "http://b/1", 50),
                sub("http://c:80", "http://c/1", 100),
            ],
            changes.of("http://t/"),
        );
        assert_eq!(
            snap.destinations(),
            ["http://a:80", "http://b:80", "http://c:80"]
        );
        let a = snap.at("http://a:80");
        let got = a.current(&changes, "http://t/", 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].callback, "http://a/2");
        assert_eq!(
            snap.at("http://c:80")
                .current(&changes, "http://t/", 10)
                .unwrap()
                .len(),
            1
        );
        assert!(
            snap.at("http://z:80")
                .current(&changes, "http://t/", 10)
                .unwrap()
                .is_empty()
        );
        assert!(
            snap.at("http://b:80")
                .current(&changes, "http://t/", 60)
                .is_none(),
            "one expired: read again"
        );
        changes.changed("http://t/");
        assert!(
            a.current(&changes, "http://t/", 10).is_none(),
            "changed: read again"
        );
    }
}
