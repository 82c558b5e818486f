//! Fat pings: the publisher pushes the content, authenticated; no topic fetch.

use hubcast::signature::{Algorithm, sign};

use crate::helpers::*;

const PUBLISHERS: &str = r#"
[[publishers]]
name = "blog"
topics = ["http://127.0.0.1:1/blog/"]
secret = "publisher-secret"

[[publishers]]
name = "tokens"
topics = ["http://127.0.0.1:1/tok/"]
token = "t0ken"
"#;

async fn fat(
    hub: &TestHub,
    topic: &str,
    ct: &str,
    body: &str,
    headers: &[(&str, String)],
) -> reqwest::Response {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("hub.mode", "publish"), ("hub.url", topic)])
        .finish();
    let mut req = hub
        .client
        .post(format!("{}?{q}", hub.url))
        .header("content-type", ct)
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn signed_fat_ping_is_distributed_without_a_fetch() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/blog/feed";
    hub.subscribed(topic, &sub.callback("/cb")).await;
    let body = "{\"hello\":\"world\"}";
    let sig = sign(Algorithm::Sha256, b"publisher-secret", body.as_bytes());
    let r = fat(
        &hub,
        topic,
        "application/json; charset=utf-8",
        body,
        &[("x-hub-signature", sig)],
    )
    .await;
    assert_eq!(r.status(), 202);
    let d = sub.wait_deliveries(1).await;
    assert_eq!(d[0].body, body.as_bytes());
    assert_eq!(
        d[0].header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(
        d[0].header("link")
            .unwrap()
            .contains(&format!("<{topic}>; rel=\"self\""))
    );
}

#[tokio::test]
async fn bearer_token_fat_ping() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/tok/x";
    hub.subscribed(topic, &sub.callback("/cb")).await;
    let r = fat(
        &hub,
        topic,
        "text/plain",
        "pushed",
        &[("authorization", "Bearer t0ken".into())],
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(sub.wait_deliveries(1).await[0].body, b"pushed");
}

#[tokio::test]
async fn unauthenticated_fat_pings_are_refused_and_deliver_nothing() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/blog/feed";
    hub.subscribed(topic, &sub.callback("/cb")).await;
    let r = fat(&hub, topic, "text/plain", "evil", &[]).await;
    assert_eq!(r.status(), 401);
    let bad = sign(Algorithm::Sha256, b"wrong-secret", b"evil");
    let r = fat(
        &hub,
        topic,
        "text/plain",
        "evil",
        &[("x-hub-signature", bad)],
    )
    .await;
    assert_eq!(r.status(), 403);
    // A signature over other content does not carry over.
    let other = sign(Algorithm::Sha256, b"publisher-secret", b"good");
    let r = fat(
        &hub,
        topic,
        "text/plain",
        "evil",
        &[("x-hub-signature", other)],
    )
    .await;
    assert_eq!(r.status(), 403);
    // The token publisher cannot push to the blog's topics.
    let r = fat(
        &hub,
        topic,
        "text/plain",
        "evil",
        &[("authorization", "Bearer t0ken".into())],
    )
    .await;
    assert_eq!(r.status(), 403);
    // Nor anyone to a topic no publisher covers.
    let r = fat(
        &hub,
        "http://127.0.0.1:1/other",
        "text/plain",
        "evil",
        &[("authorization", "Bearer t0ken".into())],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(
        hub.store().publish.pings().await.unwrap().is_empty(),
        "nothing was stored"
    );
    assert!(sub.deliveries().is_empty());
}

#[tokio::test]
async fn fat_ping_feeds_are_diffed_too() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/blog/atom";
    hub.subscribed(topic, &sub.callback("/cb")).await;
    let feed = |ids: &[&str]| {
        let e: String = ids
            .iter()
            .map(|i| format!("<entry><id>{i}</id></entry>"))
            .collect();
        format!("<feed xmlns=\"http://www.w3.org/2005/Atom\"><id>f</id>{e}</feed>")
    };
    for (n, ids) in [(1, vec!["a"]), (2, vec!["b", "a"])] {
        let body = feed(&ids);
        let sig = sign(Algorithm::Sha256, b"publisher-secret", body.as_bytes());
        let r = fat(
            &hub,
            topic,
            "application/atom+xml",
            &body,
            &[("x-hub-signature", sig)],
        )
        .await;
        assert_eq!(r.status(), 202);
        sub.wait_deliveries(n).await;
    }
    let d = sub.deliveries();
    assert_eq!(String::from_utf8(d[1].body.clone()).unwrap(), feed(&["b"]));
}

const LOOPBACK_PUBLISHER: &str = r#"
[[publishers]]
name = "loop"
topics = ["http://127.0.0.1"]
token = "loop-token"
secret = "loop-secret"
"#;

#[tokio::test]
async fn topic_prefixes_match_on_url_boundaries() {
    let hub = spawn_hub_with(LOOPBACK_PUBLISHER).await;
    let bearer = [("authorization", "Bearer loop-token".to_owned())];
    for outside in [
        "http://127.0.0.10/feed",
        "http://127.0.0.1.evil.example/feed",
        "https://127.0.0.1/feed",
    ] {
        let r = fat(&hub, outside, "text/plain", "x", &bearer).await;
        assert_eq!(r.status(), 403, "{outside}");
    }
    let r = fat(&hub, "http://127.0.0.1:8080/a", "text/plain", "x", &bearer).await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn every_credential_sent_must_hold() {
    let hub = spawn_hub_with(LOOPBACK_PUBLISHER).await;
    let topic = "http://127.0.0.1:1/both";
    let right = sign(Algorithm::Sha256, b"loop-secret", b"x");
    let wrong = sign(Algorithm::Sha256, b"not-the-secret", b"x");
    let token = ("authorization", "Bearer loop-token".to_owned());
    let r = fat(
        &hub,
        topic,
        "text/plain",
        "x",
        &[token.clone(), ("x-hub-signature", wrong)],
    )
    .await;
    assert_eq!(r.status(), 403, "a wrong signature next to a right token");
    let r = fat(
        &hub,
        topic,
        "text/plain",
        "x",
        &[
            ("authorization", "Bearer wrong".into()),
            ("x-hub-signature", right.clone()),
        ],
    )
    .await;
    assert_eq!(r.status(), 403, "a wrong token next to a right signature");
    let r = fat(
        &hub,
        topic,
        "text/plain",
        "x",
        &[token, ("x-hub-signature", right)],
    )
    .await;
    assert_eq!(r.status(), 202, "both right");
}

#[tokio::test]
async fn content_the_hub_will_not_distribute_is_refused_at_once() {
    let hub = spawn_hub_with(PUBLISHERS).await;
    let sub = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/tok/feed";
    hub.subscribed(topic, &sub.callback("/cb")).await;
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE f [<!ENTITY a \"aaaaaaaaaa\">]>\
                <feed xmlns=\"http://www.w3.org/2005/Atom\"><title>&a;</title></feed>";
    let r = fat(
        &hub,
        topic,
        "application/atom+xml",
        bomb,
        &[("authorization", "Bearer t0ken".into())],
    )
    .await;
    assert_eq!(r.status(), 422);
    let why = r.text().await.unwrap();
    assert!(why.contains("will not be distributed"), "{why}");
    assert!(hub.last_fetch(topic).await.starts_with("refused"));
    assert!(sub.deliveries().is_empty());
}
