//! An event's subscribers are read once, when it is committed, and its jobs deliver to them
//! without reading them again, unless the topic's subscriptions change before the job runs:
//! then the job reads them afresh, so a subscription removed meanwhile gets nothing.

use crate::helpers::*;

const CONFIG: &str = r#"
[delivery]
timeout = "4s"

[[publishers]]
name = "p"
topics = ["http://127.0.0.1:1/k/"]
token = "kept-token"
"#;

const TOPIC: &str = "http://127.0.0.1:1/k/news";

#[tokio::test]
async fn a_subscription_removed_after_the_commit_gets_nothing_from_the_waiting_job() {
    let hub = spawn_hub_with(CONFIG).await;
    let sub = Subscriber::start().await;
    let (keep, gone) = (sub.callback("/keep"), sub.callback("/gone"));
    hub.subscribed(TOPIC, &keep).await;
    hub.subscribed(TOPIC, &gone).await;
    // The first delivery of event one hangs until the 4 s timeout: the topic's next job at
    // this destination waits behind it.
    sub.reply_with(&[0]);
    assert_eq!(hub.fat_ping(TOPIC, "kept-token", "one").await.status(), 202);
    sub.wait_deliveries(1).await;
    // Event two is committed (with both subscribers read) while event one's job runs...
    assert_eq!(hub.fat_ping(TOPIC, "kept-token", "two").await.status(), 202);
    // ...and then /gone's subscription goes.
    assert!(hub.store().subs.remove(TOPIC, &gone).await.unwrap());
    sub.wait("event two at /keep", |r| {
        r.iter().any(|r| r.target == "/keep" && r.body == b"two")
    })
    .await;
    hub.wait_jobs_done().await;
    let two_at_gone = sub
        .deliveries()
        .iter()
        .filter(|r| r.target == "/gone" && r.body == b"two")
        .count();
    assert_eq!(two_at_gone, 0, "event two went to the removed subscription");
}
