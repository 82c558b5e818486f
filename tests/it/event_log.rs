//! The event log seen from outside: `/admin/api/events` on a real process, numbered densely
//! across concurrent publishers and a crash.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tokio::sync::Notify;

use crate::helpers::*;
use crate::process::*;

const TOPICS: usize = 500;
const CLIENTS: usize = 8;
const TOKEN: &str = "event-log-test-token";

fn topic(i: usize) -> String {
    format!("http://127.0.0.1:1/log/{i}")
}

async fn get_json(url: &str) -> Value {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

/// Every event of the log, in order, read page by page through the admin API.
async fn all_events(hub: &str) -> (Value, Vec<Value>) {
    let mut after = 0;
    let mut events = Vec::new();
    loop {
        let page = get_json(&format!("{hub}admin/api/events?after={after}&limit=100")).await;
        let got = page["events"].as_array().unwrap().clone();
        let Some(last) = got.last() else {
            return (page, events);
        };
        after = last["seq"].as_u64().unwrap();
        events.extend(got);
    }
}

#[tokio::test]
async fn kill_9_midway_leaves_every_accepted_ping_once_in_a_dense_log() {
    let dir = tempfile::tempdir().unwrap();
    // A restart must find the store: sled, whatever the backend switch says.
    let config = process_config(
        &dir,
        persistent_backend(),
        &format!(
            "[[publishers]]\nname = \"loader\"\ntopics = [\"http://127.0.0.1:1/log/\"]\ntoken = \"{TOKEN}\"\n"
        ),
    );
    let subscriber = Subscriber::start().await;
    let mut hub = start_process(&config).await;
    let url = hub.url.clone();
    let callback = subscriber.callback("/cb");
    for i in 0..TOPICS {
        let t = topic(i);
        let form = [
            ("hub.mode", "subscribe"),
            ("hub.topic", t.as_str()),
            ("hub.callback", callback.as_str()),
        ];
        assert_eq!(post(&url, &form).await, 202);
    }
    poll_until("every subscription to be verified", PATIENCE, || async {
        let status = get_json(&format!("{url}admin/api/status")).await;
        (status["subscriptions"] == TOPICS).then_some(())
    })
    .await;

    // Eight publishers push one update each to their share of the topics; the hub is killed
    // once half of them have been accepted.
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let half = Arc::new(Notify::new());
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, accepted, count, half) =
            (url.clone(), accepted.clone(), count.clone(), half.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            for i in (c..TOPICS).step_by(CLIENTS) {
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([("hub.mode", "publish"), ("hub.url", topic(i).as_str())])
                    .finish();
                let sent = http
                    .post(format!("{url}?{q}"))
                    .header("content-type", "text/plain")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(format!("update of topic {i}"))
                    .send()
                    .await;
                // Refused or cut off by the crash: not accepted (it may still be in the log,
                // if the hub stored it before it died, but it must not be there twice).
                if sent.is_ok_and(|r| r.status() == 202) {
                    accepted.lock().unwrap().push(topic(i));
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == TOPICS / 2 {
                        half.notify_one();
                    }
                }
            }
        }));
    }
    tokio::time::timeout(PATIENCE, half.notified())
        .await
        .expect("half of the pings are accepted");
    hub.child.start_kill().unwrap();
    hub.child.wait().await.unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= TOPICS / 2 && accepted.len() < TOPICS,
        "killed midway: {} accepted",
        accepted.len()
    );

    let hub = start_process(&config).await;
    let url = hub.url.clone();
    let (page, events) = poll_until("every accepted ping to be in the log", PATIENCE, || async {
        let (page, events) = all_events(&url).await;
        let topics: HashSet<&str> = events
            .iter()
            .map(|e| e["topic"].as_str().unwrap())
            .collect();
        accepted
            .iter()
            .all(|t| topics.contains(t.as_str()))
            .then_some((page, events))
    })
    .await;
    // Pings stored but never answered may still add events: the log is dense at every moment,
    // so this snapshot is checked as it is.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let n = seqs.len() as u64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "dense from 1, in order");
    assert_eq!(
        (page["trail"].as_u64(), page["lead"].as_u64()),
        (Some(1), Some(n))
    );
    let mut seen = BTreeSet::new();
    for e in &events {
        let t = e["topic"].as_str().unwrap();
        assert!(t.starts_with("http://127.0.0.1:1/log/"), "{e}");
        assert!(seen.insert(t.to_owned()), "topic {t} is in the log twice");
        assert_eq!(e["topic_seq"], 1, "{e}");
        assert_eq!(e["content_type"], "text/plain", "{e}");
        assert!(e["bytes"].as_u64().unwrap() > 0 && e["created_ms"].as_u64().unwrap() > 0);
        assert_eq!(e["origin"], events[0]["origin"], "one origin: this hub");
    }
    for t in &accepted {
        assert!(seen.contains(t), "accepted ping of {t} is missing");
    }
    assert!(events[0]["origin"].as_str().unwrap().len() >= 16);
    stop_gracefully(hub).await;
}

#[tokio::test]
async fn the_events_listing_pages_and_refuses_bad_numbers() {
    let hub = spawn_hub_with(
        "[[publishers]]\nname = \"p\"\ntopics = [\"http://127.0.0.1:1/p/\"]\ntoken = \"tok-tok-tok\"\n",
    )
    .await;
    let sub = Subscriber::start().await;
    let t = "http://127.0.0.1:1/p/feed";
    hub.subscribed(t, &sub.callback("/cb")).await;
    for i in 0..3 {
        let r = hub.fat_ping(t, "tok-tok-tok", &format!("update {i}")).await;
        assert_eq!(r.status(), 202);
    }
    // (Deliveries may be coalesced when they queue up; the log keeps each update.)
    let lead_url = format!("{}admin/api/status", hub.url);
    poll_until("three events in the log", PATIENCE, || async {
        let status: Value = hub
            .client
            .get(&lead_url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["log_lead"] == 3).then_some(())
    })
    .await;
    let get = |q: &'static str| {
        let url = format!("{}admin/api/events{q}", hub.url);
        let client = hub.client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, all) = get("").await;
    assert_eq!(status, 200);
    assert_eq!(
        (all["trail"].as_u64(), all["lead"].as_u64()),
        (Some(1), Some(3))
    );
    let topic_seqs: Vec<u64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["topic_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(topic_seqs, [1, 2, 3]);
    assert_eq!(all["events"][0]["bytes"], "update 0".len());
    assert_eq!(all["retention"]["max_age_seconds"], 7 * 86_400);
    let (_, page) = get("?after=1&limit=1").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["seq"], 2);
    let (_, none) = get("?after=3").await;
    assert!(none["events"].as_array().unwrap().is_empty());
    for bad in ["?after=x", "?limit=0", "?limit=1001", "?after=-1"] {
        let (status, body) = get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().len() > 10, "{bad}: {body}");
    }
    // The status page shows where the log stands.
    let page = hub
        .client
        .get(&hub.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-k=\"log_lead\">3<"), "{page}");
    assert!(page.contains("Event log: events 1 to 3 kept"), "{page}");
}
