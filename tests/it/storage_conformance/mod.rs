//! One conformance suite, run against every storage backend (each named here, whatever
//! `HUBCAST_TEST_BACKEND` says), and the check that the switch reaches the rest of the suite.

use std::sync::Arc;

use bytes::Bytes;
use hubcast::storage::memory::MemoryStore;
use hubcast::storage::sled_backend::SledStore;
use hubcast::storage::*;

mod claims;
mod event_log;
mod hosted;

fn sub(topic: &str, callback: &str, expires_ms: u64) -> Subscription {
    Subscription {
        topic: topic.into(),
        callback: callback.into(),
        destination: hubcast::urls::HttpUrl::parse(callback)
            .unwrap()
            .destination(),
        secret: Some("s".into()),
        lease_seconds: 10,
        expires_ms,
        created_ms: 0,
    }
}

fn retry(event: u64, callback: &str, due_ms: u64) -> Retry {
    Retry {
        event,
        topic: "http://t/".into(),
        callback: callback.into(),
        destination: "http://c:80".into(),
        attempts: 1,
        due_ms,
        last_error: "HTTP 500".into(),
        forward: None,
    }
}

async fn subscriptions(s: Storage) {
    let t = "http://t/feed";
    assert_eq!(s.subs.count_for_topic(t).await.unwrap(), 0);
    for cb in [
        "http://b.example/2",
        "http://a.example/1",
        "http://b.example/1",
        "http://a.example/2",
    ] {
        s.subs.upsert(sub(t, cb, 1000)).await.unwrap();
    }
    s.subs
        .upsert(sub("http://t/feed2", "http://a.example/1", 1000))
        .await
        .unwrap();
    // Replacing is not adding.
    s.subs
        .upsert(sub(t, "http://a.example/1", 5000))
        .await
        .unwrap();
    assert_eq!(s.subs.count_for_topic(t).await.unwrap(), 4);
    assert_eq!(
        s.subs
            .get(t, "http://a.example/1")
            .await
            .unwrap()
            .unwrap()
            .expires_ms,
        5000
    );
    assert_eq!(
        s.subs.destinations(t).await.unwrap(),
        ["http://a.example:80", "http://b.example:80"]
    );
    // Pages in callback order, resuming after a cursor.
    let p1 = s
        .subs
        .page(t, "http://b.example:80", None, 1)
        .await
        .unwrap();
    assert_eq!(p1.len(), 1);
    assert_eq!(p1[0].callback, "http://b.example/1");
    let p2 = s
        .subs
        .page(t, "http://b.example:80", Some(&p1[0].callback), 10)
        .await
        .unwrap();
    assert_eq!(
        p2.iter().map(|s| s.callback.as_str()).collect::<Vec<_>>(),
        ["http://b.example/2"]
    );
    assert!(
        s.subs
            .page(t, "http://b.example:80", Some("http://b.example/2"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Expiry.
    let expired = s.subs.expired(2000, 100).await.unwrap();
    let mut cbs: Vec<_> = expired
        .iter()
        .filter(|s| s.topic == t)
        .map(|s| s.callback.clone())
        .collect();
    cbs.sort();
    assert_eq!(
        cbs,
        [
            "http://a.example/2",
            "http://b.example/1",
            "http://b.example/2"
        ]
    );
    assert_eq!(
        s.subs.expired(2000, 1).await.unwrap().len(),
        1,
        "limit respected"
    );
    // Removal.
    assert!(s.subs.remove(t, "http://b.example/1").await.unwrap());
    assert!(!s.subs.remove(t, "http://b.example/1").await.unwrap());
    assert_eq!(s.subs.count_for_topic(t).await.unwrap(), 3);
    assert_eq!(s.subs.count_for_topic("http://t/feed2").await.unwrap(), 1);
    // Intents.
    let i = Intent {
        id: s.next_id().await.unwrap(),
        mode: IntentMode::Subscribe,
        topic: t.into(),
        callback: "http://a.example/1".into(),
        secret: None,
        lease_seconds: 10,
        created_ms: 1,
    };
    s.subs.put_intent(i.clone()).await.unwrap();
    assert_eq!(s.subs.intents().await.unwrap(), vec![i.clone()]);
    s.subs.remove_intent(i.id).await.unwrap();
    assert!(s.subs.intents().await.unwrap().is_empty());
}

async fn delivery(s: Storage) {
    let job = Job {
        event: 7,
        destination: "http://x:80".into(),
        cursor: Some("http://x/5".into()),
        topic: "http://t/".into(),
    };
    s.delivery.put_job(job.clone()).await.unwrap();
    assert_eq!(s.delivery.jobs().await.unwrap(), vec![job.clone()]);
    s.delivery
        .put_job(Job {
            cursor: Some("http://x/9".into()),
            ..job.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        s.delivery.jobs().await.unwrap().len(),
        1,
        "a cursor update replaces the job"
    );
    assert_eq!(
        s.delivery
            .job(7, "http://x:80")
            .await
            .unwrap()
            .unwrap()
            .cursor
            .as_deref(),
        Some("http://x/9")
    );
    assert_eq!(s.delivery.job(7, "http://y:80").await.unwrap(), None);
    s.delivery
        .remove_jobs(7, &["http://x:80".into()])
        .await
        .unwrap();
    assert!(s.delivery.jobs().await.unwrap().is_empty());
    assert_eq!(s.delivery.job(7, "http://x:80").await.unwrap(), None);

    // A merged document comes with one job of its own; the jobs it replaces stay until they
    // are removed.
    for (event, dest) in [(7, "http://x:80"), (8, "http://x:80"), (8, "http://y:80")] {
        s.delivery
            .put_job(Job {
                event,
                destination: dest.into(),
                cursor: None,
                topic: "http://t/".into(),
            })
            .await
            .unwrap();
    }
    let merged = s
        .delivery
        .put_merged(
            "http://x:80",
            "http://t/",
            NewEvent {
                content_type: "text/plain".into(),
                body: bytes::Bytes::from_static(b"both"),
                created_ms: 5,
                relayed: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(s.delivery.jobs().await.unwrap().len(), 4);
    assert_eq!(
        s.delivery.job(merged.event, "http://x:80").await.unwrap(),
        Some(merged.clone())
    );
    s.delivery
        .remove_jobs(7, &["http://x:80".into()])
        .await
        .unwrap();
    s.delivery
        .remove_jobs(8, &["http://x:80".into()])
        .await
        .unwrap();
    let mut jobs = s.delivery.jobs().await.unwrap();
    jobs.sort_by_key(|j| j.destination.clone());
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0], merged);
    assert_eq!(
        (jobs[1].event, jobs[1].destination.as_str()),
        (8, "http://y:80")
    );
    let ev = s.log.event(merged.event).await.unwrap().unwrap();
    assert_eq!(
        (ev.topic.as_str(), &ev.body[..]),
        ("http://t/", &b"both"[..])
    );
    assert_ne!(
        merged.event & DELIVERY_DOC,
        0,
        "a delivery document, not a log entry"
    );
    assert_eq!(
        s.log.bounds().await.unwrap().lead,
        0,
        "the log is untouched"
    );
    // An event's jobs can go all at once.
    s.delivery.remove_all_jobs(8).await.unwrap();
    assert_eq!(s.delivery.jobs().await.unwrap(), vec![merged.clone()]);
    s.delivery.remove_all_jobs(merged.event).await.unwrap();
    assert!(s.delivery.jobs().await.unwrap().is_empty());
    s.delivery.remove_all_jobs(99).await.unwrap();

    let (r1, r2, r3) = (
        retry(1, "http://c/1", 300),
        retry(1, "http://c/2", 100),
        retry(2, "http://c/1", 200),
    );
    for r in [&r1, &r2, &r3] {
        s.delivery.put_retry(r.clone()).await.unwrap();
    }
    assert_eq!(s.delivery.count_retries().await.unwrap(), 3);
    assert_eq!(s.delivery.next_retry_due().await.unwrap(), Some(100));
    assert_eq!(
        s.delivery.due_retries(200, 10).await.unwrap(),
        vec![r2.clone(), r3.clone()]
    );
    assert_eq!(
        s.delivery.due_retries(200, 1).await.unwrap(),
        vec![r2.clone()]
    );
    s.delivery.remove_retry(&r2).await.unwrap();
    let dl = s.delivery.dead_letter(&r3, 999).await.unwrap();
    assert_eq!(s.delivery.count_retries().await.unwrap(), 1);
    assert_eq!(s.delivery.dead_letters(10).await.unwrap(), vec![dl.clone()]);
    assert_eq!(dl.last_error, "HTTP 500");
    assert_eq!(
        s.delivery.remove_dead_letter(dl.id).await.unwrap(),
        Some(dl)
    );
    assert!(s.delivery.dead_letters(10).await.unwrap().is_empty());

    // A forwarded delivery keeps the origin's Link and signature through retry, dead letter
    // and replay.
    let forwarded = Retry {
        topic: hubcast::storage::FORWARD_TOPIC.into(),
        forward: Some(hubcast::storage::Forward {
            hub: "http://origin/".into(),
            topic: "http://t/forwarded".into(),
            link: "<http://origin/>; rel=\"hub\"".into(),
            signature: Some("sha256=00ff".into()),
        }),
        ..retry(5, "http://c/9", 50)
    };
    s.delivery.put_retry(forwarded.clone()).await.unwrap();
    assert!(
        s.delivery
            .due_retries(50, 10)
            .await
            .unwrap()
            .contains(&forwarded)
    );
    let dl = s.delivery.dead_letter(&forwarded, 60).await.unwrap();
    assert_eq!(dl.forward, forwarded.forward);
    assert_eq!(dl.replayed(70).forward, forwarded.forward);
    s.delivery.remove_dead_letter(dl.id).await.unwrap();
    s.flush().await.unwrap();
}

fn event(seq: u64, topic: &str) -> Event {
    Event {
        seq,
        topic: topic.into(),
        topic_seq: seq,
        origin: "0123456789abcdef".into(),
        content_type: "text/plain".into(),
        body: Bytes::from(format!("event {seq}")),
        created_ms: seq,
        ..Default::default()
    }
}

/// Listing, lookups, restore and replay: what operators and backups use.
async fn operations(s: Storage) {
    assert_eq!(s.subs.totals().await.unwrap(), (0, 0));
    for (t, cb) in [
        ("http://t/a", "http://x.example/1"),
        ("http://t/a", "http://y.example/1"),
        ("http://t/a", "http://x.example/2"),
        ("http://t/b", "http://x.example/1"),
    ] {
        s.subs.upsert(sub(t, cb, 1000)).await.unwrap();
    }
    assert_eq!(s.subs.totals().await.unwrap(), (2, 4));

    // scan: all in key order, paged, or one topic's.
    let all = s.subs.scan(None, None, 100).await.unwrap();
    let keys: Vec<(&str, &str)> = all
        .iter()
        .map(|x| (x.topic.as_str(), x.callback.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("http://t/a", "http://x.example/1"),
            ("http://t/a", "http://x.example/2"),
            ("http://t/a", "http://y.example/1"),
            ("http://t/b", "http://x.example/1"),
        ]
    );
    let first = s.subs.scan(None, None, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let last = &first[2];
    let rest = s
        .subs
        .scan(None, Some((&last.topic, &last.callback)), 3)
        .await
        .unwrap();
    assert_eq!(rest, all[3..]);
    let b = s.subs.scan(Some("http://t/b"), None, 10).await.unwrap();
    assert_eq!(b, all[3..]);
    assert!(
        s.subs
            .scan(Some("http://t/"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let x1 = s.subs.for_callback("http://x.example/1", 10).await.unwrap();
    assert_eq!(x1.len(), 2);
    assert!(x1.iter().all(|x| x.callback == "http://x.example/1"));
    assert_eq!(
        s.subs
            .for_callback("http://x.example/1", 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.subs
            .for_callback("http://z.example/", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Topic states, in topic order.
    for t in ["http://t/b", "http://t/a"] {
        let state = TopicState {
            last_result: format!("200 {t}"),
            ..Default::default()
        };
        s.publish.put_topic_state(t, state).await.unwrap();
    }
    let states = s.publish.topic_states(None, 10).await.unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].0, "http://t/a");
    assert_eq!(states[0].1.last_result, "200 http://t/a");
    let after = s
        .publish
        .topic_states(Some("http://t/a"), 10)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, "http://t/b");

    // Events restored under their own numbers; listing and the newest of a topic.
    for seq in [7, 3, 12] {
        let topic = if seq == 3 { "http://t/b" } else { "http://t/a" };
        s.log.restore(event(seq, topic), false).await.unwrap();
    }
    assert_eq!(
        s.log.event(12).await.unwrap(),
        Some(event(12, "http://t/a"))
    );
    let bounds = s.log.bounds().await.unwrap();
    assert_eq!((bounds.trail, bounds.lead, bounds.events), (3, 12, 3));
    let seqs = |v: Vec<Event>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(s.log.read(0, u64::MAX, 10).await.unwrap()), [3, 7, 12]);
    assert_eq!(seqs(s.log.read(4, u64::MAX, 1).await.unwrap()), [7]);
    assert!(s.log.read(u64::MAX, u64::MAX, 1).await.unwrap().is_empty());
    let doc = Event {
        seq: 5 | DELIVERY_DOC,
        ..event(5, "http://t/a")
    };
    s.log.restore(doc.clone(), true).await.unwrap();
    assert_eq!(s.log.documents(0, 10).await.unwrap(), vec![doc.clone()]);
    assert_eq!(s.log.event(doc.seq).await.unwrap(), Some(doc));
    assert_eq!(
        s.log.bounds().await.unwrap().lead,
        12,
        "documents are not in the log"
    );
    let recent: Vec<u64> = s
        .log
        .recent_for_topic("http://t/a", 5, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(recent, [12, 7]);
    // Only the newest `scan` events are looked at.
    assert!(
        s.log
            .recent_for_topic("http://t/b", 5, 2)
            .await
            .unwrap()
            .is_empty()
    );

    // Ids: after a restore, new ids come after the restored ones.
    s.advance_ids_past(1_000).await.unwrap();
    assert!(s.next_id().await.unwrap() > 1_000);

    // Dead letters: restore, count, replay into a retry with no attempts counted.
    let dl = DeadLetter {
        id: 2_000,
        event: 12,
        topic: "http://t/a".into(),
        callback: "http://x.example/1".into(),
        attempts: 6,
        last_error: "HTTP 500".into(),
        failed_ms: 10,
        forward: None,
    };
    s.delivery.put_dead_letter(dl.clone()).await.unwrap();
    assert_eq!(s.delivery.count_dead_letters().await.unwrap(), 1);
    assert_eq!(
        s.delivery.dead_letters(10).await.unwrap(),
        std::slice::from_ref(&dl)
    );
    let retry = s
        .delivery
        .replay_dead_letter(2_000, 50)
        .await
        .unwrap()
        .expect("replayed");
    assert_eq!(retry.attempts, 0);
    assert_eq!(retry.due_ms, 50);
    assert_eq!(retry.event, 12);
    assert_eq!(retry.callback, "http://x.example/1");
    assert_eq!(retry.destination, "http://x.example:80");
    assert_eq!(s.delivery.count_dead_letters().await.unwrap(), 0);
    assert_eq!(
        s.delivery.retries(10).await.unwrap(),
        std::slice::from_ref(&retry)
    );
    assert_eq!(
        s.delivery.due_retries(50, 10).await.unwrap(),
        std::slice::from_ref(&retry)
    );
    assert_eq!(
        s.delivery.replay_dead_letter(2_000, 50).await.unwrap(),
        None
    );
    // Counts follow every change, and writing the same record twice counts once.
    assert_eq!(s.delivery.count_retries().await.unwrap(), 1);
    s.delivery.put_retry(retry.clone()).await.unwrap();
    assert_eq!(s.delivery.count_retries().await.unwrap(), 1);
    s.delivery.put_dead_letter(dl.clone()).await.unwrap();
    s.delivery.put_dead_letter(dl.clone()).await.unwrap();
    assert_eq!(s.delivery.count_dead_letters().await.unwrap(), 1);
    s.delivery.dead_letter(&retry, 60).await.unwrap();
    assert_eq!(s.delivery.count_retries().await.unwrap(), 0);
    assert_eq!(s.delivery.count_dead_letters().await.unwrap(), 2);
    s.delivery.remove_retry(&retry).await.unwrap();
    assert_eq!(s.delivery.count_retries().await.unwrap(), 0);
    assert!(
        s.delivery
            .remove_dead_letter(2_000)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.delivery
            .remove_dead_letter(2_000)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.delivery.count_dead_letters().await.unwrap(), 1);
    s.flush().await.unwrap();
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn subscriptions_conform() {
                let (_guard, s) = $make;
                subscriptions(s).await;
            }

            #[tokio::test]
            async fn publishing_conforms() {
                let (_guard, s) = $make;
                event_log::publishing(s).await;
            }

            #[tokio::test]
            async fn relayed_events_conform() {
                let (_guard, s) = $make;
                event_log::relayed(s).await;
            }

            #[tokio::test]
            async fn delivery_conforms() {
                let (_guard, s) = $make;
                delivery(s).await;
            }

            #[tokio::test]
            async fn hosted_topics_conform() {
                let (_guard, s) = $make;
                hosted::hosted(s).await;
            }

            #[tokio::test]
            async fn claims_conform() {
                let (_guard, s) = $make;
                claims::claims(s).await;
            }

            #[tokio::test]
            async fn operations_conform() {
                let (_guard, s) = $make;
                operations(s).await;
            }
        }
    };
}

conformance!(memory, ((), Storage::new(Arc::new(MemoryStore::new()))));
conformance!(sled, {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 8 << 20).unwrap();
    (dir, Storage::new(Arc::new(store)))
});

conformance!(postgres, {
    let url = crate::helpers::fresh_database();
    let store = hubcast::storage::postgres::PgStore::open(&url, 4)
        .await
        .expect("the test database opens");
    ((), Storage::new_shared(Arc::new(store)))
});

// Sled by name, whatever the switch says: reopening a store on disk is the point.
#[tokio::test]
async fn sled_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Storage::new(Arc::new(SledStore::open(dir.path(), 8 << 20).unwrap()));
        s.subs
            .upsert(sub("http://t/", "http://c/1", 10))
            .await
            .unwrap();
        s.delivery
            .put_retry(retry(3, "http://c/1", 5))
            .await
            .unwrap();
        s.flush().await.unwrap();
    }
    // sled's background threads let go of the directory's lock shortly after the drop.
    let reopened = crate::helpers::poll_until(
        "the closed store's lock to be released",
        crate::helpers::PATIENCE,
        || async { SledStore::open(dir.path(), 8 << 20).ok() },
    )
    .await;
    let s = Storage::new(Arc::new(reopened));
    assert_eq!(s.subs.count_for_topic("http://t/").await.unwrap(), 1);
    assert_eq!(s.delivery.count_retries().await.unwrap(), 1);
    assert_eq!(s.delivery.count_dead_letters().await.unwrap(), 0);
    let before = s.next_id().await.unwrap();
    assert!(before > 0);
}

/// `HUBCAST_TEST_BACKEND` reaches the suite's hubs.
mod switch {
    use hubcast::config::Backend;

    use crate::helpers::*;

    #[tokio::test]
    async fn the_suites_hubs_store_on_the_backend_the_switch_names() {
        let hub = spawn_hub().await;
        // Sled keeps its files in the data directory; the memory backend writes nothing.
        let on_disk = hub.dir.path().join("data").exists();
        assert_eq!(
            on_disk,
            backend() == Backend::Sled,
            "{BACKEND_VAR} names {:?}",
            backend()
        );
        hub.stop().await;
    }

    #[test]
    fn the_switch_knows_sled_and_memory_and_defaults_to_sled() {
        assert_eq!(backend_named(None), Backend::Sled);
        assert_eq!(backend_named(Some("sled")), Backend::Sled);
        assert_eq!(backend_named(Some("memory")), Backend::Memory);
        assert_eq!(backend_named(Some("postgres")), Backend::Postgres);
    }

    #[test]
    #[should_panic(
        expected = "HUBCAST_TEST_BACKEND=\"rocks\": expected \"sled\", \"memory\" or \"postgres\""
    )]
    fn an_unknown_backend_is_refused_naming_the_switch() {
        backend_named(Some("rocks"));
    }
}
