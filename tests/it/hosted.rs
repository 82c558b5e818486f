//! Hosted topics: the hub as the publisher of `/t/{name}`. Real subscribers on loopback get
//! what the owner posts; the feed pages back (RFC 5005) to the first entry, walked by Python's
//! feedparser; `hub.mode=retrieve` pages by number and id and says `410` below the trail.

use std::str::FromStr;

use atom_syndication::Feed;

use crate::helpers::*;

const TOKEN: &str = "owner-token-0123456789";
const ADMIN: &str = "admin-token-for-tests";

fn hosted_config(page_size: usize, max_entries: u64) -> String {
    format!(
        "[hosted]\nenabled = true\npage_size = {page_size}\nmax_entries = {max_entries}\n[webfinger]\nenabled = true\n[admin]\ntoken = \"{ADMIN}\"\n"
    )
}

async fn create(hub: &TestHub, name: &str) {
    let title = format!("{name}'s notes");
    let body = serde_json::json!({"name": name, "token": TOKEN, "title": title});
    hub.create_hosted_topic(ADMIN, body).await;
}

/// Posts form fields as the owner; the JSON answer.
async fn post_form(hub: &TestHub, name: &str, fields: &[(&str, &str)]) -> serde_json::Value {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let r = hub
        .client
        .post(format!("{}t/{name}", hub.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(status == 201 || status == 200, "{status}: {v}");
    v
}

fn atom_of(body: &[u8]) -> Feed {
    Feed::from_str(std::str::from_utf8(body).unwrap()).expect("an Atom feed")
}

#[tokio::test]
async fn a_short_message_posted_reaches_websub_subscribers_of_both_formats_and_stays_in_history() {
    let hub = spawn_hub_with(&hosted_config(20, 0)).await;
    create(&hub, "b").await;
    let sub = Subscriber::start().await;
    let topic = format!("{}t/b", hub.url);
    let json_topic = format!("{}t/b.json", hub.url);
    hub.subscribed(&topic, &sub.callback("/atom")).await;
    hub.subscribed(&json_topic, &sub.callback("/json")).await;

    let posted = post_form(
        &hub,
        "b",
        &[
            ("content", "hello, followers"),
            ("in_reply_to", "tag:x,2026:1"),
        ],
    )
    .await;
    assert_eq!(posted["changed"], true);
    let key = posted["key"].as_str().unwrap().to_owned();
    let id = posted["id"].as_str().unwrap().to_owned();
    assert_eq!(id, format!("{}t/b/{key}", hub.url));

    let got = sub.wait_deliveries(2).await;
    let atom = got
        .iter()
        .find(|r| r.path() == "/atom")
        .expect("Atom delivery");
    let feed = atom_of(&atom.body);
    assert_eq!(feed.entries.len(), 1);
    let e = &feed.entries[0];
    assert_eq!(e.id, id);
    assert_eq!(
        e.content.as_ref().unwrap().value.as_deref(),
        Some("hello, followers")
    );
    let thr = &e.extensions["thr"]["in-reply-to"][0];
    assert_eq!(thr.attrs["ref"], "tag:x,2026:1");
    assert!(
        feed.links
            .iter()
            .any(|l| l.rel == "hub" && l.href == hub.url)
    );
    assert!(
        atom.header("link")
            .unwrap()
            .contains(&format!("<{topic}>; rel=\"self\""))
    );
    let json = got
        .iter()
        .find(|r| r.path() == "/json")
        .expect("JSON Feed delivery");
    let doc: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(doc["items"][0]["id"], id.as_str());
    assert_eq!(doc["items"][0]["content_text"], "hello, followers");
    assert_eq!(doc["hubs"][0]["url"], hub.url.as_str());

    // The feed itself, for readers, with its hub.
    let r = hub.client.get(&topic).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["link"]
            .to_str()
            .unwrap()
            .contains("rel=\"hub\"")
    );
    let feed = atom_of(&r.bytes().await.unwrap());
    assert_eq!(feed.entries[0].id, id);
    // The entry's page, and its Atom entry document.
    let page = hub.get_text(&format!("t/b/{key}")).await;
    assert!(page.contains("hello, followers"), "{page}");
    // History by retrieve.
    let r = hub
        .client
        .get(format!(
            "{}?hub.mode=retrieve&hub.topic={topic}&format=json",
            hub.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["items"][0]["_hubcast"]["seq"], 1);
}

#[tokio::test]
async fn owners_edit_and_delete_entries_and_subscribers_see_both() {
    let hub = spawn_hub_with(&hosted_config(20, 0)).await;
    create(&hub, "blog").await;
    let sub = Subscriber::start().await;
    let topic = format!("{}t/blog", hub.url);
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    let entry = |title: &str| {
        format!(
            r#"<entry xmlns="http://www.w3.org/2005/Atom"><id>tag:blog.example,2026:post-1</id><title>{title}</title><updated>2026-12-01T10:00:00Z</updated><content type="html">&lt;p onclick="x()"&gt;Body&lt;/p&gt;&lt;script&gt;bad()&lt;/script&gt;</content><link rel="alternate" href="https://blog.example/post-1"/></entry>"#
        )
    };
    let post = |body: String| {
        hub.client
            .post(&topic)
            .bearer_auth(TOKEN)
            .header("content-type", "application/atom+xml")
            .body(body)
            .send()
    };
    let r = post(entry("First")).await.unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same entry again is no new version.
    let r = post(entry("First")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["changed"],
        false
    );
    // A new version, by id.
    let r = post(entry("First, edited")).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["key"].as_str().unwrap(), v["seq"].as_u64().unwrap()),
        (key.as_str(), 2),
        "the resend made no version"
    );
    // (A subscriber that is behind may get versions merged into one delivery.)
    let got = sub
        .wait("the edited version", |r| {
            r.iter()
                .any(|d| String::from_utf8_lossy(&d.body).contains("First, edited"))
        })
        .await;
    let edited = got
        .iter()
        .filter(|d| d.method == "POST")
        .map(|d| atom_of(&d.body))
        .flat_map(|f| f.entries)
        .find(|e| e.title.value == "First, edited")
        .unwrap();
    assert_eq!(edited.id, "tag:blog.example,2026:post-1");
    // Sanitised once, when taken.
    assert_eq!(
        edited.content.as_ref().unwrap().value.as_deref(),
        Some("<p>Body</p>")
    );

    // PUT by key, then DELETE.
    let r = hub
        .client
        .put(format!("{topic}/{key}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"title": "Third take", "content_text": "plain now"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = hub
        .client
        .delete(format!("{topic}/{key}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let got = sub
        .wait("the deletion", |r| {
            r.iter()
                .any(|d| String::from_utf8_lossy(&d.body).contains("at:deleted-entry"))
        })
        .await;
    let tomb = got
        .iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .find(|b| b.contains("at:deleted-entry"))
        .unwrap();
    assert!(
        tomb.contains("at:deleted-entry") && tomb.contains("ref=\"tag:blog.example,2026:post-1\""),
        "{tomb}"
    );
    let feed = atom_of(
        &hub.client
            .get(&topic)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    );
    assert!(feed.entries.is_empty(), "deleted entries leave the history");
    let r = hub
        .client
        .get(format!("{topic}/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn writes_without_the_owners_credentials_or_with_bad_bodies_are_refused_with_reasons() {
    let hub = spawn_hub_with(&hosted_config(20, 0)).await;
    create(&hub, "b").await;
    let topic = format!("{}t/b", hub.url);
    let send = |auth: Option<&str>, ct: &str, body: &str| {
        let mut req = hub
            .client
            .post(&topic)
            .header("content-type", ct)
            .body(body.to_owned());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(Option<String>, &str, String, u16, &str)> = vec![
        (None, form, "content=x".into(), 401, "Authorization"),
        (
            Some("Bearer wrong-token-0123456789".into()),
            form,
            "content=x".into(),
            403,
            "credentials",
        ),
        (
            Some(format!("Bearer {TOKEN}")),
            form,
            "content=".into(),
            400,
            "neither a title nor content",
        ),
        (
            Some(format!("Bearer {TOKEN}")),
            form,
            "colour=red".into(),
            400,
            "unknown field",
        ),
        (
            Some(format!("Bearer {TOKEN}")),
            "text/csv",
            "a,b".into(),
            415,
            "media type",
        ),
        (
            Some(format!("Bearer {TOKEN}")),
            "application/atom+xml",
            "<nope".into(),
            400,
            "not an Atom entry",
        ),
        (
            Some(format!("Bearer {TOKEN}")),
            form,
            format!("content={}", "x".repeat(70_000)),
            413,
            "hosted.max_entry_bytes",
        ),
    ];
    for (auth, ct, body, status, reason) in cases {
        let r = send(auth.as_deref(), ct, &body).await.unwrap();
        assert_eq!(r.status(), status, "{ct} {}", &body[..body.len().min(40)]);
        let text = r.text().await.unwrap();
        assert!(text.contains(reason), "{text}");
    }
    // A signature with the token as the secret is a credential too.
    let body = "content=signed";
    let sig = hubcast::signature::sign(
        hubcast::signature::Algorithm::Sha256,
        TOKEN.as_bytes(),
        body.as_bytes(),
    );
    let r = hub
        .client
        .post(&topic)
        .header("content-type", form)
        .header("x-hub-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = hub
        .client
        .get(format!("{}t/nobody", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Deleting needs the bearer token: a signature over an empty body could be replayed.
    let empty_sig =
        hubcast::signature::sign(hubcast::signature::Algorithm::Sha256, TOKEN.as_bytes(), b"");
    let r = hub
        .client
        .delete(format!("{topic}/{key}"))
        .header("x-hub-signature", empty_sig)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Pings for a hosted topic would have the hub fetch itself: its owner posts instead.
    let r = hub.publish(&topic).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("hosts"));
    // A second topic of the same name is a conflict; a bad name or token a 400.
    for (body, status) in [
        (serde_json::json!({"name": "b", "token": TOKEN}), 409),
        (serde_json::json!({"name": "B.x", "token": TOKEN}), 400),
        (serde_json::json!({"name": "c", "token": "short"}), 400),
    ] {
        let r = hub
            .client
            .post(format!("{}admin/api/hosted-topics", hub.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
}

#[tokio::test]
async fn hosted_topics_are_off_unless_switched_on() {
    let hub = spawn_hub().await;
    let r = hub
        .client
        .get(format!("{}t/b", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("hosted.enabled"));
}

#[tokio::test]
async fn feedparser_walks_the_archive_pages_back_to_the_first_entry() {
    let hub = spawn_hub_with(&hosted_config(5, 0)).await;
    create(&hub, "long").await;
    let mut ids = Vec::new();
    for i in 1..=23 {
        let v = post_form(
            &hub,
            "long",
            &[("title", &format!("entry {i}")), ("content", "x")],
        )
        .await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let script = r#"
import sys, feedparser
url = sys.argv[1]
seen, pages = [], 0
while url and pages < 50:
    d = feedparser.parse(url)
    if d.bozo and not d.entries:
        sys.exit("cannot parse %s: %s" % (url, d.bozo_exception))
    pages += 1
    seen += [e.id for e in d.entries if e.id not in seen]
    url = next((l.href for l in d.feed.get("links", []) if l.rel == "prev-archive"), None)
print(pages)
for i in seen:
    print(i)
"#;
    let topic = format!("{}t/long", hub.url);
    let out = python3()
        .args(["-c", script, &topic])
        .output()
        .await
        .expect("python3 runs (the suite needs python3-feedparser)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let pages: usize = lines.next().unwrap().parse().unwrap();
    let mut seen: Vec<String> = lines.map(str::to_owned).collect();
    // The current document and four complete archive pages (1–5 … 16–20).
    assert_eq!(pages, 5, "{text}");
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "every entry, back to the first");
    // Archive pages are marked as such and link both ways.
    let page2 = hub.get_text("t/long?page=2").await;
    assert!(
        page2.contains("fh:archive") && page2.contains("page=1") && page2.contains("page=3"),
        "{page2}"
    );
    let r = hub
        .client
        .get(format!("{topic}?page=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "page 5 is not complete yet");
    // The JSON Feed pages back with next_url.
    let mut url = Some(format!("{topic}.json"));
    let mut json_ids = Vec::new();
    while let Some(u) = url {
        let doc: serde_json::Value = hub
            .client
            .get(&u)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in doc["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_owned();
            if !json_ids.contains(&id) {
                json_ids.push(id);
            }
        }
        url = doc["next_url"].as_str().map(str::to_owned);
    }
    json_ids.sort();
    assert_eq!(json_ids, want);
}

#[tokio::test]
async fn retrieve_pages_by_number_and_id_and_answers_gone_below_the_trail() {
    let hub = spawn_hub_with(&hosted_config(20, 5)).await;
    create(&hub, "s").await;
    let topic = format!("{}t/s", hub.url);
    let mut ids = Vec::new();
    for i in 1..=12 {
        let v = post_form(&hub, "s", &[("content", &format!("message {i}"))]).await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let retrieve = |q: String| {
        let url = format!(
            "{}?hub.mode=retrieve&hub.topic={}&{q}",
            hub.url,
            url::form_urlencoded::byte_serialize(topic.as_bytes()).collect::<String>()
        );
        hub.client.get(url).send()
    };
    let entries = |body: &[u8]| -> Vec<String> {
        atom_of(body).entries.iter().map(|e| e.id.clone()).collect()
    };
    // Before retention: everything, newest first.
    let r = retrieve("count=3".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        entries(&r.bytes().await.unwrap()),
        vec![ids[11].clone(), ids[10].clone(), ids[9].clone()]
    );
    let r = retrieve("after=seq:2&count=2".into()).await.unwrap();
    assert_eq!(
        entries(&r.bytes().await.unwrap()),
        vec![ids[3].clone(), ids[2].clone()]
    );
    let before = url::form_urlencoded::byte_serialize(ids[5].as_bytes()).collect::<String>();
    let r = retrieve(format!("before={before}&count=2")).await.unwrap();
    assert_eq!(
        entries(&r.bytes().await.unwrap()),
        vec![ids[4].clone(), ids[3].clone()]
    );
    let r = retrieve("count=500".into()).await.unwrap();
    assert_eq!(
        entries(&r.bytes().await.unwrap()).len(),
        12,
        "count is capped at 50, not refused"
    );
    for (q, status) in [
        ("count=0", 400),
        ("count=x", 400),
        ("format=rss", 400),
        ("after=seq:x", 400),
        ("after=urn:nothing", 404),
    ] {
        let r = retrieve(q.into()).await.unwrap();
        assert_eq!(r.status(), status, "{q}");
    }
    // Retention keeps the newest 5: numbers 8–12.
    hub.running().engine.sweep_now().await.unwrap();
    let r = retrieve("after=seq:3".into()).await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("history starts at seq:8"));
    let r = retrieve("after=seq:7".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(entries(&r.bytes().await.unwrap()).len(), 5);
    let r = hub
        .client
        .get(format!(
            "{}?hub.mode=retrieve&hub.topic=http://elsewhere.example/feed",
            hub.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_operator_command_creates_a_topic_on_a_stopped_hubs_store() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("hub.toml");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndata_dir = {:?}\n[hosted]\nenabled = true\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = hubcast_binary()
        .args([
            "topic", "create", "notes", "--token", TOKEN, "--title", "Notes", "--config",
        ])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = hubcast_binary()
        .args(["topic", "create", "notes", "--token", TOKEN, "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let bad = hubcast_binary()
        .args(["topic", "create", "Not Valid", "--token", TOKEN, "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a topic name"));
    let list = hubcast_binary()
        .args(["topic", "list", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        (line["name"].as_str(), line["title"].as_str()),
        (Some("notes"), Some("Notes"))
    );

    // The hub serves it.
    let cfg = config_on(&dir, persistent_backend(), &hosted_config(20, 0));
    let hub = start_in(dir, cfg).await;
    let v = post_form(&hub, "notes", &[("content", "first")]).await;
    assert_eq!(v["seq"], 1);
}
