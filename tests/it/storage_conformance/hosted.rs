//! Hosted topics: records, entries written with their events (versions move to the new
//! number, deletions free theirs), ranges both ways, lookups by key and id, retention.

use super::*;
use hubcast::storage::hosted::*;

fn topic(name: &str, max_entries: u64) -> HostedTopic {
    HostedTopic {
        name: name.into(),
        token: "t".repeat(16),
        title: name.into(),
        created_ms: 1,
        max_entries,
        max_age_ms: 0,
        trail: 1,
        policy: PostingPolicy::Open,
        allow: vec![],
        mirror_of: None,
    }
}

fn entry(key: &str, title: &str, updated_ms: u64) -> HostedEntry {
    HostedEntry {
        key: key.into(),
        id: format!("urn:{key}"),
        title: title.into(),
        content: "c".into(),
        updated_ms,
        published_ms: updated_ms,
        digest: title.into(),
        ..HostedEntry::default()
    }
}

fn commit(name: &str, change: HostedChange) -> Commit {
    Commit {
        topic: format!("http://hub/t/{name}"),
        state: None,
        ping_ids: vec![],
        event: Some(NewEvent {
            content_type: "application/atom+xml".into(),
            body: Bytes::from_static(b"<feed/>"),
            created_ms: 1,
            relayed: None,
        }),
        destinations: vec![],
        cursor: None,
        hosted: Some(HostedWrite {
            name: name.into(),
            change,
        }),
    }
}

pub async fn hosted(s: Storage) {
    let h = &s.hosted;
    assert!(h.create_hosted(topic("b", 3)).await.unwrap());
    assert!(
        !h.create_hosted(topic("b", 9)).await.unwrap(),
        "names are unique"
    );
    assert_eq!(h.hosted("b").await.unwrap().unwrap().max_entries, 3);
    assert!(h.create_hosted(topic("a", 0)).await.unwrap());
    let names: Vec<String> = h
        .hosted_topics(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(h.hosted_topics(Some("a"), 10).await.unwrap().len(), 1);

    // Three entries and one in another topic, each with its event: numbers are the topic's.
    let mut commits: Vec<Commit> = ["k1", "k2", "k3"]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            commit(
                "b",
                HostedChange::Put(Box::new(entry(k, "v1", 10 + i as u64))),
            )
        })
        .collect();
    commits.push(commit(
        "a",
        HostedChange::Put(Box::new(entry("k1", "other", 5))),
    ));
    let events = s.log.append(&commits).await.unwrap();
    assert_eq!(events[2].as_ref().unwrap().topic_seq, 3);
    assert_eq!(h.hosted_entry("b", "k2").await.unwrap().unwrap().seq, 2);
    assert_eq!(
        h.hosted_entry_by_id("b", "urn:k3")
            .await
            .unwrap()
            .unwrap()
            .seq,
        3
    );
    assert_eq!(
        h.hosted_entry("a", "k1").await.unwrap().unwrap().title,
        "other"
    );
    assert_eq!(h.hosted_count("b").await.unwrap(), (3, 3));
    assert_eq!(h.hosted_last("b").await.unwrap(), 3);
    assert_eq!(h.hosted_last("nobody").await.unwrap(), 0);

    // A new version moves to the new number; a deletion frees its own.
    s.log
        .append(&[
            commit("b", HostedChange::Put(Box::new(entry("k1", "v2", 20)))),
            commit("b", HostedChange::Delete { key: "k2".into() }),
        ])
        .await
        .unwrap();
    let k1 = h.hosted_entry("b", "k1").await.unwrap().unwrap();
    assert_eq!((k1.seq, k1.title.as_str()), (4, "v2"));
    assert!(h.hosted_entry("b", "k2").await.unwrap().is_none());
    assert!(h.hosted_entry_by_id("b", "urn:k2").await.unwrap().is_none());
    let seqs = |v: Vec<HostedEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(
            h.hosted_entries("b", EntryRange::Before(u64::MAX), 10)
                .await
                .unwrap()
        ),
        [4, 3]
    );
    assert_eq!(
        seqs(
            h.hosted_entries("b", EntryRange::Before(4), 10)
                .await
                .unwrap()
        ),
        [3]
    );
    assert_eq!(
        seqs(
            h.hosted_entries("b", EntryRange::After(0), 1)
                .await
                .unwrap()
        ),
        [3]
    );
    assert_eq!(
        seqs(
            h.hosted_entries("b", EntryRange::After(3), 10)
                .await
                .unwrap()
        ),
        [4]
    );
    assert!(
        h.hosted_entries("b", EntryRange::After(u64::MAX), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.hosted_count("b").await.unwrap(), (2, 4));

    // Retention: at most 3 kept, then by age; the trail moves past what went.
    for k in ["k5", "k6"] {
        s.log
            .append(&[commit("b", HostedChange::Put(Box::new(entry(k, "v1", 30))))])
            .await
            .unwrap();
    }
    assert_eq!(h.prune_hosted("b", 0, 100).await.unwrap(), 1);
    assert_eq!(
        seqs(
            h.hosted_entries("b", EntryRange::After(0), 10)
                .await
                .unwrap()
        ),
        [4, 5, 6],
        "a deletion takes no number"
    );
    assert_eq!(h.hosted("b").await.unwrap().unwrap().trail, 4);
    assert_eq!(
        h.prune_hosted("b", 25, 100).await.unwrap(),
        1,
        "k1 (updated at 20) is too old"
    );
    assert_eq!(h.hosted("b").await.unwrap().unwrap().trail, 5);
    assert_eq!(h.prune_hosted("b", 0, 100).await.unwrap(), 0);
    // Numbers belong to the name, not to the URL the events carry (a hub whose URL changed).
    let mut moved = commit("b", HostedChange::Put(Box::new(entry("k7", "v1", 40))));
    moved.topic = "https://new.example/t/b".into();
    s.log.append(&[moved]).await.unwrap();
    assert_eq!(h.hosted_entry("b", "k7").await.unwrap().unwrap().seq, 7);
    assert_eq!(
        h.hosted("a").await.unwrap().unwrap().trail,
        1,
        "other topics keep theirs"
    );
    // Bounce tags name their subscription; bounces count per (topic, address).
    assert_eq!(h.bounce_tag("t1").await.unwrap(), None);
    h.put_bounce_tag("t1", "https://x.example/feed", "a@example.org")
        .await
        .unwrap();
    assert_eq!(
        h.bounce_tag("t1").await.unwrap(),
        Some(("https://x.example/feed".into(), "a@example.org".into()))
    );
    assert_eq!(
        h.note_bounce("https://x.example/feed", "a@example.org")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        h.note_bounce("https://x.example/feed", "a@example.org")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        h.note_bounce("https://x.example/feed", "b@example.org")
            .await
            .unwrap(),
        1
    );
}
