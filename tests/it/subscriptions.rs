//! Subscription requests, verification of intent, leases (W3C WebSub 5.1–5.3).

use crate::helpers::*;

#[tokio::test]
async fn subscribe_is_verified_with_challenge_and_lease() {
    let hub = spawn_hub().await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/topic";
    let cb = sub.callback("/cb");
    let r = hub
        .post_form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", topic),
            ("hub.callback", &cb),
            ("foo", "bar"),
            ("hub.foo", "hub.bar"),
        ])
        .await;
    assert_eq!(r.status(), 202);
    let v = sub.wait_verifications(1).await;
    assert_eq!(v[0].param("hub.mode"), Some("subscribe"));
    assert_eq!(v[0].param("hub.topic"), Some(topic));
    assert_eq!(
        v[0].param("hub.lease_seconds"),
        Some("864000"),
        "default lease is 10 days"
    );
    let challenge = v[0].param("hub.challenge").unwrap();
    assert!(challenge.len() >= 32, "at least 128 bits of challenge");
    hub.wait_active(topic, &cb).await;
    let s = hub.store().subs.get(topic, &cb).await.unwrap().unwrap();
    assert_eq!(s.lease_seconds, 864000);
}

#[tokio::test]
async fn requested_lease_is_clamped() {
    let hub = spawn_hub_with("[subscriptions]\nmin_lease = \"60s\"\nmax_lease = \"1h\"").await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/t";
    for (asked, granted) in [("5", "60"), ("999999", "3600"), ("120", "120")] {
        let cb = sub.callback(&format!("/cb{asked}"));
        let r = hub
            .post_form(&[
                ("hub.mode", "subscribe"),
                ("hub.topic", topic),
                ("hub.callback", &cb),
                ("hub.lease_seconds", asked),
            ])
            .await;
        assert_eq!(r.status(), 202);
        hub.wait_active(topic, &cb).await;
        let v = sub.verifications();
        let last = v
            .iter()
            .find(|r| r.target.starts_with(&format!("/cb{asked}?")))
            .unwrap();
        assert_eq!(last.param("hub.lease_seconds"), Some(granted));
    }
}

#[tokio::test]
async fn failed_verifications_leave_no_subscription() {
    let hub = spawn_hub().await;
    let topic = "http://127.0.0.1:1/t";
    let target = Subscriber::start().await; // a redirect target that would echo
    for (i, mode) in [
        Verify::Wrong,
        Verify::Status(404),
        Verify::Status(500),
        Verify::Redirect(target.callback("/echo")),
    ]
    .into_iter()
    .enumerate()
    {
        let sub = Subscriber::start().await;
        sub.set_verify(mode.clone());
        let cb = sub.callback(&format!("/cb{i}"));
        assert_eq!(
            hub.subscribe(topic, &cb).await.status(),
            202,
            "the answer never depends on verification"
        );
        sub.wait_verifications(1).await;
        hub.wait_intents_done().await;
        assert!(
            hub.store().subs.get(topic, &cb).await.unwrap().is_none(),
            "{mode:?} must not activate"
        );
    }
    assert!(
        target.requests().is_empty(),
        "a verification redirect is never followed"
    );
}

#[tokio::test]
async fn a_2xx_other_than_200_with_the_challenge_verifies() {
    let hub = spawn_hub().await;
    let sub = Subscriber::start().await;
    sub.set_verify(Verify::Status(202));
    let topic = "http://127.0.0.1:1/t";
    hub.subscribed(topic, &sub.callback("/cb")).await;
}

#[tokio::test]
async fn resubscribing_updates_instead_of_duplicating() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/feed");
    let cb = sub.callback("/cb");
    publisher.set("/feed", "text/plain", "v1");
    hub.subscribed(&topic, &cb).await;
    let r = hub
        .post_form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", &topic),
            ("hub.callback", &cb),
            ("hub.secret", "new-secret"),
        ])
        .await;
    assert_eq!(r.status(), 202);
    sub.wait_verifications(2).await;
    hub.wait_intents_done().await;
    assert_eq!(hub.store().subs.count_for_topic(&topic).await.unwrap(), 1);
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(1).await;
    assert!(
        d[0].header("x-hub-signature").is_some(),
        "the renewal's secret is used"
    );
    // Renewing without a secret drops it.
    hub.subscribe(&topic, &cb).await;
    sub.wait_verifications(3).await;
    hub.wait_intents_done().await;
    let s = hub.store().subs.get(&topic, &cb).await.unwrap().unwrap();
    assert!(s.secret.is_none());
    // Exactly one delivery per update.
    publisher.set("/feed", "text/plain", "v2");
    hub.publish(&topic).await;
    hub.wait_pings_done().await;
    hub.wait_jobs_done().await;
    assert_eq!(sub.deliveries().len(), 2);
}

#[tokio::test]
async fn unsubscribe_is_verified_and_stops_deliveries() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let leaving = Subscriber::start().await;
    let staying = Subscriber::start().await;
    let topic = publisher.topic("/feed");
    publisher.set("/feed", "text/plain", "one");
    hub.subscribed(&topic, &leaving.callback("/cb")).await;
    hub.subscribed(&topic, &staying.callback("/cb")).await;
    let r = hub
        .post_form(&[
            ("hub.mode", "unsubscribe"),
            ("hub.topic", &topic),
            ("hub.callback", &leaving.callback("/cb")),
        ])
        .await;
    assert_eq!(r.status(), 202);
    let v = leaving.wait_verifications(2).await;
    assert_eq!(v[1].param("hub.mode"), Some("unsubscribe"));
    assert!(v[1].param("hub.challenge").is_some());
    hub.wait_intents_done().await;
    hub.publish(&topic).await;
    staying.wait_deliveries(1).await;
    hub.wait_jobs_done().await;
    assert!(leaving.deliveries().is_empty());
}

#[tokio::test]
async fn refused_unsubscribe_keeps_the_subscription() {
    let hub = spawn_hub().await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/t";
    let cb = sub.callback("/cb");
    hub.subscribed(topic, &cb).await;
    sub.set_verify(Verify::Status(404));
    hub.post_form(&[
        ("hub.mode", "unsubscribe"),
        ("hub.topic", topic),
        ("hub.callback", &cb),
    ])
    .await;
    sub.wait_verifications(2).await;
    hub.wait_intents_done().await;
    assert!(hub.store().subs.get(topic, &cb).await.unwrap().is_some());
}

#[tokio::test]
async fn callback_query_string_is_preserved() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "x");
    let cb = sub.callback("/cb?user=42&hub.mode=mine");
    hub.subscribed(&topic, &cb).await;
    let v = sub.verifications();
    assert!(
        v[0].target
            .starts_with("/cb?user=42&hub.mode=mine&hub.mode=subscribe&"),
        "{}",
        v[0].target
    );
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(1).await;
    assert_eq!(d[0].target, "/cb?user=42&hub.mode=mine");
}

#[tokio::test]
async fn percent_encoded_unreserved_characters_name_the_same_topic() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    publisher.set("/a-b", "text/plain", "content");
    let encoded = publisher.topic("/a%2Db");
    hub.subscribe(&encoded, &sub.callback("/cb")).await;
    let plain = publisher.topic("/a-b");
    hub.wait_active(&plain, &sub.callback("/cb")).await;
    assert_eq!(hub.publish(&plain).await.status(), 202);
    let d = sub.wait_deliveries(1).await;
    assert_eq!(d[0].body, b"content");
}

#[tokio::test]
async fn bad_requests_get_a_plain_text_reason() {
    let hub = spawn_hub().await;
    let ok_cb = "http://127.0.0.1:9/cb";
    let long = "s".repeat(200);
    let utf8_200 = "é".repeat(100);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("hub.mode", "subscribe"), ("hub.topic", "http://t/")],
            "hub.callback",
        ),
        (
            vec![("hub.mode", "subscribe"), ("hub.callback", ok_cb)],
            "hub.topic",
        ),
        (
            vec![("hub.topic", "http://t/"), ("hub.callback", ok_cb)],
            "hub.mode",
        ),
        (
            vec![
                ("hub.mode", "follow"),
                ("hub.topic", "http://t/"),
                ("hub.callback", ok_cb),
            ],
            "hub.mode",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "not a url"),
                ("hub.callback", ok_cb),
            ],
            "hub.topic",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "http://t/"),
                ("hub.callback", "javascript:x"),
            ],
            "hub.callback",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "http://t/"),
                ("hub.callback", ok_cb),
                ("hub.secret", &long),
            ],
            "hub.secret",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "http://t/"),
                ("hub.callback", ok_cb),
                ("hub.secret", &utf8_200),
            ],
            "hub.secret",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "http://t/"),
                ("hub.callback", ok_cb),
                ("hub.lease_seconds", "-5"),
            ],
            "hub.lease_seconds",
        ),
        (
            vec![("hub.mode", "publish"), ("hub.url", "not a url")],
            "hub.url",
        ),
        (vec![("hub.mode", "publish")], "hub.url"),
    ];
    for (form, names) in cases {
        let r = hub.post_form(&form).await;
        assert_eq!(r.status(), 400, "{form:?}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(names), "{form:?}: {body}");
    }
    let secret_199 = "s".repeat(199);
    let r = hub
        .post_form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", "http://t/"),
            ("hub.callback", ok_cb),
            ("hub.secret", &secret_199),
        ])
        .await;
    assert_eq!(r.status(), 202, "199 bytes are accepted");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let hub = spawn_hub_with("[server]\nmax_body = \"1KiB\"").await;
    let r = hub
        .client
        .post(&hub.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "hub.mode=publish&hub.url=http://t/&pad={}",
            "x".repeat(4096)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}
