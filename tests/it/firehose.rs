//! The peer firehose as peers read it: `/relay/stream` and `/relay/events` for hubs listed in
//! `[[peers]]` (authentication, grants, ranges, the trail). Followers are in `followers.rs`.

use base64::Engine as _;
use hubcast::relay::wire::{self, EventLine, Line};

use crate::helpers::*;

pub(crate) const PUBLISHER_TOKEN: &str = "publisher-token-0123";
pub(crate) const PEER_TOKEN: &str = "peer-token-for-b-0123";

pub(crate) fn publisher() -> String {
    format!(
        "[[publishers]]\nname = \"pub\"\ntoken = \"{PUBLISHER_TOKEN}\"\ntopics = [\"http://127.0.0.1\"]\n"
    )
}

pub(crate) fn peer(name: &str, token: &str, prefix: &str) -> String {
    format!("[[peers]]\nname = \"{name}\"\ntoken = \"{token}\"\ntopics = [\"{prefix}\"]\n")
}

pub(crate) fn upstream(url: &str, token: &str) -> String {
    format!("[[upstreams]]\nurl = \"{url}\"\ntoken = \"{token}\"\n")
}

pub(crate) const FAST_BEATS: &str = "[relay]\nheartbeat = \"50ms\"\nreconnect_max = \"500ms\"\n";

/// Reads a stream's lines as they come.
struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Lines {
    async fn open(url: &str, token: &str) -> Result<Lines, reqwest::Response> {
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            return Err(resp);
        }
        assert_eq!(
            resp.headers()["content-type"],
            "application/vnd.hubcast.stream.v1+jsonl"
        );
        Ok(Lines {
            resp,
            buf: Vec::new(),
        })
    }

    async fn next(&mut self) -> Line {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return wire::parse(&line[..i]).expect("a stream line");
            }
            let chunk = tokio::time::timeout(PATIENCE, self.resp.chunk())
                .await
                .expect("the stream goes on")
                .unwrap()
                .expect("the stream stays open");
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Events up to the first heartbeat whose position reaches `lead`.
    async fn events_until(&mut self, lead: u64) -> Vec<EventLine> {
        let mut events = Vec::new();
        loop {
            match self.next().await {
                Line::Event(e) => events.push(e),
                Line::Heartbeat { heartbeat } if heartbeat.position >= lead => return events,
                Line::Heartbeat { .. } => {}
            }
        }
    }
}

fn content(e: &EventLine) -> String {
    String::from_utf8(e.body().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn peers_read_the_stream_and_ranges_of_what_they_may_read() {
    let hub = spawn_hub_with(&format!(
        "{FAST_BEATS}{}{}",
        publisher(),
        peer("b", PEER_TOKEN, "http://127.0.0.1:1/open/")
    ))
    .await;
    let stream = format!("{}relay/stream", hub.url);
    // Strangers are refused, with the reason.
    let r = reqwest::get(&stream).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = Lines::open(&stream, "not-a-peer-token-at-all")
        .await
        .err()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("[[peers]]"));
    // A closed topic with a subscriber here, an open one without: the open one still becomes
    // events (the peer follows it), the closed one never reaches the peer.
    let sub = Subscriber::start().await;
    hub.subscribed("http://127.0.0.1:1/closed/x", &sub.callback("/cb"))
        .await;
    for (topic, body) in [
        ("http://127.0.0.1:1/open/a", "one"),
        ("http://127.0.0.1:1/closed/x", "secret"),
        ("http://127.0.0.1:1/open/a", "two"),
    ] {
        assert_eq!(
            hub.fat_ping(topic, PUBLISHER_TOKEN, body).await.status(),
            202
        );
    }
    let mut lines = Lines::open(&format!("{stream}?after=0"), PEER_TOKEN)
        .await
        .unwrap();
    let got = lines.events_until(3).await;
    let shape: Vec<(u64, String)> = got.iter().map(|e| (e.seq, content(e))).collect();
    assert_eq!(shape, [(1, "one".to_owned()), (3, "two".to_owned())]);
    let me = hub.store().log.hub_id();
    assert_eq!(got[1].path, std::slice::from_ref(&me));
    assert_eq!(
        (got[1].origin.as_str(), got[1].origin_seq, got[1].topic_seq),
        (me.as_str(), 3, 2)
    );
    // Live: a new event arrives on the open stream; heartbeats keep coming while it is quiet.
    hub.fat_ping("http://127.0.0.1:1/open/b", PUBLISHER_TOKEN, "three")
        .await;
    let live = lines.events_until(4).await;
    assert_eq!(content(&live[0]), "three");
    let mut beats = 0;
    while beats < 3 {
        if let Line::Heartbeat { heartbeat } = lines.next().await {
            assert_eq!(
                (heartbeat.lead, heartbeat.trail, heartbeat.position),
                (4, 1, 4)
            );
            beats += 1;
        }
    }
    // Asking for less: a narrower prefix.
    let mut narrow = Lines::open(
        &format!("{stream}?after=0&topic=http://127.0.0.1:1/open/b"),
        PEER_TOKEN,
    )
    .await
    .unwrap();
    let got = narrow.events_until(4).await;
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    // Bad requests.
    let bad = |q: &str| {
        let url = format!("{stream}?{q}");
        async move { Lines::open(&url, PEER_TOKEN).await.err().unwrap() }
    };
    assert_eq!(bad("after=x").await.status(), 400);
    assert_eq!(bad("topic=ftp://x/").await.status(), 400);
    assert_eq!(bad("since=1").await.status(), 400);
    let beyond = bad("after=99").await;
    assert_eq!(beyond.status(), 409);
    assert!(beyond.text().await.unwrap().contains("\"lead\":4"));
    // Ranges: the same lines, how far they got, cacheable once settled.
    let range = |q: &str| {
        let url = format!("{}relay/events?{q}", hub.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(PEER_TOKEN)
                .send()
                .await
                .unwrap()
        }
    };
    let r = range("from=1&to=3").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-hubcast-through"], "3");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let body = r.bytes().await.unwrap();
    let seqs: Vec<u64> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| match wire::parse(l).unwrap() {
            Line::Event(e) => e.seq,
            Line::Heartbeat { .. } => panic!("no heartbeats in a range"),
        })
        .collect();
    assert_eq!(seqs, [1, 3]);
    let r = range("from=2&to=1000").await;
    assert_eq!(r.headers()["x-hubcast-through"], "4", "up to the lead");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(range("from=0&to=3").await.status(), 400);
    assert_eq!(range("from=3&to=2").await.status(), 400);
    assert_eq!(range("from=1").await.status(), 400);
    // The admin API and the metrics count what the peer was sent.
    let relay: serde_json::Value =
        serde_json::from_str(&hub.get_text("admin/api/relay").await).unwrap();
    assert_eq!(relay["peers"][0]["name"], "b");
    assert!(relay["peers"][0]["events_sent"].as_u64().unwrap() >= 6);
    assert_eq!(relay["peers"][0]["streams_open"], 2);
    let metrics = hub.get_text("metrics").await;
    assert!(
        metrics.contains("hubcast_peer_streams_open{peer=\"b\"} 2"),
        "{metrics}"
    );
    drop(lines);
    drop(narrow);
    // The stream's producers notice readers leaving.
    hub.wait_for("the streams to close", || async {
        let relay: serde_json::Value =
            serde_json::from_str(&hub.get_text("admin/api/relay").await).unwrap();
        relay["peers"][0]["streams_open"] == 0
    })
    .await;
}

#[tokio::test]
async fn below_the_trail_a_peer_is_told_where_it_is() {
    let hub = spawn_hub_with(&format!(
        "{FAST_BEATS}{}{}[events]\nmax_bytes = \"4\"\n",
        publisher(),
        peer("b", PEER_TOKEN, "http://127.0.0.1:1/")
    ))
    .await;
    for body in ["aaaa", "bbbb", "cccc"] {
        hub.fat_ping("http://127.0.0.1:1/t", PUBLISHER_TOKEN, body)
            .await;
    }
    let engine = hub.running().engine.clone();
    hub.wait_for("the log's retention to prune", || async {
        engine.sweep_now().await.unwrap();
        engine.log_bounds().await.unwrap().trail == 3
    })
    .await;
    let r = Lines::open(&format!("{}relay/stream?after=0", hub.url), PEER_TOKEN)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status(), 410);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["trail"], 3);
    // Just below the trail is fine.
    let mut ok = Lines::open(&format!("{}relay/stream?after=2", hub.url), PEER_TOKEN)
        .await
        .unwrap();
    assert_eq!(content(&ok.events_until(3).await[0]), "cccc");
    let r = reqwest::Client::new()
        .get(format!("{}relay/events?from=1&to=3", hub.url))
        .bearer_auth(PEER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
}

#[test]
fn base64_is_standard_with_padding() {
    // Other implementations of the format decode `content` as standard base64.
    let e = hubcast::storage::Event {
        body: bytes::Bytes::from_static(b"ab"),
        ..Default::default()
    };
    assert_eq!(
        EventLine::of(&e).content,
        base64::engine::general_purpose::STANDARD.encode(b"ab")
    );
    assert_eq!(EventLine::of(&e).content, "YWI=");
}
