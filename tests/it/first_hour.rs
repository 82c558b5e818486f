//! A new user's local trial without `--allow-cidr`: the SSRF guard's refusals are visible where
//! the user looks (the topic's and the callback's lookups, with the reason and the setting that
//! would allow it), not only in a log line.

use serde_json::Value;

use crate::helpers::*;

/// A hub with the shipped SSRF defaults (nothing allow-listed), plus `extra`.
async fn hub_with_default_guard(extra: &str) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!(
        "{}\ncache_capacity = \"8MiB\"",
        storage_section(&dir.path().join("data"), backend())
    );
    let cfg = hubcast::config::Config::from_toml_layers(&[&storage, extra]).unwrap();
    start_in(dir, cfg).await
}

async fn lookup(hub: &TestHub, what: &str, url: &str) -> Value {
    let q: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    let r = hub
        .client
        .get(format!("{}admin/api/{what}?{what}={q}", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn first_verification(hub: &TestHub, what: &str, url: &str) -> Value {
    poll_until("the verification to be shown", PATIENCE, || async {
        let v = lookup(hub, what, url).await;
        v["recent_verifications"].get(0).cloned()
    })
    .await
}

#[tokio::test]
async fn a_loopback_topic_is_denied_and_both_lookups_say_why() {
    let hub = hub_with_default_guard("").await;
    let sub = Subscriber::start().await;
    let (topic, callback) = ("http://127.0.0.1:1/feed", sub.callback("/cb"));
    assert_eq!(hub.subscribe(topic, &callback).await.status(), 202);
    let v = first_verification(&hub, "topic", topic).await;
    assert_eq!(v["outcome"], "denied", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("not fetchable"),
        "{v}"
    );
    let hint = v["hint"].as_str().unwrap();
    assert!(
        hint.contains("ssrf.topic_allow") && hint.contains("--allow-cidr"),
        "{hint}"
    );
    let v = first_verification(&hub, "callback", &callback).await;
    assert_eq!(v["outcome"], "denied");
    assert!(
        sub.requests().is_empty(),
        "the loopback callback is not called either"
    );
}

#[tokio::test]
async fn a_loopback_callback_fails_as_blocked_with_the_setting_that_allows_it() {
    let hub = hub_with_default_guard("[ssrf]\ntopic_allow = [\"127.0.0.0/8\"]").await;
    let sub = Subscriber::start().await;
    let (topic, callback) = ("http://127.0.0.1:1/feed", sub.callback("/cb"));
    assert_eq!(hub.subscribe(topic, &callback).await.status(), 202);
    let v = first_verification(&hub, "callback", &callback).await;
    assert_eq!(v["outcome"], "failed", "{v}");
    assert_eq!(v["class"], "blocked", "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("ssrf.callback_allow"),
        "{v}"
    );
    // The page shows it too.
    let q: String = url::form_urlencoded::byte_serialize(callback.as_bytes()).collect();
    let html = hub.get_text(&format!("admin/callback?callback={q}")).await;
    assert!(html.contains("Last verifications") && html.contains("ssrf.callback_allow"));
    assert!(sub.requests().is_empty());
}
