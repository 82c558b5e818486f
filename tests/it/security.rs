//! Security defaults: the SSRF guard refuses loopback unless allow-listed; denial by policy.

use hubcast::config::Config;

use crate::helpers::*;

#[tokio::test]
async fn default_config_refuses_loopback_callbacks_and_topics() {
    // The shipped defaults, with storage in a temp dir: no allow-list.
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_section(&dir.path().join("d"), backend());
    let cfg = Config::from_toml_layers(&[&storage]).unwrap();
    assert!(cfg.callback_allow.is_empty());
    let hub = start_in(dir, cfg).await;
    let sub = Subscriber::start().await;
    let publisher = Publisher::start().await;
    let cb = sub.callback("/cb");
    // Loopback in several spellings; none is contacted.
    for callback in [
        cb.clone(),
        cb.replace("127.0.0.1", "localhost"),
        format!(
            "http://[::1]:{}/cb",
            &cb[cb.rfind(':').unwrap() + 1..cb.rfind('/').unwrap()]
        ),
    ] {
        let r = hub.subscribe(&publisher.topic("/t"), &callback).await;
        assert_eq!(r.status(), 202, "policy is applied after the answer");
    }
    hub.wait_intents_done().await;
    assert!(
        sub.requests().is_empty(),
        "a loopback callback must not be contacted"
    );
    assert_eq!(
        hub.store()
            .subs
            .count_for_topic(&publisher.topic("/t"))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn topic_fetches_have_their_own_policy() {
    // Callbacks may reach loopback, topics may not: the topic is never fetched.
    let hub = spawn_hub_with("[ssrf]\ntopic_allow = []").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/t");
    publisher.set("/t", "text/plain", "secret internal data");
    hub.subscribe(&topic, &sub.callback("/cb")).await;
    // Subscribing to a topic the hub may not fetch is denied.
    let v = sub.wait_verifications(1).await;
    assert_eq!(v[0].param("hub.mode"), Some("denied"));
    assert!(v[0].param("hub.reason").unwrap().contains("not fetchable"));
    hub.wait_intents_done().await;
    assert!(
        hub.store()
            .subs
            .get(&topic, &sub.callback("/cb"))
            .await
            .unwrap()
            .is_none()
    );
    // Even with a subscription in place, the fetch is refused.
    let s = hubcast::storage::Subscription {
        topic: topic.clone(),
        callback: sub.callback("/cb"),
        destination: hubcast::urls::HttpUrl::parse(&sub.callback("/cb"))
            .unwrap()
            .destination(),
        secret: None,
        lease_seconds: 60,
        expires_ms: u64::MAX / 2,
        created_ms: 0,
    };
    hub.store().subs.upsert(s).await.unwrap();
    hub.publish(&topic).await;
    hub.wait_pings_done().await;
    assert!(publisher.fetches().is_empty());
    let last = hub.last_fetch(&topic).await;
    assert!(last.contains("blocked"), "{last}");
    assert!(sub.deliveries().is_empty());
}

#[tokio::test]
async fn topics_outside_the_allowed_prefixes_are_denied() {
    let hub = spawn_hub_with("[subscriptions]\nallowed_topics = [\"https://blog.example/\"]").await;
    let sub = Subscriber::start().await;
    let cb = sub.callback("/cb?x=1");
    hub.subscribe("http://127.0.0.1:1/other", &cb).await;
    let v = sub.wait_verifications(1).await;
    assert_eq!(v[0].param("hub.mode"), Some("denied"));
    assert_eq!(v[0].param("hub.topic"), Some("http://127.0.0.1:1/other"));
    assert!(v[0].param("hub.reason").is_some());
    assert_eq!(
        v[0].param("x"),
        Some("1"),
        "the callback's own query is kept"
    );
    hub.wait_intents_done().await;
    assert!(
        hub.store()
            .subs
            .get("http://127.0.0.1:1/other", &cb)
            .await
            .unwrap()
            .is_none()
    );
}
