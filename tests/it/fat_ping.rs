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
