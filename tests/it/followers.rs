//! Followers of `[[upstreams]]`: chains of hubs, mutual peers, a follower below the trail, a
//! follower killed mid-stream, an update reaching a hub by two paths.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;

use hubcast::relay::wire;

use crate::firehose::{FAST_BEATS, PEER_TOKEN, PUBLISHER_TOKEN, peer, publisher, upstream};
use crate::helpers::*;
use crate::process::*;

/// A hub config that follows `up` with `token`, and lets `peer` read everything.
fn follower(up: &str, up_token: &str, peer_name: &str, peer_token: &str) -> String {
    format!(
        "{FAST_BEATS}{}{}",
        upstream(up, up_token),
        peer(peer_name, peer_token, "http://127.0.0.1")
    )
}

/// Events of a hub's log, in order, as the admin API shows them.
async fn log_of(hub: &TestHub) -> Vec<hubcast::storage::EventSummary> {
    hub.store()
        .log
        .summaries(1, u64::MAX, 100_000)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_chain_of_followers_delivers_to_each_hubs_subscribers() {
    // A → B → C: each follows the one before; subscribers on B and C.
    let a = spawn_hub_with(&format!(
        "{FAST_BEATS}{}{}",
        publisher(),
        peer("b", "token-a-gave-b-0123", "http://127.0.0.1")
    ))
    .await;
    let b = spawn_hub_with(&follower(
        &a.url,
        "token-a-gave-b-0123",
        "c",
        "token-b-gave-c-0123",
    ))
    .await;
    let c = spawn_hub_with(&follower(
        &b.url,
        "token-b-gave-c-0123",
        "d",
        "token-c-gave-d-0123",
    ))
    .await;
    let (sb, sc) = (Subscriber::start().await, Subscriber::start().await);
    let topic = "http://127.0.0.1:1/chain";
    b.subscribed(topic, &sb.callback("/b")).await;
    c.subscribed(topic, &sc.callback("/c")).await;
    for n in 1..=20 {
        let body = format!("update {n}");
        assert_eq!(
            a.fat_ping(topic, PUBLISHER_TOKEN, &body).await.status(),
            202
        );
    }
    // Each subscriber gets the updates in order, never one twice; a backlog of the topic may
    // be coalesced into its newest update (whole content), so the last one always arrives.
    for s in [&sb, &sc] {
        let got = s
            .wait("the last update", |r| {
                r.iter()
                    .any(|r| r.method == "POST" && r.body == b"update 20")
            })
            .await;
        let numbers: Vec<u32> = got
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| {
                String::from_utf8_lossy(&r.body)
                    .trim_start_matches("update ")
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    }
    // Every hub's log holds each update once, with its origin's number and the path so far.
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|h| h.store().log.hub_id())
        .collect();
    for (i, hub) in [&a, &b, &c].into_iter().enumerate() {
        let log = log_of(hub).await;
        assert_eq!(log.len(), 20, "hub {i}");
        for (n, e) in log.iter().enumerate() {
            assert_eq!(e.origin, ids[0]);
            assert_eq!(e.origin_seq, n as u64 + 1);
            assert_eq!(e.path, ids[..=i], "hub {i}, event {n}");
        }
    }
    // The deliveries at C carry C's hub link and the topic.
    let d = &sc.deliveries()[0];
    assert!(d.headers_named("link").iter().any(|l| l.contains(&c.url)));
    let relay: serde_json::Value =
        serde_json::from_str(&c.get_text("admin/api/relay").await).unwrap();
    let up = &relay["upstreams"][0];
    assert_eq!(
        (up["state"].as_str(), up["cursor"].as_u64()),
        (Some("streaming"), Some(20))
    );
    assert_eq!(up["events_taken"], 20);
    assert!(
        c.get_text("metrics")
            .await
            .contains("hubcast_upstream_cursor{upstream=")
    );
    assert!(
        c.get_text("").await.contains("id=upstreams"),
        "the status page shows it"
    );
}

#[tokio::test]
async fn mutual_peers_do_not_loop() {
    let (la, lb) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (ua, ub) = (
        format!("http://{}/", la.local_addr().unwrap()),
        format!("http://{}/", lb.local_addr().unwrap()),
    );
    let start = async |listener, up: &str, extra: String| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            &dir,
            &format!(
                "{}{extra}",
                follower(up, "mutual-token-0123456", "peer", "mutual-token-0123456")
            ),
        );
        let store = hubcast::hub::open_storage(&cfg).await.unwrap();
        start_on_listener(dir, cfg, store, listener).await
    };
    let a = start(la, &ub, publisher()).await;
    let b = start(lb, &ua, publisher()).await;
    let (sa, sb) = (Subscriber::start().await, Subscriber::start().await);
    let topic = "http://127.0.0.1:1/both";
    a.subscribed(topic, &sa.callback("/a")).await;
    b.subscribed(topic, &sb.callback("/b")).await;
    a.fat_ping(topic, PUBLISHER_TOKEN, "from a").await;
    b.fat_ping(topic, PUBLISHER_TOKEN, "from b").await;
    // Each subscriber is delivered to; two updates of a topic pending together at a
    // destination may be coalesced into the newer one (text/plain: whole content), so which
    // bodies arrive depends on timing, never more than the two.
    for s in [&sa, &sb] {
        s.wait("an update", |r| r.iter().any(|r| r.method == "POST"))
            .await;
    }
    // Each came back once to where it started and was refused there.
    for hub in [&a, &b] {
        hub.wait_for("the echo to be refused", || async {
            let relay: serde_json::Value =
                serde_json::from_str(&hub.get_text("admin/api/relay").await).unwrap();
            relay["upstreams"][0]["loops_refused"] == 1 && relay["upstreams"][0]["cursor"] == 2
        })
        .await;
        assert_eq!(
            log_of(hub).await.len(),
            2,
            "two events, not an echo chamber"
        );
    }
    for (hub, s) in [(&a, &sa), (&b, &sb)] {
        hub.wait_jobs_done().await;
        let bodies: Vec<String> = s
            .deliveries()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert!(
            !bodies.is_empty()
                && bodies.len() <= 2
                && bodies.iter().all(|b| b == "from a" || b == "from b"),
            "the two updates, or the newer for both, and no echo: {bodies:?}"
        );
    }
}

#[tokio::test]
async fn a_follower_below_the_trail_fetches_its_topics() {
    let a = spawn_hub_with(&format!(
        "{FAST_BEATS}{}{}[events]\nmax_bytes = \"1\"\n",
        publisher(),
        peer("b", PEER_TOKEN, "http://127.0.0.1")
    ))
    .await;
    let origin = Publisher::start().await;
    let topic = origin.topic("/feed");
    origin.set("/feed", "text/plain", "the current state");
    for body in ["old 1", "old 2", "old 3"] {
        a.fat_ping(&topic, PUBLISHER_TOKEN, body).await;
    }
    let engine = a.running().engine.clone();
    a.wait_for("A's log to prune", || async {
        engine.sweep_now().await.unwrap();
        engine.log_bounds().await.unwrap().trail > 2
    })
    .await;
    // B has a subscriber of the topic before it starts following A.
    let sub = Subscriber::start().await;
    let b = spawn_hub_on(persistent_backend(), "").await;
    b.subscribed(&topic, &sub.callback("/cb")).await;
    let dir = b.stop().await;
    let cfg = config_on(
        &dir,
        persistent_backend(),
        &format!("{FAST_BEATS}{}", upstream(&a.url, PEER_TOKEN)),
    );
    let b = start_in(dir, cfg).await;
    let d = sub.wait_deliveries(1).await;
    assert_eq!(
        d[0].body, b"the current state",
        "fetched, as a light ping would"
    );
    assert_eq!(origin.fetches().len(), 1);
    let relay: serde_json::Value =
        serde_json::from_str(&b.get_text("admin/api/relay").await).unwrap();
    assert_eq!(relay["upstreams"][0]["reconciles"], 1);
    assert!(
        b.get_text("metrics")
            .await
            .contains("hubcast_upstream_reconciles_total{upstream=\"127.0.0.1:")
    );
}

/// Process test: B follows A; B is killed with SIGKILL while A publishes 2,000 events and
/// restarted; B's subscriber gets every event and B's log holds each exactly once.
#[tokio::test]
async fn a_follower_killed_midway_loses_and_repeats_nothing() {
    const N: usize = 2_000;
    let a = spawn_hub_with(&format!(
        "{FAST_BEATS}{}{}",
        publisher(),
        peer("b", PEER_TOKEN, "http://127.0.0.1")
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(
        &dir,
        persistent_backend(),
        &format!("{FAST_BEATS}{}", upstream(&a.url, PEER_TOKEN)),
    );
    let sub = Subscriber::start().await;
    let topics: Vec<String> = (0..10)
        .map(|i| format!("http://127.0.0.1:1/stream/{i}"))
        .collect();
    let mut b = start_process(&config).await;
    for t in &topics {
        let form = [
            ("hub.mode", "subscribe"),
            ("hub.topic", t.as_str()),
            ("hub.callback", &sub.callback("/cb")),
        ];
        assert_eq!(post(&b.url, &form).await, 202);
    }
    sub.wait_verifications(topics.len()).await;
    for t in &topics {
        wait_body(
            &format!("{}admin/api/topic?topic={}", b.url, urlencode(t)),
            |body| body.contains("\"subscribers\":1"),
        )
        .await;
    }
    // Each event is an Atom document with one new entry: coalescing keeps every entry.
    let entry = |n: usize| {
        format!(
            "<?xml version=\"1.0\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><id>urn:f</id>\
             <title>f</title><updated>2026-12-02T00:00:00Z</updated><entry><id>urn:e{n}</id>\
             <title>e{n}</title><updated>2026-12-02T00:00:00Z</updated></entry></feed>"
        )
    };
    let publish = {
        let url = a.url.clone();
        let topics = topics.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sent = 0;
            for chunk in (0..N).collect::<Vec<_>>().chunks(8) {
                let calls = chunk.iter().map(|&n| {
                    let q = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs([("hub.mode", "publish"), ("hub.url", &topics[n % 10])])
                        .finish();
                    client
                        .post(format!("{url}?{q}"))
                        .header("content-type", "application/atom+xml")
                        .bearer_auth(PUBLISHER_TOKEN)
                        .body(entry(n))
                        .send()
                });
                for r in futures_util::future::join_all(calls).await {
                    assert_eq!(r.unwrap().status(), 202);
                    sent += 1;
                }
            }
            sent
        })
    };
    // Kill B once it has taken a good part, while A goes on publishing.
    let relay = format!("{}admin/api/relay", b.url);
    poll_until("B to have taken a quarter", PATIENCE, || async {
        let v: serde_json::Value = client().get(&relay).send().await.ok()?.json().await.ok()?;
        (v["upstreams"][0]["cursor"].as_u64()? > N as u64 / 4).then_some(())
    })
    .await;
    let engine = a.running().engine.clone();
    assert!(
        engine.log_bounds().await.unwrap().lead < N as u64,
        "A is still publishing"
    );
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    let b = start_process(&config).await;
    assert_eq!(publish.await.unwrap(), N);
    // Every entry reaches B's subscriber.
    sub.wait("every entry at B's subscriber", |r| {
        let got: BTreeSet<usize> = r
            .iter()
            .filter(|r| r.method == "POST")
            .flat_map(|r| entries(&r.body))
            .collect();
        got.len() == N
    })
    .await;
    // B's log holds each of A's events exactly once, in A's order.
    let events = wait_body(&format!("{}admin/api/relay", b.url), |body| {
        body.contains(&format!("\"cursor\":{N}"))
    })
    .await;
    assert!(events.contains("\"events_taken\""));
    let mut origin_seqs: BTreeMap<u64, usize> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page: serde_json::Value = serde_json::from_str(
            &wait_body(
                &format!("{}admin/api/events?after={after}&limit=1000", b.url),
                |_| true,
            )
            .await,
        )
        .unwrap();
        let list = page["events"].as_array().unwrap();
        if list.is_empty() {
            break;
        }
        for e in list {
            *origin_seqs
                .entry(e["origin_seq"].as_u64().unwrap())
                .or_default() += 1;
            after = e["seq"].as_u64().unwrap();
        }
    }
    assert_eq!(origin_seqs.len(), N, "every event of A");
    assert!(origin_seqs.values().all(|n| *n == 1), "none twice");
    assert_eq!(
        origin_seqs.keys().copied().collect::<Vec<_>>(),
        (1..=N as u64).collect::<Vec<_>>()
    );
    stop_gracefully(b).await;
}

fn entries(body: &[u8]) -> Vec<usize> {
    let text = String::from_utf8_lossy(body);
    text.match_indices("<id>urn:e")
        .filter_map(|(i, _)| {
            let rest = &text[i + 9..];
            rest[..rest.find('<')?].parse().ok()
        })
        .collect()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn an_event_reaching_a_hub_by_two_paths_is_taken_once() {
    // A → B → D and A → C → D.
    let a = spawn_hub_with(&format!(
        "{FAST_BEATS}{}{}{}",
        publisher(),
        peer("b", "token-a-gave-b-0123", "http://127.0.0.1"),
        peer("c", "token-a-gave-c-0123", "http://127.0.0.1")
    ))
    .await;
    let b = spawn_hub_with(&follower(
        &a.url,
        "token-a-gave-b-0123",
        "d",
        "token-b-gave-d-0123",
    ))
    .await;
    let c = spawn_hub_with(&follower(
        &a.url,
        "token-a-gave-c-0123",
        "d",
        "token-c-gave-d-0123",
    ))
    .await;
    let d = spawn_hub_with(&format!(
        "{FAST_BEATS}{}{}",
        upstream(&b.url, "token-b-gave-d-0123"),
        upstream(&c.url, "token-c-gave-d-0123")
    ))
    .await;
    let sd = Subscriber::start().await;
    let topic = "http://127.0.0.1:1/diamond";
    d.subscribed(topic, &sd.callback("/d")).await;
    for n in 1..=30 {
        let body = format!("update {n}");
        assert_eq!(
            a.fat_ping(topic, PUBLISHER_TOKEN, &body).await.status(),
            202
        );
    }
    // Both paths have brought every event to D.
    d.wait_for("both upstreams followed to the end", || async {
        let v: serde_json::Value =
            serde_json::from_str(&d.get_text("admin/api/relay").await).unwrap();
        v["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["cursor"].as_u64() == Some(30))
    })
    .await;
    d.wait_jobs_done().await;
    let log = log_of(&d).await;
    let numbers: Vec<u64> = log.iter().map(|e| e.origin_seq).collect();
    let unique: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(numbers.len(), 30, "each origin event once: {numbers:?}");
    assert_eq!(unique, (1..=30).collect());
    let got: Vec<String> = sd
        .deliveries()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    // Never twice (a backlog of one topic may be coalesced into its newest update).
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(
        distinct.len(),
        got.len(),
        "no update delivered twice: {got:?}"
    );
    assert!(got.contains(&"update 30".to_owned()));
    let v: serde_json::Value = serde_json::from_str(&d.get_text("admin/api/relay").await).unwrap();
    let (taken, dups) = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(t, du), u| {
            (
                t + u["events_taken"].as_u64().unwrap(),
                du + u["duplicates"].as_u64().unwrap(),
            )
        });
    assert_eq!((taken, dups), (30, 30));
}

/// An upstream written by hand: every `/relay/stream` request is answered with two events
/// after the follower's cursor, then a line that is no stream line; the request lines are
/// kept.
async fn broken_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let first = head.lines().next().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(first.clone());
                let after: u64 = first
                    .split("after=")
                    .nth(1)
                    .and_then(|s| s.split(['&', ' ']).next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let mut body = Vec::new();
                for seq in after + 1..=after + 2 {
                    let line = wire::EventLine {
                        seq,
                        origin: "hand".into(),
                        origin_seq: seq,
                        path: vec!["hand".into()],
                        topic: "http://127.0.0.1:1/by-hand".into(),
                        topic_seq: seq,
                        content_type: "text/plain".into(),
                        content: base64::engine::general_purpose::STANDARD
                            .encode(format!("event {seq}")),
                        created_ms: 1,
                    };
                    serde_json::to_writer(&mut body, &line).unwrap();
                    body.push(b'\n');
                }
                body.extend_from_slice(b"{\"seq\":99}\n");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {}\r\nconnection: close\r\n\r\n",
                    wire::MEDIA_TYPE
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, requests)
}

#[tokio::test]
async fn a_broken_line_ends_the_session_after_the_lines_before_it_are_taken() {
    let (up, requests) = broken_upstream().await;
    let b = spawn_hub_with(&format!("{FAST_BEATS}{}", upstream(&up, PEER_TOKEN))).await;
    let relay = format!("{}admin/api/relay", b.url);
    // Each session takes the two good events, then fails on the third line and reconnects
    // after them: the cursor climbs two at a time, and the error names the line.
    let status = poll_until("two sessions' events", PATIENCE, || async {
        let v: serde_json::Value = client().get(&relay).send().await.ok()?.json().await.ok()?;
        let up = v["upstreams"][0].clone();
        (up["cursor"].as_u64()? >= 4).then_some(up)
    })
    .await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not a stream line") && error.contains("\"origin\""),
        "the error says what is wrong with the line: {error}"
    );
    let log = log_of(&b).await;
    let taken: Vec<u64> = log.iter().map(|e| e.origin_seq).collect();
    assert_eq!(
        taken[..4],
        [1, 2, 3, 4],
        "every good event taken once, in order"
    );
    let requests = requests.lock().unwrap().clone();
    assert!(requests[0].contains("after=0"), "{requests:?}");
    assert!(
        requests[1].contains("after=2"),
        "the second session starts after what the first took: {requests:?}"
    );
}
