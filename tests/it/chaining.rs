//! Hub chaining (`relay.chain = true`): local subscribers of a topic that advertises another
//! hub make one upstream subscription there, renewed while they stay and ended after the last
//! leaves; what the upstream hub pushes reaches every local subscriber.

use hubcast::signature::{Algorithm, sign};

use crate::helpers::*;

const CHAIN_TOPIC: &str = "hubcast:chain";

/// An Atom feed naming `hub` as its hub.
fn feed(hub: &str, entries: &[(&str, &str)]) -> String {
    atom(entries).replacen(
        "<title>Blog</title>",
        &format!("<title>Blog</title>\n  <link rel=\"hub\" href=\"{hub}\"/>"),
        1,
    )
}

#[tokio::test]
async fn local_subscribers_share_one_upstream_subscription() {
    let upstream = spawn_hub_with("[subscriptions]\nmin_lease = \"2s\"\n").await;
    let hub = spawn_hub_with("[relay]\nchain = true\nchain_lease = \"3s\"\n").await;
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/feed");
    publisher.set(
        "/feed",
        "application/atom+xml",
        feed(&upstream.url, &[("urn:1", "first")]),
    );
    let server = Subscriber::start().await;
    let callbacks: Vec<String> = (0..100)
        .map(|i| server.callback(&format!("/s/{i}")))
        .collect();
    for cb in &callbacks {
        assert_eq!(hub.subscribe(&topic, cb).await.status(), 202);
    }
    for cb in &callbacks {
        hub.wait_active(&topic, cb).await;
    }

    // One subscription at the upstream hub, with this hub's own callback and a secret.
    upstream
        .wait_for("the upstream subscription", || async {
            upstream.store().subs.count_for_topic(&topic).await.unwrap() == 1
        })
        .await;
    let up = upstream
        .store()
        .subs
        .scan(Some(&topic), None, 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        up.callback.starts_with(&format!("{}chain?topic=", hub.url)),
        "{}",
        up.callback
    );
    assert!(up.secret.is_some());
    assert_eq!(up.lease_seconds, 3);
    // A verification this hub did not ask for is not echoed.
    let forged = hub
        .client
        .get(format!(
            "{}&hub.mode=subscribe&hub.challenge=x&hub.lease_seconds=999999",
            up.callback
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);

    // What the upstream hub pushes reaches every local subscriber.
    publisher.set(
        "/feed",
        "application/atom+xml",
        feed(&upstream.url, &[("urn:2", "second"), ("urn:1", "first")]),
    );
    assert_eq!(upstream.publish(&topic).await.status(), 202);
    let got = server
        .wait("the update at all 100 local subscribers", |r| {
            r.iter().filter(|r| r.method == "POST").count() >= 100
        })
        .await;
    let posts: Vec<_> = got.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 100);
    for p in &posts {
        let body = String::from_utf8_lossy(&p.body);
        assert!(body.contains("urn:2"), "{body}");
        assert_eq!(p.header("content-type"), Some("application/atom+xml"));
        assert!(
            p.header("link").unwrap().contains(&hub.url),
            "this hub's Link"
        );
    }
    assert_eq!(hub.metric("hubcast_chain_total{what=\"pushed\"}").await, 1);

    // A push without the right signature is acknowledged and ignored; an unknown topic is gone.
    let bad = hub
        .client
        .post(&up.callback)
        .header("content-type", "text/plain")
        .header(
            "x-hub-signature",
            sign(Algorithm::Sha256, b"not-the-secret", b"forged"),
        )
        .body("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 202);
    assert_eq!(
        hub.metric("hubcast_chain_total{what=\"bad_signature\"}")
            .await,
        1
    );
    let unknown = hub
        .client
        .post(format!(
            "{}chain?topic=http%3A%2F%2F127.0.0.1%3A1%2Fnone",
            hub.url
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 410);

    let view: serde_json::Value =
        serde_json::from_str(&hub.get_text("admin/api/relay").await).unwrap();
    assert_eq!(view["chained"][0]["topic"], topic.as_str());
    assert_eq!(view["chained"][0]["hub"], upstream.url.as_str());
    assert_eq!(view["chained"][0]["verified"], true);
    assert!(hub.get_text("").await.contains("id=chained"));

    // Renewed before its 3 s lease ends, still one subscription.
    hub.wait_for("a renewal", || async {
        hub.metric("hubcast_chain_total{what=\"verified\"}").await >= 2
    })
    .await;
    assert_eq!(
        upstream.store().subs.count_for_topic(&topic).await.unwrap(),
        1
    );

    // The last local subscriber leaves: the upstream subscription ends.
    for cb in &callbacks {
        let r = hub
            .post_form(&[
                ("hub.mode", "unsubscribe"),
                ("hub.topic", &topic),
                ("hub.callback", cb),
            ])
            .await;
        assert_eq!(r.status(), 202);
    }
    hub.wait_for("the local subscriptions gone", || async {
        hub.store().subs.count_for_topic(&topic).await.unwrap() == 0
    })
    .await;
    upstream
        .wait_for("the upstream subscription gone", || async {
            upstream.store().subs.count_for_topic(&topic).await.unwrap() == 0
        })
        .await;
    hub.wait_for("the chain record gone", || async {
        hub.store()
            .subs
            .get(CHAIN_TOPIC, &topic)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert_eq!(
        server.deliveries().len(),
        100,
        "the forged push reached nobody"
    );
}

#[tokio::test]
async fn without_chaining_a_topic_on_another_hub_is_not_subscribed_upstream() {
    let upstream = spawn_hub().await;
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/feed");
    publisher.set(
        "/feed",
        "application/atom+xml",
        feed(&upstream.url, &[("urn:1", "first")]),
    );
    let server = Subscriber::start().await;
    hub.subscribed(&topic, &server.callback("/s")).await;
    hub.wait_intents_done().await;
    assert!(
        publisher.fetches().is_empty(),
        "nothing fetched to discover a hub"
    );
    assert_eq!(
        upstream.store().subs.count_for_topic(&topic).await.unwrap(),
        0
    );
}
