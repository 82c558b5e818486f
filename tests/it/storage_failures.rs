//! A failing store is never silent: the client is told to come back (`503` + `Retry-After`),
//! `/readyz` and the metrics say what fails, the engine retries with backoff, and nothing is
//! delivered that the store has not recorded.

use std::sync::Arc;

use hubcast::config::Backend;
use hubcast::storage::Storage;
use hubcast::storage::memory::{Fault, MemoryStore};

use crate::helpers::*;

const TOKEN: &str = "storage-failure-token";

async fn get(hub: &TestHub, path: &str) -> (u16, String) {
    let r = hub
        .client
        .get(format!("{}{path}", hub.url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_failing_store_is_reported_retried_and_never_followed_by_a_delivery() {
    let memory = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_on(
        &dir,
        Backend::Memory,
        &format!(
            "[[publishers]]\nname = \"p\"\ntopics = [\"http://127.0.0.1:1/f/\"]\ntoken = \"{TOKEN}\"\n"
        ),
    );
    let hub = start_with_storage(dir, cfg, Storage::new(memory.clone())).await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/f/feed";
    hub.subscribed(topic, &sub.callback("/cb")).await;
    assert_eq!(get(&hub, "readyz").await.0, 200);

    // Committing a fat ping: the log refuses it; the engine keeps trying, and the publisher
    // waits, unanswered, since nothing is acknowledged before it is durable.
    memory.fail(Fault::Append, u32::MAX);
    let first = {
        let (client, url) = (hub.client.clone(), hub.url.clone());
        tokio::spawn(async move {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([("hub.mode", "publish"), ("hub.url", topic)])
                .finish();
            let r = client
                .post(format!("{url}?{q}"))
                .header("content-type", "text/plain")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body("first")
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    poll_until("the failing append to be reported", PATIENCE, || async {
        let (status, why) = get(&hub, "readyz").await;
        (status == 503 && why.contains("event log append") && why.contains("transient"))
            .then_some(())
    })
    .await;
    let metrics = poll_until("several failed appends", PATIENCE, || async {
        let (_, m) = get(&hub, "metrics").await;
        let n: u64 = m
            .lines()
            .find_map(|l| l.strip_prefix("hubcast_storage_errors_total{class=\"transient\"} "))?
            .parse()
            .ok()?;
        (n >= 3).then_some(m)
    })
    .await;
    assert!(
        !first.is_finished(),
        "answered before the update was durable"
    );

    // Another fat ping meanwhile: the publisher is told at once to try again.
    let r = hub.fat_ping(topic, TOKEN, "refused").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(r.text().await.unwrap().contains("storage unavailable"));
    assert!(metrics.contains("hubcast_event_log_lead 0\n"), "{metrics}");
    assert!(
        sub.deliveries().is_empty(),
        "nothing delivered before the log has the event"
    );
    let (status, body) = get(&hub, "admin/api/status").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"storage_failing\":{\"what\":\"event log append\""),
        "{body}"
    );

    // The store answers again: the waiting publisher is answered, the update goes out, once,
    // and the hub is ready again.
    memory.heal();
    assert_eq!(first.await.unwrap(), 202);
    let got = sub.wait_deliveries(1).await;
    assert_eq!(String::from_utf8_lossy(&got[0].body), "first");
    poll_until("readiness to come back", PATIENCE, || async {
        (get(&hub, "readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(hub.fat_ping(topic, TOKEN, "second").await.status(), 202);
    let got = sub.wait_deliveries(2).await;
    assert_eq!(String::from_utf8_lossy(&got[1].body), "second");
    let (_, events) = get(&hub, "admin/api/events").await;
    assert!(
        events.contains("\"lead\":2"),
        "one event per accepted update: {events}"
    );

    // A light ping is stored before it is answered: when the store refuses it, the publisher
    // is told to try again.
    memory.fail(Fault::PutPings, 1);
    let r = hub.publish(topic).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let (status, why) = get(&hub, "readyz").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("accepted ping"), "{why}");
}
