//! Claimed work: leases across nodes.

use hubcast::storage::*;

use super::*;

/// Claimed work: two nodes sharing one store never hold the same item; an ended lease frees it.
pub(super) async fn claims(s: Storage) {
    let node = |name: &str, now_ms| Claim {
        node: name.into(),
        now_ms,
        until_ms: now_ms + 1_000,
    };
    let ping = |id| Ping {
        id,
        topic: "http://t/".into(),
        fat: None,
        received_ms: 1,
    };
    s.publish
        .put_pings((1..=5).map(ping).collect())
        .await
        .unwrap();
    let ids = |v: Vec<Ping>| v.iter().map(|p| p.id).collect::<Vec<_>>();
    let a = node("a", 10);
    let b = node("b", 10);
    assert_eq!(ids(s.claims.claim_pings(&a, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(
        ids(s.claims.claim_pings(&b, 10).await.unwrap()),
        [4, 5],
        "the rest"
    );
    assert!(
        s.claims.claim_pings(&b, 10).await.unwrap().is_empty(),
        "nothing new: what b holds is not claimed again"
    );
    assert!(s.claims.claim_pings(&a, 10).await.unwrap().is_empty());
    // Acquire one item: refused while another node's lease runs.
    assert_eq!(
        s.claims
            .acquire(
                &b,
                &[WorkKey::Ping(1), WorkKey::Ping(4), WorkKey::Intent(9)]
            )
            .await
            .unwrap(),
        [false, true, true]
    );
    // Renewal keeps a's leases past their end; b cannot take them then.
    let later = node("a", 900);
    assert!(
        s.claims
            .renew(&later, &[WorkKey::Ping(1), WorkKey::Ping(2)])
            .await
            .unwrap()
            .is_empty()
    );
    let b_late = node("b", 1_500);
    assert_eq!(
        ids(s.claims.claim_pings(&b_late, 10).await.unwrap()),
        [3, 4, 5],
        "3's lease ended (a died, say), and so did b's own on 4 and 5; 1 and 2 were renewed"
    );
    // a lost 3 to b: its renewal says so. Renewing what it never held creates nothing.
    let a_late = node("a", 1_600);
    assert_eq!(
        s.claims
            .renew(
                &a_late,
                &[WorkKey::Ping(1), WorkKey::Ping(3), WorkKey::Ping(99)]
            )
            .await
            .unwrap(),
        [WorkKey::Ping(3), WorkKey::Ping(99)]
    );
    // Released items are free for anyone at once; another node's lease is not released.
    s.claims
        .release("a", &[WorkKey::Ping(1), WorkKey::Ping(3)])
        .await
        .unwrap();
    let c = node("c", 1_600);
    assert_eq!(
        s.claims
            .acquire(&c, &[WorkKey::Ping(1), WorkKey::Ping(3), WorkKey::Ping(99)])
            .await
            .unwrap(),
        [true, false, true],
        "1 released by a, 3 still b's, 99 never leased"
    );
    // A node starting again lets go of everything its previous run held.
    assert_eq!(
        s.claims.release_all("b").await.unwrap(),
        4,
        "pings 3, 4 and 5, intent 9"
    );
    assert_eq!(
        ids(s.claims.claim_pings(&node("d", 1_600), 10).await.unwrap()),
        [3, 4, 5]
    );
    for id in 1..=5 {
        s.publish.drop_ping(id, "http://t/", None).await.unwrap();
    }

    // Jobs, intents and due retries are claimed the same way.
    for (event, dest) in [(1, "http://x:80"), (2, "http://y:80")] {
        s.delivery
            .put_job(Job::new(event, dest, "http://t/"))
            .await
            .unwrap();
    }
    assert!(
        s.claims.claim_jobs(&a, 0, 10).await.unwrap().is_empty(),
        "events past `up_to` are the planner's"
    );
    assert_eq!(s.claims.claim_jobs(&a, 2, 1).await.unwrap().len(), 1);
    let other = s.claims.claim_jobs(&b, 2, 10).await.unwrap();
    assert_eq!(other.len(), 1);
    assert!(
        s.claims
            .claim_jobs(&node("c", 10), 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The jobs of delivery documents are claimable whatever `up_to` says.
    let doc = s
        .delivery
        .put_merged(
            "http://z:80",
            "http://t/",
            NewEvent {
                content_type: "text/plain".into(),
                body: bytes::Bytes::from_static(b"merged"),
                created_ms: 1,
                relayed: None,
            },
        )
        .await
        .unwrap();
    let claimed = s.claims.claim_jobs(&node("c", 10), 0, 10).await.unwrap();
    assert_eq!(claimed, vec![doc.clone()]);
    s.delivery
        .remove_jobs(doc.event, &[doc.destination])
        .await
        .unwrap();
    s.subs
        .put_intent(Intent {
            id: 77,
            mode: IntentMode::Subscribe,
            topic: "http://t/".into(),
            callback: "http://c/1".into(),
            secret: None,
            lease_seconds: 10,
            created_ms: 1,
        })
        .await
        .unwrap();
    assert_eq!(s.claims.claim_intents(&a, 10).await.unwrap().len(), 1);
    assert!(s.claims.claim_intents(&b, 10).await.unwrap().is_empty());
    s.delivery
        .put_retry(retry(1, "http://c/1", 5))
        .await
        .unwrap();
    s.delivery
        .put_retry(Retry {
            destination: "http://d:80".into(),
            ..retry(1, "http://d/2", 50)
        })
        .await
        .unwrap();
    let due = s.claims.claim_due_retries(&a, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.due_ms).collect::<Vec<_>>(),
        [5],
        "only what is due"
    );
    assert!(s.claims.claim_due_retries(&b, 10).await.unwrap().is_empty());
    let due = s
        .claims
        .claim_due_retries(&node("b", 60), 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|r| r.due_ms).collect::<Vec<_>>(), [50]);
    if s.shared {
        destinations_go_to_one_node_at_a_time(&s).await;
    }
}

/// A store several processes share leases a destination server to one node at a time, with
/// the jobs and retries of it that node holds: the destination's window is not multiplied.
async fn destinations_go_to_one_node_at_a_time(s: &Storage) {
    let at = |name: &str| Claim {
        node: name.into(),
        now_ms: 100,
        until_ms: 1_100,
    };
    let job = |event| WorkKey::Job {
        destination: "http://e:80".into(),
        event,
    };
    for event in [7, 8] {
        s.delivery
            .put_job(Job::new(event, "http://e:80", "http://t/"))
            .await
            .unwrap();
    }
    assert_eq!(s.claims.acquire(&at("a"), &[job(7)]).await.unwrap(), [true]);
    assert_eq!(
        s.claims.acquire(&at("b"), &[job(8)]).await.unwrap(),
        [false],
        "another node holds the destination"
    );
    assert!(
        s.claims
            .claim_jobs(&at("b"), 100, 10)
            .await
            .unwrap()
            .iter()
            .all(|j| j.destination != "http://e:80"),
        "nor are its jobs claimed by another node"
    );
    assert_eq!(s.claims.acquire(&at("a"), &[job(8)]).await.unwrap(), [true]);
    // The destination goes with the last item of it the node lets go of.
    s.claims.release("a", &[job(7)]).await.unwrap();
    let b_job = job(9);
    s.delivery
        .put_job(Job::new(9, "http://e:80", "http://t/"))
        .await
        .unwrap();
    assert_eq!(
        s.claims
            .acquire(&at("b"), std::slice::from_ref(&b_job))
            .await
            .unwrap(),
        [false]
    );
    s.claims.release("a", &[job(8)]).await.unwrap();
    assert_eq!(s.claims.acquire(&at("b"), &[b_job]).await.unwrap(), [true]);
    // A node that dies holds it until its leases end.
    let later = Claim {
        node: "a".into(),
        now_ms: 2_000,
        until_ms: 3_000,
    };
    assert_eq!(s.claims.acquire(&later, &[job(7)]).await.unwrap(), [true]);
}
