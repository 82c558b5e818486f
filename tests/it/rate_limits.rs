//! What anonymous clients can make the hub do is limited: subscription requests and light
//! pings per client address (429 with Retry-After and the setting's name), verification
//! requests per callback host, fetches per topic; and many requests for one subscription cost
//! its callback one verification.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn subscription_requests_beyond_a_clients_rate_get_429() {
    let hub = spawn_hub_with("[limits]\nsubscriptions_per_client = \"5/min\"").await;
    let sub = Subscriber::start().await;
    for i in 0..5 {
        let r = hub
            .subscribe("http://127.0.0.1:1/t", &sub.callback(&format!("/{i}")))
            .await;
        assert_eq!(r.status(), 202);
    }
    let r = hub
        .subscribe("http://127.0.0.1:1/t", &sub.callback("/6"))
        .await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&wait), "{wait}");
    let why = r.text().await.unwrap();
    assert!(why.contains("limits.subscriptions_per_client"), "{why}");
    let metrics = hub.get_text("metrics").await;
    assert!(
        metrics.contains("hubcast_requests_refused_total{limit=\"subscriptions_per_client\"} 1\n"),
        "{metrics}"
    );
    hub.wait_intents_done().await;
    assert_eq!(
        sub.verifications().len(),
        5,
        "the refused request costs nothing"
    );
}

#[tokio::test]
async fn light_pings_count_each_topic_they_name() {
    let hub = spawn_hub_with("[limits]\npings_per_client = \"3/min\"").await;
    let ping = |topics: &'static [&'static str]| {
        let hub = &hub;
        async move {
            let mut form = vec![("hub.mode", "publish")];
            form.extend(topics.iter().map(|t| ("hub.url", *t)));
            hub.post_form(&form).await.status().as_u16()
        }
    };
    assert_eq!(ping(&["http://a/1", "http://a/2"]).await, 202);
    assert_eq!(ping(&["http://a/3", "http://a/4"]).await, 429);
    assert_eq!(ping(&["http://a/3"]).await, 202);
}

#[tokio::test]
async fn many_requests_for_one_subscription_cost_one_verification_each_turn() {
    let hub = spawn_hub_with("[limits]\nverifications_per_host = \"1/min\"").await;
    let sub = Subscriber::start().await;
    let (topic, callback) = ("http://127.0.0.1:1/t", sub.callback("/cb"));
    for _ in 0..200 {
        assert_eq!(hub.subscribe(topic, &callback).await.status(), 202);
    }
    // The first was verified at once; of the 199 queued behind it only the newest is kept,
    // waiting for the host's next turn.
    hub.wait_for("older requests to be superseded", || async {
        hub.store().subs.intents().await.unwrap().len() <= 1
    })
    .await;
    assert!(hub.is_subscribed(topic, &callback).await);
    let metrics = hub.get_text("metrics").await;
    assert!(
        !metrics.contains("hubcast_verifications_total{result=\"superseded\"} 0\n"),
        "superseded requests are counted: {metrics}"
    );
    assert!(
        sub.verifications().len() <= 2,
        "{} verification requests",
        sub.verifications().len()
    );
}

#[tokio::test]
async fn verifications_to_one_host_are_spread_at_its_rate() {
    let hub = spawn_hub_with("[limits]\nverifications_per_host = \"2/s\"").await;
    let sub = Subscriber::start().await;
    let started = std::time::Instant::now();
    for i in 0..6 {
        let r = hub
            .subscribe("http://127.0.0.1:1/t", &sub.callback(&format!("/{i}")))
            .await;
        assert_eq!(r.status(), 202);
    }
    hub.wait_intents_done().await;
    assert_eq!(sub.verifications().len(), 6);
    // A burst of two, then one every half second.
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_topic_is_fetched_at_most_at_its_rate() {
    let hub = spawn_hub_with("[limits]\nfetches_per_topic = \"1/min\"").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/feed");
    publisher.set("/feed", "text/plain", "one");
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    assert_eq!(hub.publish(&topic).await.status(), 202);
    sub.wait_deliveries(1).await;
    publisher.set("/feed", "text/plain", "two");
    for _ in 0..5 {
        assert_eq!(hub.publish(&topic).await.status(), 202);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        publisher.fetches().len(),
        1,
        "the next fetch waits for the topic's turn"
    );
    assert!(
        !hub.store().publish.pings().await.unwrap().is_empty(),
        "the pings wait"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_rate() {
    let limited = "[limits]\nsubscriptions_per_client = \"2/min\"";
    let subscribe_as = |hub: &TestHub, client: &'static str, i: usize| {
        let body = format!(
            "hub.mode=subscribe&hub.topic=http%3A%2F%2F127.0.0.1%3A1%2Ft&hub.callback=http%3A%2F%2F127.0.0.1%3A2%2F{i}"
        );
        hub.client
            .post(&hub.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", client)
            .body(body)
            .send()
    };
    // The hub's loopback peer is a trusted proxy: clients are told apart by the header.
    let hub = spawn_hub_with(&format!(
        "{limited}\n[server]\ntrusted_proxies = [\"127.0.0.0/8\"]"
    ))
    .await;
    let statuses =
        |rs: Vec<reqwest::Response>| rs.iter().map(|r| r.status().as_u16()).collect::<Vec<_>>();
    let mut got = Vec::new();
    for i in 0..3 {
        got.push(subscribe_as(&hub, "203.0.113.1", i).await.unwrap());
    }
    got.push(
        subscribe_as(&hub, "198.51.100.9, 203.0.113.2", 3)
            .await
            .unwrap(),
    );
    assert_eq!(statuses(got), [202, 202, 429, 202]);
    // Without trusted proxies the header is the client's own claim and changes nothing.
    let hub = spawn_hub_with(limited).await;
    let mut got = Vec::new();
    for (i, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .into_iter()
        .enumerate()
    {
        got.push(subscribe_as(&hub, client, i).await.unwrap());
    }
    assert_eq!(statuses(got), [202, 202, 429]);
}
