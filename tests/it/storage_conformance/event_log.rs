//! Pings, topic state and the event log: numbering, ranges, retention, cursors.

use bytes::Bytes;
use hubcast::storage::*;

pub(super) async fn publishing(s: Storage) {
    let ping = |id, topic: &str| Ping {
        id,
        topic: topic.into(),
        fat: Some(FatContent {
            content_type: "text/plain".into(),
            body: vec![1, 2, 3],
        }),
        received_ms: 5,
    };
    let (a, b) = (s.next_id().await.unwrap(), s.next_id().await.unwrap());
    assert!(b > a, "ids increase");
    let c = s.next_id().await.unwrap();
    s.publish
        .put_pings(vec![
            ping(a, "http://t/"),
            ping(b, "http://t/"),
            ping(c, "http://u/"),
        ])
        .await
        .unwrap();
    assert_eq!(s.publish.pings().await.unwrap().len(), 3);
    let state = TopicState {
        content_hash: Some("h".into()),
        entries: vec!["e1".into()],
        ..Default::default()
    };
    let new_event = |body: &'static [u8], created_ms| NewEvent {
        content_type: "text/plain".into(),
        body: Bytes::from_static(body),
        created_ms,
        relayed: None,
    };
    let empty = s.log.bounds().await.unwrap();
    assert_eq!(
        (empty.trail, empty.lead, empty.events, empty.bytes),
        (1, 0, 0, 0),
        "an empty log"
    );
    // One transaction, three commits: numbers in order, per topic too; pings gone.
    let numbers = s
        .log
        .append(&[
            Commit {
                topic: "http://t/".into(),
                state: Some(state.clone()),
                ping_ids: vec![a],
                event: Some(new_event(b"one", 100)),
                destinations: vec!["http://x:80".into()],
                cursor: None,
                hosted: None,
            },
            Commit {
                topic: "http://u/".into(),
                state: Some(TopicState::default()),
                ping_ids: vec![c],
                event: None,
                destinations: vec![],
                cursor: None,
                hosted: None,
            },
            Commit {
                topic: "http://t/".into(),
                state: Some(state.clone()),
                ping_ids: vec![b],
                event: Some(new_event(b"two", 200)),
                destinations: vec!["http://x:80".into()],
                cursor: None,
                hosted: None,
            },
        ])
        .await
        .unwrap();
    let numbers_of = |v: Vec<Option<Event>>| {
        v.iter()
            .map(|e| e.as_ref().map(|e| e.seq))
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers_of(numbers.clone()), vec![Some(1), None, Some(2)]);
    let stored = numbers[2].clone().unwrap();
    assert_eq!(
        (stored.topic_seq, &stored.body[..]),
        (2, &b"two"[..]),
        "the event as stored"
    );
    assert!(s.publish.pings().await.unwrap().is_empty());
    assert_eq!(
        s.publish.topic_state("http://t/").await.unwrap(),
        Some(state.clone())
    );
    let numbers = s
        .log
        .append(&[Commit {
            topic: "http://u/".into(),
            state: Some(state.clone()),
            ping_ids: vec![],
            event: Some(new_event(b"three", 300)),
            destinations: vec!["http://x:80".into(), "http://y:80".into()],
            cursor: None,
            hosted: None,
        }])
        .await
        .unwrap();
    assert_eq!(
        numbers_of(numbers),
        vec![Some(3)],
        "the stream goes on where it was"
    );
    let events = s.log.read(1, 4, 10).await.unwrap();
    let shape: Vec<(u64, &str, u64, &[u8])> = events
        .iter()
        .map(|e| (e.seq, e.topic.as_str(), e.topic_seq, &e.body[..]))
        .collect();
    assert_eq!(
        shape,
        [
            (1, "http://t/", 1, &b"one"[..]),
            (2, "http://t/", 2, &b"two"[..]),
            (3, "http://u/", 1, &b"three"[..])
        ]
    );
    let origin = s.log.hub_id();
    assert!(origin.len() >= 16, "a hub id: {origin:?}");
    assert!(events.iter().all(|e| e.origin == origin));
    // Ranges are [from, to) and bounded by `limit`; summaries leave the bodies out.
    let seqs = |v: Vec<EventSummary>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(s.log.summaries(2, 3, 10).await.unwrap()), [2]);
    assert_eq!(seqs(s.log.summaries(1, u64::MAX, 2).await.unwrap()), [1, 2]);
    assert!(s.log.summaries(4, u64::MAX, 10).await.unwrap().is_empty());
    assert!(s.log.summaries(3, 3, 10).await.unwrap().is_empty());
    let summary = &s.log.summaries(3, 4, 1).await.unwrap()[0];
    assert_eq!((summary.bytes, summary.topic_seq), (5, 1));
    let bounds = s.log.bounds().await.unwrap();
    assert_eq!(
        (bounds.trail, bounds.lead, bounds.events, bounds.bytes),
        (1, 3, 3, 11)
    );
    assert_eq!(
        s.log.event(2).await.unwrap().map(|e| e.body),
        Some(Bytes::from_static(b"two"))
    );

    // Each event's jobs were stored with it.
    let job_shape = |v: Vec<Job>| {
        v.iter()
            .map(|j| (j.event, j.destination.clone(), j.topic.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        job_shape(s.delivery.jobs_of(1).await.unwrap()),
        [(1, "http://x:80".to_owned(), "http://t/".to_owned())]
    );
    let mut third = job_shape(s.delivery.jobs_of(3).await.unwrap());
    third.sort();
    assert_eq!(
        third,
        [
            (3, "http://x:80".to_owned(), "http://u/".to_owned()),
            (3, "http://y:80".to_owned(), "http://u/".to_owned())
        ]
    );
    assert!(s.delivery.jobs_of(4).await.unwrap().is_empty());
    assert_eq!(s.delivery.jobs().await.unwrap().len(), 4);
    // An event's jobs done go together; one not stored is ignored.
    s.delivery
        .remove_jobs(3, &["http://x:80".into()])
        .await
        .unwrap();
    assert_eq!(
        job_shape(s.delivery.jobs_of(3).await.unwrap()),
        [(3, "http://y:80".to_owned(), "http://u/".to_owned())],
        "the other job of the event stays"
    );
    s.delivery
        .remove_jobs(3, &["http://y:80".into(), "http://z:80".into()])
        .await
        .unwrap();
    assert!(s.delivery.jobs_of(3).await.unwrap().is_empty());
    // Consumers keep named cursors.
    assert_eq!(s.log.cursor("relay").await.unwrap(), None);
    s.log.put_cursor("relay", 2).await.unwrap();
    assert_eq!(s.log.cursor("relay").await.unwrap(), Some(2));

    // Retention: by age, never past `up_to`; an event a job refers to is kept outside the
    // log as a delivery document, still readable.
    let keep_all = Retention {
        max_age_ms: 1_000,
        max_bytes: 1 << 20,
    };
    assert_eq!(
        s.log.prune(keep_all, 1_000, 3, &[]).await.unwrap().0,
        0,
        "too recent"
    );
    let (pruned, _) = s.log.prune(keep_all, 1_250, 3, &[]).await.unwrap();
    assert_eq!(pruned, 2, "events 1 and 2 are older than a second");
    let bounds = s.log.bounds().await.unwrap();
    assert_eq!(
        (bounds.trail, bounds.lead, bounds.events, bounds.bytes),
        (3, 3, 1, 5)
    );
    assert!(s.log.summaries(1, 3, 10).await.unwrap().is_empty());
    assert_eq!(
        s.log.event(1).await.unwrap().map(|e| e.body),
        Some(Bytes::from_static(b"one")),
        "kept for its job"
    );
    // A document stays while referred to, and goes after two passes without a reference.
    for event in [1, 2] {
        s.delivery
            .remove_jobs(event, &["http://x:80".into()])
            .await
            .unwrap();
    }
    let (_, unreferenced) = s.log.prune(keep_all, 1_250, 3, &[]).await.unwrap();
    assert_eq!(unreferenced, [1, 2]);
    assert!(
        s.log.event(1).await.unwrap().is_some(),
        "not at the first pass"
    );
    let (_, unreferenced) = s.log.prune(keep_all, 1_250, 3, &[1, 2]).await.unwrap();
    assert!(unreferenced.is_empty());
    assert!(s.log.event(1).await.unwrap().is_none());
    // By bytes, oldest first, and never past `up_to`.
    s.log
        .append(&[Commit {
            topic: "http://t/".into(),
            state: Some(state),
            ping_ids: vec![],
            event: Some(new_event(b"four", 2_000)),
            destinations: vec![],
            cursor: None,
            hosted: None,
        }])
        .await
        .unwrap();
    let small = Retention {
        max_age_ms: 1 << 40,
        max_bytes: 4,
    };
    assert_eq!(s.log.prune(small, 2_000, 3, &[]).await.unwrap().0, 1);
    assert_eq!(
        s.log.prune(small, 2_000, 4, &[]).await.unwrap().0,
        0,
        "within bytes now"
    );
    let bounds = s.log.bounds().await.unwrap();
    assert_eq!((bounds.trail, bounds.lead, bounds.bytes), (4, 4, 4));
    assert_eq!(s.log.read(4, 5, 1).await.unwrap()[0].topic_seq, 3);
    let tiny = Retention {
        max_bytes: 0,
        ..small
    };
    assert_eq!(s.log.prune(tiny, 2_000, 4, &[]).await.unwrap().0, 1);
    let bounds = s.log.bounds().await.unwrap();
    assert_eq!(
        (bounds.trail, bounds.lead, bounds.events),
        (5, 4, 0),
        "an emptied log: trail = lead + 1"
    );
    s.publish.drop_ping(99, "http://t/", None).await.unwrap();
}

/// An event taken from another hub's stream: it keeps its origin, number and path (this hub
/// added last), leaves the topic's state alone, and the follower's cursor moves in the same
/// transaction.
pub(super) async fn relayed(s: Storage) {
    let state = TopicState {
        content_hash: Some("local".into()),
        ..Default::default()
    };
    s.publish
        .put_topic_state("http://t/", state.clone())
        .await
        .unwrap();
    assert_eq!(s.log.cursor("upstream:a").await.unwrap(), None);
    let relayed = |n: u64| Commit {
        topic: "http://t/".into(),
        state: None,
        ping_ids: vec![],
        event: Some(NewEvent {
            content_type: "text/plain".into(),
            body: Bytes::from(format!("from a {n}")),
            created_ms: n,
            relayed: Some(Relayed {
                origin: "hub-a".into(),
                origin_seq: 40 + n,
                path: vec!["hub-a".into()],
            }),
        }),
        destinations: vec!["http://x:80".into()],
        cursor: Some(("upstream:a".into(), 40 + n)),
        hosted: None,
    };
    let stored = s.log.append(&[relayed(1), relayed(2)]).await.unwrap();
    let e = stored[1].clone().unwrap();
    let me = s.log.hub_id();
    assert_eq!(
        (e.origin.as_str(), e.origin_seq, e.path.clone()),
        ("hub-a", 42, vec!["hub-a".to_owned(), me.clone()])
    );
    assert_eq!(
        s.log.event(e.seq).await.unwrap(),
        Some(e.clone()),
        "as read"
    );
    assert_eq!(s.log.cursor("upstream:a").await.unwrap(), Some(42));
    assert_eq!(
        s.publish.topic_state("http://t/").await.unwrap(),
        Some(state),
        "the topic's state is untouched"
    );
    // A local event: its own origin, number and path.
    let local = s
        .log
        .append(&[Commit {
            event: Some(NewEvent {
                relayed: None,
                ..relayed(3).event.unwrap()
            }),
            cursor: None,
            hosted: None,
            ..relayed(3)
        }])
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(
        (local.origin, local.origin_seq, local.path),
        (me.clone(), local.seq, vec![me])
    );
    assert_eq!(s.log.cursor("upstream:a").await.unwrap(), Some(42));
    s.flush().await.unwrap();
}
