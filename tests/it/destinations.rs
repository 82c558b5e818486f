//! One destination server, many topics: the destination's worker runs the jobs of different
//! topics side by side, and one topic's jobs one at a time, in order.

use std::time::{Duration, Instant};

use crate::helpers::*;

const PUBLISHERS: &str = r#"
[delivery]
timeout = "60s"

[[publishers]]
name = "stream"
topics = ["http://127.0.0.1:1/s/"]
token = "stream-token"
"#;

#[tokio::test]
async fn a_hung_delivery_does_not_hold_up_other_topics_at_the_same_destination() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let (a, b) = ("http://127.0.0.1:1/s/a", "http://127.0.0.1:1/s/b");
    hub.subscribed(a, &sub.callback("/a")).await;
    hub.subscribed(b, &sub.callback("/b")).await;
    // The first delivery (topic a's) is accepted and never answered; the hub waits up to its
    // 60 s delivery timeout for it.
    sub.reply_with(&[0]);
    assert_eq!(hub.fat_ping(a, "stream-token", "for a").await.status(), 202);
    sub.wait_deliveries(1).await;
    let sent = Instant::now();
    assert_eq!(hub.fat_ping(b, "stream-token", "for b").await.status(), 202);
    let d = sub.wait_deliveries(2).await;
    assert_eq!(d[0].target, "/a");
    assert_eq!(d[1].target, "/b");
    assert_eq!(d[1].body, b"for b");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "topic b waited {:?} behind topic a's hung delivery",
        sent.elapsed()
    );
}

#[tokio::test]
async fn a_topics_events_reach_a_subscriber_one_at_a_time_in_order() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/s/ordered";
    hub.subscribed(topic, &sub.callback("/o")).await;
    sub.answer_after(Duration::from_millis(100));
    for i in 1..=5 {
        let r = hub
            .fat_ping(topic, "stream-token", &format!("event {i}"))
            .await;
        assert_eq!(r.status(), 202);
        if i == 1 {
            sub.wait_deliveries(1).await; // the rest arrive while it is being answered
        }
    }
    // The newest version of plain text says everything: events that queued up behind the
    // slow answers may be coalesced into it, but what arrives comes one at a time, in publish
    // order, and ends with the last event.
    let d = sub
        .wait("event 5", |r| r.iter().any(|r| r.body == b"event 5"))
        .await;
    let numbers: Vec<u32> = d
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| {
            let body = String::from_utf8_lossy(&r.body).into_owned();
            body.strip_prefix("event ").unwrap().parse().unwrap()
        })
        .collect();
    assert!(numbers.len() >= 2, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(numbers.last(), Some(&5));
    assert_eq!(sub.max_concurrency(), 1);
}

#[tokio::test]
async fn several_topics_are_delivered_to_one_destination_at_once() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let topics: Vec<String> = (0..4)
        .map(|i| format!("http://127.0.0.1:1/s/t{i}"))
        .collect();
    for (i, t) in topics.iter().enumerate() {
        hub.subscribed(t, &sub.callback(&format!("/t{i}"))).await;
    }
    sub.answer_after(Duration::from_millis(500));
    for t in &topics {
        assert_eq!(hub.fat_ping(t, "stream-token", "x").await.status(), 202);
    }
    sub.wait_deliveries(4).await;
    // One subscriber per topic: only running the topics' jobs side by side puts more than one
    // request in flight (the window starts at 2 per destination).
    assert!(
        sub.max_concurrency() >= 2,
        "deliveries of different topics ran one after another"
    );
}
