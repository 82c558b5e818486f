//! Atom and RSS topics deliver only new or changed entries; JSON Feed is delivered whole.

use std::str::FromStr;

use crate::helpers::*;

#[tokio::test]
async fn atom_delivers_only_new_and_changed_entries() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/atom");
    let ct = "application/atom+xml; charset=utf-8";
    let v1 = atom(&[("urn:2", "Second"), ("urn:1", "First")]);
    publisher.set("/atom", ct, v1.clone());
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(1).await;
    assert_eq!(
        String::from_utf8(d[0].body.clone()).unwrap(),
        v1,
        "first delivery: the whole feed"
    );

    publisher.set(
        "/atom",
        ct,
        atom(&[
            ("urn:3", "Third"),
            ("urn:2", "Second, edited"),
            ("urn:1", "First"),
        ]),
    );
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(2).await;
    assert_eq!(d[1].header("content-type"), Some(ct));
    let body = String::from_utf8(d[1].body.clone()).unwrap();
    let feed = atom_syndication::Feed::from_str(&body).expect("a valid Atom document");
    let ids: Vec<&str> = feed.entries().iter().map(|e| e.id()).collect();
    assert_eq!(ids, ["urn:3", "urn:2"]);
    assert_eq!(feed.id(), "urn:blog");
    assert_eq!(feed.title().as_str(), "Blog");
    assert!(body.contains("xmlns:media=\"http://search.yahoo.com/mrss/\""));
    assert!(
        body.contains("<media:thumbnail url=\"http://x/urn:3.png\"/>"),
        "entries copied byte for byte"
    );
}

#[tokio::test]
async fn rss_delivers_only_new_items() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/rss");
    let rss = |items: &[&str]| {
        let mut s = String::from(
            "<?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel><title>News</title><link>http://n/</link>\n",
        );
        for i in items {
            s.push_str(&format!(
                "<item><guid>{i}</guid><title>{i}</title></item>\n"
            ));
        }
        s + "</channel></rss>\n"
    };
    publisher.set("/rss", "application/rss+xml", rss(&["a"]));
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    sub.wait_deliveries(1).await;
    publisher.set("/rss", "application/rss+xml", rss(&["b", "a"]));
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(2).await;
    let body = String::from_utf8(d[1].body.clone()).unwrap();
    assert!(
        body.contains("<guid>b</guid>") && !body.contains("<guid>a</guid>"),
        "{body}"
    );
    assert!(body.contains("<title>News</title><link>http://n/</link>"));
    assert!(body.trim_end().ends_with("</channel></rss>"));
}

#[tokio::test]
async fn json_feed_is_delivered_whole() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/feed.json");
    let doc = |ids: &[&str]| {
        let items: Vec<String> = ids
            .iter()
            .map(|i| format!("{{\"id\":\"{i}\",\"content_text\":\"{i}\"}}"))
            .collect();
        format!(
            "{{\"version\":\"https://jsonfeed.org/version/1.1\",\"title\":\"J\",\"items\":[{}]}}",
            items.join(",")
        )
    };
    publisher.set("/feed.json", "application/feed+json", doc(&["1"]));
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    sub.wait_deliveries(1).await;
    let v2 = doc(&["2", "1"]);
    publisher.set("/feed.json", "application/feed+json", v2.clone());
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(2).await;
    assert_eq!(String::from_utf8(d[1].body.clone()).unwrap(), v2);
}

#[tokio::test]
async fn json_feed_item_diffing_is_an_opt_in() {
    let hub = spawn_hub_with("[diff]\njson_feed_items = true").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/f");
    let v1 = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[{"id":"1"}]}"#;
    let v2 = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[{"id":"2"},{"id":"1"}]}"#;
    publisher.set("/f", "application/feed+json", v1);
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    sub.wait_deliveries(1).await;
    publisher.set("/f", "application/feed+json", v2);
    hub.publish(&topic).await;
    let d = sub.wait_deliveries(2).await;
    let v: serde_json::Value = serde_json::from_slice(&d[1].body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["id"], "2");
}

#[tokio::test]
async fn feeds_declaring_entities_are_refused() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/bomb");
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE f [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>&b;</title></feed>";
    publisher.set("/bomb", "application/atom+xml", bomb);
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    hub.publish(&topic).await;
    publisher.wait_fetches(1).await;
    hub.wait_pings_done().await;
    hub.wait_jobs_done().await;
    assert!(sub.deliveries().is_empty());
    let last = hub.last_fetch(&topic).await;
    assert!(last.contains("refused"), "{last}");
}
