//! Light pings: forms, single-flight fetches, conditional requests, unchanged content.

use crate::helpers::*;

#[tokio::test]
async fn ping_forms_are_all_accepted() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let names = ["/a", "/b", "/c", "/d", "/e"];
    for n in names {
        publisher.set(n, "text/plain", format!("content {n}"));
        hub.subscribed(&publisher.topic(n), &sub.callback(n)).await;
    }
    let (a, b, c, d, e) = (
        publisher.topic("/a"),
        publisher.topic("/b"),
        publisher.topic("/c"),
        publisher.topic("/d"),
        publisher.topic("/e"),
    );
    // hub.topic (websub.rocks), repeated hub.url, hub.url[] in the query string.
    assert_eq!(
        hub.post_form(&[("hub.mode", "publish"), ("hub.topic", &a)])
            .await
            .status(),
        202
    );
    assert_eq!(
        hub.post_form(&[("hub.mode", "publish"), ("hub.url", &b), ("hub.url", &c)])
            .await
            .status(),
        202
    );
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("hub.mode", "publish"),
            ("hub.url[]", d.as_str()),
            ("hub.url[]", e.as_str()),
        ])
        .finish();
    let r = hub
        .client
        .post(format!("{}?{query}", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = sub.wait_deliveries(5).await;
    let mut targets: Vec<String> = got.iter().map(|r| r.target.clone()).collect();
    targets.sort();
    assert_eq!(targets, names);
}

#[tokio::test]
async fn a_ping_without_subscribers_is_accepted_and_fetches_nothing() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    publisher.set("/lonely", "text/plain", "x");
    assert_eq!(hub.publish(&publisher.topic("/lonely")).await.status(), 202);
    hub.wait_pings_done().await;
    assert!(publisher.fetches().is_empty());
}

#[tokio::test]
async fn unchanged_content_is_not_delivered_again_and_fetches_are_conditional() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set_with_etag("/t", "text/plain", "same", Some("\"v1\""));
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    sub.wait_deliveries(1).await;
    hub.publish(&topic).await;
    let fetches = publisher.wait_fetches(2).await;
    assert_eq!(fetches[1].header("if-none-match"), Some("\"v1\""));
    let ua = fetches[0].header("user-agent").unwrap();
    assert!(
        ua.starts_with("hubcast/") && ua.contains("1 subscriber"),
        "{ua}"
    );
    // Without validators: the same bytes are fetched and still not delivered.
    publisher.set("/t", "text/plain", "same");
    hub.publish(&topic).await;
    publisher.wait_fetches(3).await;
    hub.wait_pings_done().await;
    hub.wait_jobs_done().await;
    assert_eq!(sub.deliveries().len(), 1);
}

#[tokio::test]
async fn pings_arriving_together_share_one_fetch() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    let sub = Subscriber::start().await;
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    let pings = (0..20).map(|_| hub.publish(&topic));
    for r in futures_util::future::join_all(pings).await {
        assert_eq!(r.status(), 202);
    }
    hub.wait_pings_done().await;
    let n = publisher.fetches().len();
    assert!((1..20).contains(&n), "20 pings made {n} fetches");
    hub.wait_jobs_done().await;
    assert_eq!(sub.deliveries().len(), 1, "one update, one delivery");
}

#[tokio::test]
async fn topic_redirects_are_followed_a_bounded_number_of_times() {
    let hub = spawn_hub_with("[fetch]\nmax_redirects = 2").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    publisher.set("/new", "text/plain", "moved content");
    publisher.redirect("/old", &publisher.topic("/new"));
    let old = publisher.topic("/old");
    hub.subscribed(&old, &sub.callback("/cb")).await;
    hub.publish(&old).await;
    let got = sub.wait_deliveries(1).await;
    assert_eq!(got[0].body, b"moved content");
    // The subscription is to the topic as published: rel=self stays the old URL.
    assert!(
        got[0]
            .header("link")
            .unwrap()
            .contains(&format!("<{old}>; rel=\"self\""))
    );

    // A chain longer than fetch.max_redirects is a failed fetch; nothing is delivered.
    for (from, to) in [("/r1", "/r2"), ("/r2", "/r3"), ("/r3", "/new")] {
        publisher.redirect(from, &publisher.topic(to));
    }
    let long = publisher.topic("/r1");
    hub.subscribed(&long, &sub.callback("/long")).await;
    hub.publish(&long).await;
    hub.wait_pings_done().await;
    let last = hub.last_fetch(&long).await;
    assert!(last.contains("redirect"), "{last}");
    hub.wait_jobs_done().await;
    assert_eq!(sub.deliveries().len(), 1);
}

#[tokio::test]
async fn every_redirect_hop_passes_the_ssrf_guard() {
    // Only 127.0.0.1 may be fetched: a hop to 127.0.0.2 is blocked before any connection.
    let hub = spawn_hub_with("[ssrf]\ntopic_allow = [\"127.0.0.1/32\"]").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let port = publisher.base.rsplit(':').next().unwrap().to_owned();
    publisher.redirect("/hop", &format!("http://127.0.0.2:{port}/inside"));
    let topic = publisher.topic("/hop");
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    hub.wait_pings_done().await;
    let last = hub.last_fetch(&topic).await;
    assert!(last.contains("blocked"), "{last}");
    assert_eq!(
        publisher.fetches().len(),
        1,
        "only the first hop was fetched"
    );
    hub.wait_jobs_done().await;
    assert!(sub.deliveries().is_empty());
}

#[tokio::test]
async fn failed_fetches_deliver_nothing() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let missing = publisher.topic("/missing");
    hub.subscribed(&missing, &sub.callback("/cb")).await;
    hub.publish(&missing).await;
    publisher.wait_fetches(1).await;
    hub.wait_pings_done().await;
    let last = hub.last_fetch(&missing).await;
    assert!(last.contains("404"), "{last}");
    assert!(sub.deliveries().is_empty());
}

#[tokio::test]
async fn a_comma_separated_list_names_several_topics() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    for n in ["/x", "/y"] {
        publisher.set(n, "text/plain", format!("content {n}"));
        hub.subscribed(&publisher.topic(n), &sub.callback(n)).await;
    }
    let list = format!("{},{}", publisher.topic("/x"), publisher.topic("/y"));
    let r = hub
        .post_form(&[("hub.mode", "publish"), ("hub.url", &list)])
        .await;
    assert_eq!(r.status(), 202);
    let mut targets: Vec<String> = sub
        .wait_deliveries(2)
        .await
        .iter()
        .map(|r| r.target.clone())
        .collect();
    targets.sort();
    assert_eq!(targets, ["/x", "/y"]);
}

#[tokio::test]
async fn a_topic_can_be_looked_up_on_the_hub_url() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/looked-up");
    publisher.set("/looked-up", "text/plain", "v1");
    let lookup = || async {
        let url = format!("{}?hub.topic={}", hub.url, urlencode(&topic));
        let r = hub.client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let before = lookup().await;
    assert!(before.contains("subscribers: 0"), "{before}");
    assert!(before.contains("last fetch: never"), "{before}");
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    sub.wait_deliveries(1).await;
    let after = lookup().await;
    assert!(after.contains("subscribers: 1"), "{after}");
    assert!(after.contains("last fetch: 200"), "{after}");
    let r = hub
        .client
        .get(format!("{}?hub.topic=not-a-url", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
