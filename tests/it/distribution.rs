//! Content distribution (W3C WebSub 7, 7.1): headers, signatures, failures and retries.

use hubcast::signature::{Algorithm, sign};

use crate::helpers::*;

#[tokio::test]
async fn delivery_has_content_type_link_and_no_signature_without_secret() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/page");
    publisher.set("/page", "text/html; charset=UTF-8", "<p>hello</p>");
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    assert_eq!(hub.publish(&topic).await.status(), 202);
    let d = sub.wait_deliveries(1).await;
    assert_eq!(d[0].body, b"<p>hello</p>");
    assert_eq!(
        d[0].header("content-type"),
        Some("text/html; charset=UTF-8"),
        "passed through byte for byte"
    );
    let links = d[0].headers_named("link");
    assert_eq!(links.len(), 1, "one combined Link header");
    assert_eq!(
        links[0],
        format!("<{}>; rel=\"hub\", <{}>; rel=\"self\"", hub.url, topic)
    );
    assert!(d[0].header("x-hub-signature").is_none());
}

#[tokio::test]
async fn delivery_is_signed_with_the_subscribers_secret() {
    for (alg, name) in [
        (Algorithm::Sha256, "sha256"),
        (Algorithm::Sha1, "sha1"),
        (Algorithm::Sha512, "sha512"),
    ] {
        let hub = spawn_hub_with(&format!("[delivery]\nsignature = \"{name}\"")).await;
        let publisher = Publisher::start().await;
        let sub = Subscriber::start().await;
        let topic = publisher.topic("/t");
        publisher.set("/t", "text/plain", "signed content");
        let cb = sub.callback("/cb");
        let secret = "sécret-ünicode";
        hub.post_form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", &topic),
            ("hub.callback", &cb),
            ("hub.secret", secret),
        ])
        .await;
        hub.wait_active(&topic, &cb).await;
        hub.publish(&topic).await;
        let d = sub.wait_deliveries(1).await;
        let expected = sign(alg, secret.as_bytes(), b"signed content");
        assert_eq!(d[0].header("x-hub-signature"), Some(expected.as_str()));
        assert!(expected.starts_with(&format!("{name}=")));
    }
}

#[tokio::test]
async fn failed_delivery_is_retried_and_the_subscriber_kept() {
    let OneSubscriber {
        hub,
        publisher,
        sub,
        topic,
        ..
    } = one_subscriber("first").await;
    sub.reply_with(&[500]);
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(2).await;
    assert_eq!(d[0].body, d[1].body, "the retry carries the same content");
    hub.wait_retries_settled().await;
    // A subscriber that failed keeps getting new updates.
    publisher.set("/t", "text/plain", "second");
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(3).await;
    assert_eq!(d[2].body, b"second");
}

#[tokio::test]
async fn exhausted_retries_become_a_dead_letter() {
    // The test schedule has 2 retries.
    let OneSubscriber {
        hub,
        sub,
        topic,
        cb,
        ..
    } = one_subscriber("x").await;
    sub.reply_with(&[503, 503, 503]);
    hub.publish(&topic).await;
    sub.wait_deliveries(3).await;
    hub.wait_for("a dead letter", || async {
        !hub.store()
            .delivery
            .dead_letters(10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let dl = hub.store().delivery.dead_letters(10).await.unwrap();
    assert_eq!(dl[0].callback, cb);
    assert_eq!(dl[0].attempts, 3);
    assert!(dl[0].last_error.contains("503"), "{}", dl[0].last_error);
    assert_eq!(hub.store().delivery.count_retries().await.unwrap(), 0);
    assert!(
        hub.store().subs.get(&topic, &cb).await.unwrap().is_some(),
        "the subscription stays"
    );
}

#[tokio::test]
async fn gone_ends_the_subscription() {
    let OneSubscriber {
        hub,
        sub,
        topic,
        cb,
        ..
    } = one_subscriber("x").await;
    sub.reply_with(&[410]);
    hub.publish(&topic).await;
    sub.wait_deliveries(1).await;
    hub.wait_for("the subscription to be removed", || async {
        hub.store().subs.get(&topic, &cb).await.unwrap().is_none()
    })
    .await;
    assert_eq!(hub.store().delivery.count_retries().await.unwrap(), 0);
}

#[tokio::test]
async fn a_redirecting_callback_is_a_failure_not_followed() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    let cb = sub.callback("/cb");
    publisher.set("/t", "text/plain", "x");
    hub.subscribed(&topic, &cb).await;
    // The redirect points at a live callback server that would take the delivery.
    let elsewhere = Subscriber::start().await;
    sub.redirect_deliveries_to(&elsewhere.callback("/elsewhere"));
    sub.reply_with(&[307, 200]);
    hub.publish(&topic).await;
    // The 307 counts as a failed attempt: its retry comes back to the callback itself. (A hub
    // that followed the redirect would have delivered to `elsewhere` and never retried.)
    hub.wait_for(
        "the retry, or a delivery at the redirect's target",
        || async { sub.deliveries().len() >= 2 || !elsewhere.requests().is_empty() },
    )
    .await;
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect was followed: {:#?}",
        elsewhere.requests()
    );
    hub.wait_retries_settled().await;
    assert!(elsewhere.requests().is_empty());
    let d = sub.deliveries();
    assert_eq!(d.len(), 2, "the 307, then its retry: {d:#?}");
    assert!(
        d.iter().all(|r| r.target == "/cb"),
        "only the callback itself is ever posted to"
    );
}

#[tokio::test]
async fn expired_leases_are_not_delivered_and_are_swept() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let live = Subscriber::start().await;
    let expired = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    hub.subscribed(&topic, &live.callback("/cb")).await;
    hub.subscribed(&topic, &expired.callback("/cb")).await;
    // End one lease in the past.
    hub.end_lease(&topic, &expired.callback("/cb")).await;
    hub.publish(&topic).await;
    live.wait_deliveries(1).await;
    hub.wait_jobs_done().await;
    assert!(expired.deliveries().is_empty());
    assert!(
        !hub.is_subscribed(&topic, &expired.callback("/cb")).await,
        "removed at delivery time"
    );

    // The sweeper removes expired subscriptions nobody published to.
    let other = Subscriber::start().await;
    hub.subscribed(&topic, &other.callback("/cb")).await;
    hub.end_lease(&topic, &other.callback("/cb")).await;
    hub.running().engine.sweep_now().await.unwrap();
    assert!(!hub.is_subscribed(&topic, &other.callback("/cb")).await);
}

#[tokio::test]
async fn many_destinations_each_get_the_update() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "fan-out");
    let mut subs = Vec::new();
    for i in 2..6 {
        let s = Subscriber::start_on(&format!("127.0.0.{i}")).await;
        for j in 0..3 {
            hub.subscribed(&topic, &s.callback(&format!("/cb{j}")))
                .await;
        }
        subs.push(s);
    }
    let dests = hub.store().subs.destinations(&topic).await.unwrap();
    assert_eq!(dests.len(), 4, "grouped by destination server");
    hub.publish(&topic).await;
    for s in &subs {
        let d = s.wait_deliveries(3).await;
        assert!(d.iter().all(|r| r.body == b"fan-out"));
    }
}
