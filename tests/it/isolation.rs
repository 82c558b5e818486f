//! Slow origins cannot hold the hub's outbound capacity: topic fetches and verifications are
//! shared between hosts (a few places each, hosts taking turns, half the cap kept for hosts
//! with nothing in flight), so a healthy publisher or subscriber is served at once while
//! hundreds of calls to other hosts hang.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::helpers::*;

/// How soon the healthy origin is served: far below the hanging calls' timeouts (30 s).
const PROMPTLY: Duration = Duration::from_secs(5);

const SLOW_TIMEOUTS: &str = r#"
[fetch]
timeout = "30s"
[subscriptions]
verify_timeout = "30s"
"#;

/// Servers on ten loopback hosts that accept connections and never answer, and the count of
/// connections they hold.
async fn hanging_hosts() -> (Vec<SocketAddr>, Arc<AtomicUsize>) {
    let mut addrs = Vec::new();
    let held = Arc::new(AtomicUsize::new(0));
    for host in 3..13 {
        let listener = TcpListener::bind((format!("127.0.0.{host}"), 0))
            .await
            .unwrap();
        addrs.push(listener.local_addr().unwrap());
        let count = held.clone();
        tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream); // read nothing, answer nothing
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    (addrs, held)
}

/// Waits until the hanging hosts hold at least `n` of the hub's calls.
async fn wait_hanging(held: &AtomicUsize, n: usize) {
    poll_until("calls to the hanging hosts", PATIENCE, || async {
        (held.load(Ordering::SeqCst) >= n).then_some(())
    })
    .await
}

#[tokio::test]
async fn hanging_topic_hosts_do_not_delay_a_healthy_topics_fetch() {
    let hub = spawn_hub_with(SLOW_TIMEOUTS).await;
    let subscriber = Subscriber::start().await;
    // 300 topics on ten hosts that never answer a fetch, each with a subscriber.
    let (hosts, held) = hanging_hosts().await;
    let hanging: Vec<String> = hosts
        .iter()
        .flat_map(|a| (0..30).map(move |i| format!("http://{a}/t{i}")))
        .collect();
    for (i, topic) in hanging.iter().enumerate() {
        hub.subscribed(topic, &subscriber.callback(&format!("/s{i}")))
            .await;
    }
    for chunk in hanging.chunks(100) {
        let mut form = vec![("hub.mode", "publish")];
        form.extend(chunk.iter().map(|t| ("hub.url", t.as_str())));
        assert_eq!(hub.post_form(&form).await.status(), 202);
    }
    wait_hanging(&held, 10).await;

    let publisher = Publisher::start().await;
    let healthy = publisher.topic("/healthy");
    publisher.set("/healthy", "text/plain", "fresh");
    hub.subscribed(&healthy, &subscriber.callback("/healthy"))
        .await;
    let asked = tokio::time::Instant::now();
    assert_eq!(hub.publish(&healthy).await.status(), 202);
    poll_until("the healthy topic's delivery", PROMPTLY, || async {
        subscriber
            .deliveries()
            .iter()
            .any(|d| d.target == "/healthy")
            .then_some(())
    })
    .await;
    assert!(asked.elapsed() < PROMPTLY);
}

#[tokio::test]
async fn hanging_callback_hosts_do_not_delay_a_healthy_subscribers_verification() {
    let hub = spawn_hub_with(SLOW_TIMEOUTS).await;
    let topic = "http://127.0.0.1:1/topic";
    // 100 subscription requests whose callbacks, on ten hosts, never answer.
    let (hosts, held) = hanging_hosts().await;
    for addr in hosts {
        for i in 0..10 {
            let r = hub.subscribe(topic, &format!("http://{addr}/cb{i}")).await;
            assert_eq!(r.status(), 202);
        }
    }
    wait_hanging(&held, 10).await;

    let subscriber = Subscriber::start().await;
    let callback = subscriber.callback("/healthy");
    assert_eq!(hub.subscribe(topic, &callback).await.status(), 202);
    poll_until(
        "the healthy subscriber's verification",
        PROMPTLY,
        || async {
            let sub = hub.store().subs.get(topic, &callback).await.unwrap();
            sub.map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn hanging_destinations_do_not_hold_every_delivery_place() {
    let hub = spawn_hub_with(
        r#"
[delivery]
max_in_flight = 8
timeout = "30s"
[[publishers]]
name = "p"
topics = ["http://127.0.0.1:1/"]
token = "isolation-token"
"#,
    )
    .await;
    let (hang, ok) = ("http://127.0.0.1:1/hang", "http://127.0.0.1:1/ok");
    // Four destination servers that accept deliveries and never answer, three subscribers
    // each: their windows (2 each at first) would hold all 8 places of the global cap.
    let mut hanging = Vec::new();
    for host in 3..7 {
        let s = Subscriber::start_on(&format!("127.0.0.{host}")).await;
        s.usually_reply(0);
        for path in ["/a", "/b", "/c"] {
            hub.subscribed(hang, &s.callback(path)).await;
        }
        hanging.push(s);
    }
    let healthy = Subscriber::start_on("127.0.0.2").await;
    hub.subscribed(ok, &healthy.callback("/cb")).await;
    assert_eq!(
        hub.fat_ping(hang, "isolation-token", "x").await.status(),
        202
    );
    for s in &hanging {
        s.wait_deliveries(1).await;
    }
    let asked = tokio::time::Instant::now();
    assert_eq!(hub.fat_ping(ok, "isolation-token", "y").await.status(), 202);
    healthy.wait_deliveries(1).await;
    assert!(asked.elapsed() < PROMPTLY, "{:?}", asked.elapsed());
}
