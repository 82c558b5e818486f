//! The stream over IP multicast on loopback (`IP_MULTICAST_IF` 127.0.0.1, joined on
//! 127.0.0.1): one sender, receivers following it with `transport = "multicast"`; loss made by
//! the kernel (nftables) when the test runs as root with `nft`; a receiver killed and restarted.

use std::collections::BTreeMap;

use crate::firehose::{FAST_BEATS, PUBLISHER_TOKEN, peer, publisher};
use crate::helpers::*;
use crate::process::*;

const KEY: &str = "the-group-key-of-the-tests";

/// A group of its own for each test: an address in 239.255.77.0/24 and a free port.
fn group() -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("239.255.77.{}:{port}", 1 + rand::random::<u8>() % 250)
}

fn multicast(group: &str, send: bool) -> String {
    format!(
        "[multicast]\nsend = {send}\ngroup = \"{group}\"\ninterface = \"127.0.0.1\"\nkey = \"{KEY}\"\nheartbeat = \"50ms\"\n"
    )
}

fn sender(group: &str) -> String {
    format!(
        "{FAST_BEATS}{}{}{}{}",
        publisher(),
        peer("b", "token-for-receiver-b-0123", "http://127.0.0.1"),
        peer("c", "token-for-receiver-c-0123", "http://127.0.0.1"),
        multicast(group, true)
    )
}

fn receiver(group: &str, up: &str, token: &str) -> String {
    format!(
        "{FAST_BEATS}[[upstreams]]\nurl = \"{up}\"\ntoken = \"{token}\"\ntransport = \"multicast\"\n{}",
        multicast(group, false)
    )
}

/// The upstream's status at a hub.
async fn upstream_status(url: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = client()
        .get(format!("{url}admin/api/relay"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(v["upstreams"][0].clone())
}

/// Waits until the hub at `url` receives its upstream by multicast.
async fn wait_multicast(url: &str) {
    poll_until("the receiver to switch to multicast", PATIENCE, || async {
        let up = upstream_status(url).await?;
        (up["multicast"]["mode"] == "multicast").then_some(())
    })
    .await;
}

/// The origin numbers of a hub's log (admin API), each with how often it is there.
async fn origin_numbers(url: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    let mut after = 0;
    loop {
        let page: serde_json::Value = client()
            .get(format!("{url}admin/api/events?after={after}&limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let Some(last) = events.last() else { break };
        after = last["seq"].as_u64().unwrap();
        for e in &events {
            *seen.entry(e["origin_seq"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

/// Waits until the hub's log holds origin events 1..=n, and checks each is there once.
async fn wait_each_once(url: &str, n: u64) {
    let seen = poll_until(
        "every event in the receiver's log",
        PATIENCE * 2,
        || async {
            let seen = origin_numbers(url).await;
            (seen.len() as u64 >= n).then_some(seen)
        },
    )
    .await;
    let want: Vec<u64> = (1..=n).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), want);
    assert!(
        seen.values().all(|c| *c == 1),
        "each event once: {:?}",
        seen.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>()
    );
}

/// Publishes updates `numbers` of `size` bytes each.
async fn publish(a: &TestHub, topic: &str, numbers: std::ops::RangeInclusive<usize>, size: usize) {
    for i in numbers {
        let mut body = format!("update {i} ");
        while body.len() < size {
            body.push('x');
        }
        assert_eq!(
            a.fat_ping(topic, PUBLISHER_TOKEN, &body).await.status(),
            202
        );
    }
}

#[tokio::test]
async fn two_receivers_take_every_event_by_multicast() {
    let g = group();
    let a = spawn_hub_with(&sender(&g)).await;
    let b = spawn_hub_with(&receiver(&g, &a.url, "token-for-receiver-b-0123")).await;
    let c = spawn_hub_with(&receiver(&g, &a.url, "token-for-receiver-c-0123")).await;
    let topic = "http://127.0.0.1:1/multicast";
    let (sb, sc) = (Subscriber::start().await, Subscriber::start().await);
    b.subscribed(topic, &sb.callback("/b")).await;
    c.subscribed(topic, &sc.callback("/c")).await;
    wait_multicast(&b.url).await;
    wait_multicast(&c.url).await;
    // Small messages and posts of several datagrams.
    publish(&a, topic, 1..=150, 200).await;
    publish(&a, topic, 151..=200, 5000).await;
    for hub in [&b, &c] {
        wait_each_once(&hub.url, 200).await;
    }
    for s in [&sb, &sc] {
        s.wait("the last update", |r| {
            r.iter()
                .any(|r| r.method == "POST" && r.body.starts_with(b"update 200 "))
        })
        .await;
    }
    for hub in [&b, &c] {
        let up = upstream_status(&hub.url).await.unwrap();
        let m = &up["multicast"];
        assert!(
            m["events_by_multicast"].as_u64().unwrap() > 0,
            "events came by multicast: {m}"
        );
        assert_eq!(m["bad_tags"], 0);
        assert_eq!(up["transport"], "multicast");
    }
    assert!(a.get_text("").await.contains("id=multicast-sender"));
    assert!(b.get_text("").await.contains("id=multicast-receivers"));
    let v: serde_json::Value = serde_json::from_str(&a.get_text("admin/api/relay").await).unwrap();
    assert!(v["multicast"]["datagrams"].as_u64().unwrap() >= 200);
    assert!(
        a.get_text("metrics")
            .await
            .contains("hubcast_multicast_datagrams_sent_total")
    );
    assert!(
        b.get_text("metrics")
            .await
            .contains("hubcast_upstream_multicast_datagrams_total")
    );
}

#[tokio::test]
async fn forged_datagrams_are_counted_and_dropped() {
    let g = group();
    let a = spawn_hub_with(&sender(&g)).await;
    let b = spawn_hub_with(&receiver(&g, &a.url, "token-for-receiver-b-0123")).await;
    wait_multicast(&b.url).await;
    // Datagrams tagged with another key, and noise, sent to the group.
    // Out of loopback only (without IP_MULTICAST_IF the default route's interface is used).
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    socket
        .set_multicast_if_v4(&std::net::Ipv4Addr::LOCALHOST)
        .unwrap();
    let socket: std::net::UdpSocket = socket.into();
    socket
        .connect(g.parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    let forged = hubcast::multicast::datagram::encode(
        b"a key the group does not have",
        "someone",
        &hubcast::multicast::datagram::Body::Heartbeat {
            lead: 1_000_000,
            trail: 1,
        },
    );
    for _ in 0..5 {
        socket.send(&forged).unwrap();
        socket.send(b"HC\x01 noise").unwrap();
    }
    poll_until("the forged datagrams counted", PATIENCE, || async {
        let up = upstream_status(&b.url).await?;
        (up["multicast"]["bad_tags"].as_u64()? >= 5 && up["multicast"]["malformed"].as_u64()? >= 1)
            .then_some(())
    })
    .await;
    let up = upstream_status(&b.url).await.unwrap();
    assert_eq!(
        up["multicast"]["mode"], "multicast",
        "a forged lead moves nothing"
    );
    assert!(up["upstream_lead"].as_u64().unwrap() < 1_000_000);
}

/// An nftables table dropping a random 5% of the group's datagrams on loopback; removed on
/// drop.
struct KernelLoss {
    table: String,
    ok: bool,
}

impl KernelLoss {
    fn new(group: &str) -> Result<KernelLoss, String> {
        if effective_uid() != 0 {
            return Err("not running as root".into());
        }
        let (addr, port) = group.split_once(':').expect("group:port");
        let table = format!("hubcast_loss_{port}");
        let rules = format!(
            "table ip {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  oifname \"lo\" ip daddr {addr} udp dport {port} numgen random mod 100 < 5 counter drop\n }}\n}}\n"
        );
        let mut child = std::process::Command::new(nft())
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft is not available ({e})"))?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("nft refused the table ({status})"));
        }
        Ok(KernelLoss { table, ok: true })
    }

    /// Datagrams the rule dropped.
    fn dropped(&self) -> u64 {
        let out = std::process::Command::new(nft())
            .args(["list", "table", "ip", &self.table])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("packets ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for KernelLoss {
    fn drop(&mut self) {
        if self.ok {
            let _ = std::process::Command::new(nft())
                .args(["delete", "table", "ip", &self.table])
                .status();
        }
    }
}

/// `nft` from the path, or where Debian puts it.
fn nft() -> &'static str {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nft").is_file()));
    if on_path { "nft" } else { "/usr/sbin/nft" }
}

fn effective_uid() -> u32 {
    // The effective user, from the process's own status (no unsafe code needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

#[tokio::test]
async fn a_random_five_percent_lost_in_the_kernel_is_repaired() {
    let g = group();
    let loss = match KernelLoss::new(&g) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("SKIPPED a_random_five_percent_lost_in_the_kernel_is_repaired: {why}");
            return;
        }
    };
    let a = spawn_hub_with(&sender(&g)).await;
    let b = spawn_hub_with(&receiver(&g, &a.url, "token-for-receiver-b-0123")).await;
    let c = spawn_hub_with(&receiver(&g, &a.url, "token-for-receiver-c-0123")).await;
    // D repairs too late for its small window: it falls behind, follows over HTTP until caught
    // up, and comes back to multicast.
    let d = spawn_hub_with(&format!(
        "{}window = 64\nrepair_delay = \"5s\"\n",
        receiver(&g, &a.url, "token-for-receiver-c-0123")
    ))
    .await;
    for hub in [&b, &c, &d] {
        wait_multicast(&hub.url).await;
    }
    let topic = "http://127.0.0.1:1/lossy";
    publish(&a, topic, 1..=400, 300).await;
    publish(&a, topic, 401..=500, 4000).await;
    for hub in [&b, &c, &d] {
        wait_each_once(&hub.url, 500).await;
    }
    let fell_back = upstream_status(&d.url).await.unwrap()["multicast"]["fallbacks"]
        .as_u64()
        .unwrap();
    assert!(fell_back >= 1, "D fell back to HTTP");
    wait_multicast(&d.url).await;
    assert!(loss.dropped() > 0, "the kernel dropped datagrams");
    let mut repaired = 0;
    for hub in [&b, &c] {
        let up = upstream_status(&hub.url).await.unwrap();
        repaired += up["multicast"]["events_repaired"].as_u64().unwrap();
        eprintln!("receiver {}: {}", hub.url, up["multicast"]);
        assert_eq!(up["multicast"]["mode"], "multicast");
    }
    assert!(repaired > 0, "the lost events were repaired over HTTP");
}

#[tokio::test]
async fn a_receiver_killed_and_restarted_catches_up_with_nothing_lost() {
    let g = group();
    let a = spawn_hub_with(&sender(&g)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = process_config(
        &dir,
        persistent_backend(),
        &receiver(&g, &a.url, "token-for-receiver-b-0123"),
    );
    let mut b = start_process(&config).await;
    wait_multicast(&b.url).await;
    let topic = "http://127.0.0.1:1/killed";
    const N: u64 = 600;
    let publishing = {
        let url = a.url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 1..=N {
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([("hub.mode", "publish"), ("hub.url", topic)])
                    .finish();
                let r = client
                    .post(format!("{url}?{q}"))
                    .header("content-type", "text/plain")
                    .bearer_auth(PUBLISHER_TOKEN)
                    .body(format!("update {i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                if i % 50 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        })
    };
    poll_until("B to have taken some", PATIENCE, || async {
        let up = upstream_status(&b.url).await?;
        (up["cursor"].as_u64()? > 100).then_some(())
    })
    .await;
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    let b = start_process(&config).await;
    publishing.await.unwrap();
    wait_each_once(&b.url, N).await;
    wait_multicast(&b.url).await;
}

#[tokio::test]
async fn a_receiver_takes_only_the_topics_its_entry_asks_for() {
    let g = group();
    let a = spawn_hub_with(&sender(&g)).await;
    let narrow = receiver(&g, &a.url, "token-for-receiver-b-0123").replace(
        "transport = \"multicast\"\n",
        "transport = \"multicast\"\ntopics = [\"http://127.0.0.1:1/wanted\"]\n",
    );
    let b = spawn_hub_with(&narrow).await;
    wait_multicast(&b.url).await;
    for i in 1..=10 {
        let topic = if i % 2 == 0 {
            "http://127.0.0.1:1/wanted"
        } else {
            "http://127.0.0.1:1/other"
        };
        let r = a
            .fat_ping(topic, PUBLISHER_TOKEN, &format!("update {i}"))
            .await;
        assert_eq!(r.status(), 202);
    }
    poll_until("B's cursor past every event", PATIENCE, || async {
        let up = upstream_status(&b.url).await?;
        (up["cursor"].as_u64()? >= 10).then_some(())
    })
    .await;
    let taken: Vec<u64> = origin_numbers(&b.url).await.into_keys().collect();
    assert_eq!(
        taken,
        vec![2, 4, 6, 8, 10],
        "the other topic's events are passed over"
    );
}
