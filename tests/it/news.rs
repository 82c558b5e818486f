//! Hosted topics as newsgroups, read with Python's nntplib (a real newsreader library) and a
//! raw session for the refusals: a post over HTTP and a mail into the list both reach the
//! group's readers, numbered as the topic numbers them, threaded by References.

use std::process::Stdio;

use hubcast::config::gateways::LmtpListen;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;
use crate::mail_in::{message, send_with_python};

const TOKEN: &str = "owner-token-0123456789";
const ADMIN: &str = "admin-token-for-tests";
const DOMAIN: &str = "lists.example";

/// `per_client`: `nntp.max_connections_per_client`.
async fn news_hub(per_client: usize) -> TestHub {
    spawn_hub_with(&format!(
        "[hosted]\nenabled = true\n[webfinger]\nenabled = true\n[lmtp]\nenabled = true\nlisten = \"127.0.0.1:0\"\ndomain = \"{DOMAIN}\"\n[nntp]\nenabled = true\nlisten = \"127.0.0.1:0\"\ngroup_prefix = \"hub.example\"\npath_host = \"news.example\"\nmax_connections_per_client = {per_client}\n[admin]\ntoken = \"{ADMIN}\"\n"
    ))
    .await
}

async fn create(hub: &TestHub, name: &str) {
    let title = format!("Topic {name}");
    let body = serde_json::json!({"name": name, "token": TOKEN, "title": title});
    hub.create_hosted_topic(ADMIN, body).await;
}

async fn post(hub: &TestHub, name: &str, fields: &[(&str, &str)]) -> serde_json::Value {
    let r = hub
        .client
        .post(format!("{}t/{name}", hub.url))
        .bearer_auth(TOKEN)
        .form(fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

const READ: &str = r#"
import json, nntplib, sys, warnings
warnings.simplefilter("ignore")
host, port = sys.argv[1], int(sys.argv[2])
s = nntplib.NNTP(host, port, readermode=True)
out = {}
out["welcome"] = s.getwelcome()
out["caps"] = sorted(s.getcapabilities().keys())
resp, groups = s.list()
out["list"] = [[g.group, g.last, g.first, g.flag] for g in groups]
resp, descs = s.descriptions("hub.example.*")
out["descriptions"] = descs
resp, count, first, last, name = s.group("hub.example.b")
out["group"] = [count, first, last, name]
resp, overviews = s.over((first, last))
out["over"] = [[n, o["subject"], o["from"], o["message-id"], o["references"], o[":bytes"], o[":lines"], o["xref"]] for n, o in overviews]
resp, xover = s.xover(first, last)
out["xover"] = len(xover)
resp, info = s.article(first)
out["article"] = [info.number, info.message_id, [l.decode() for l in info.lines]]
resp, info = s.head(overviews[-1][1]["message-id"])
out["head_by_id"] = [info.message_id, [l.decode() for l in info.lines]]
resp, info = s.body(last)
out["body"] = [l.decode() for l in info.lines]
out["stat"] = list(s.stat(first)[1:])
out["next"] = list(s.next()[1:])
out["last"] = list(s.last()[1:])
resp, hdrs = s.xhdr("subject", "%d-%d" % (first, last))
out["xhdr"] = hdrs
resp, news = s.newnews("hub.example.*", __import__("datetime").datetime(2000, 1, 1))
out["newnews"] = news
resp, newgroups = s.newgroups(__import__("datetime").datetime(2000, 1, 1))
out["newgroups"] = [g.group for g in newgroups]
out["date"] = str(s.date()[1])
try:
    s.post(b"Subject: x\r\n\r\nbody\r\n")
    out["post"] = "accepted"
except nntplib.NNTPError as e:
    out["post"] = str(e)
try:
    s.group("hub.example.nothing")
except nntplib.NNTPError as e:
    out["no_group"] = str(e)
s.quit()
print(json.dumps(out))
"#;

#[tokio::test]
async fn a_newsreader_reads_posts_and_mail_of_a_hosted_topic_as_a_threaded_group() {
    let hub = news_hub(8).await;
    create(&hub, "b").await;
    create(&hub, "c").await;
    let first = post(
        &hub,
        "b",
        &[("title", "First post"), ("content", "Hello, news.")],
    )
    .await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    post(
        &hub,
        "b",
        &[
            ("title", "A reply"),
            ("content", ".starts with a dot"),
            ("in_reply_to", &first_id),
        ],
    )
    .await;
    let lmtp = match hub.running().lmtp_listen.clone() {
        Some(LmtpListen::Tcp(a)) => a.to_string(),
        other => panic!("{other:?}"),
    };
    let mail = message(
        "news-1@example.org",
        "By mail",
        "Mailed words.",
        "References: <root@example.org>\r\nIn-Reply-To: <root@example.org>\r\n",
    );
    assert_eq!(
        send_with_python(&lmtp, &format!("b@{DOMAIN}"), &[mail]).await,
        ["ok"]
    );

    let addr = hub.running().nntp_addr.unwrap();
    let out = python3()
        .args(["-c", READ, &addr.ip().to_string(), &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["welcome"].as_str().unwrap().starts_with("201"), "{v}");
    for cap in ["HDR", "LIST", "NEWNEWS", "OVER", "READER", "VERSION"] {
        assert!(
            v["caps"].as_array().unwrap().iter().any(|c| c == cap),
            "{cap}: {v}"
        );
    }
    assert_eq!(
        v["list"],
        serde_json::json!([
            ["hub.example.b", "3", "1", "n"],
            ["hub.example.c", "0", "1", "n"]
        ])
    );
    assert_eq!(v["descriptions"]["hub.example.b"], "Topic b");
    assert_eq!(v["group"], serde_json::json!([3, 1, 3, "hub.example.b"]));
    let over = v["over"].as_array().unwrap();
    assert_eq!(over.len(), 3);
    assert_eq!(over[0][1], "First post");
    let first_mid = over[0][3].as_str().unwrap();
    assert_eq!(
        over[1][4], first_mid,
        "the reply's References name the first"
    );
    assert_eq!(over[2][1], "By mail");
    assert_eq!(
        over[2][3], "<news-1@example.org>",
        "a mail keeps its Message-ID"
    );
    assert_eq!(over[2][4], "<root@example.org>");
    assert_eq!(over[0][7], "news.example hub.example.b:1");
    assert_eq!(v["xover"], 3);
    let article = v["article"].as_array().unwrap();
    assert_eq!(article[0], 1);
    let lines: Vec<&str> = article[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.contains(&"Path: news.example!not-for-mail"),
        "{lines:?}"
    );
    assert!(lines.contains(&"Newsgroups: hub.example.b"));
    assert!(lines.contains(&"Hello, news."));
    assert_eq!(v["head_by_id"][0], "<news-1@example.org>");
    assert!(
        v["body"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "Mailed words.")
    );
    assert_eq!(v["stat"][0], 1);
    assert_eq!(v["next"][0], 2);
    assert_eq!(v["last"][0], 1);
    assert_eq!(v["xhdr"][1], serde_json::json!(["2", "A reply"]));
    assert_eq!(v["newnews"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["newgroups"],
        serde_json::json!(["hub.example.b", "hub.example.c"])
    );
    assert!(v["post"].as_str().unwrap().starts_with("440"), "{v}");
    assert!(v["no_group"].as_str().unwrap().starts_with("411"), "{v}");
    // Names lead to the newsgroup and the list address too.
    let r = hub
        .client
        .get(format!(
            "{}.well-known/webfinger?resource={}t/b",
            hub.url, hub.url
        ))
        .send()
        .await
        .unwrap();
    let jrd: serde_json::Value = r.json().await.unwrap();
    let hrefs: Vec<&str> = jrd["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["href"].as_str().unwrap())
        .collect();
    assert!(
        hrefs.contains(&"news://news.example/hub.example.b"),
        "{hrefs:?}"
    );
    assert!(
        hrefs.contains(&format!("mailto:b@{DOMAIN}").as_str()),
        "{hrefs:?}"
    );
    let profile = hub.get_text("@b").await;
    assert!(
        profile.contains("news://news.example/hub.example.b")
            && profile.contains(&format!("b@{DOMAIN}"))
    );
    // The dot-stuffed line reached the reader as written.
    let raw = raw_session(addr, &["GROUP hub.example.b", "BODY 2"]).await;
    assert!(
        raw.contains("\r\n..starts with a dot\r\n"),
        "dot-stuffed on the wire: {raw}"
    );
}

/// Sends `commands` in one session and returns everything read until QUIT's answer.
async fn raw_session(addr: std::net::SocketAddr, commands: &[&str]) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut all = commands.join("\r\n");
    all.push_str("\r\nQUIT\r\n");
    w.write_all(all.as_bytes()).await.unwrap();
    let mut r = BufReader::new(r);
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        text.push_str(&line);
        if line.starts_with("205 ") {
            break;
        }
    }
    text
}

#[tokio::test]
async fn refusals_say_why_and_each_client_address_has_a_bounded_number_of_sessions() {
    let hub = news_hub(2).await;
    create(&hub, "b").await;
    let addr = hub.running().nntp_addr.unwrap();
    let text = raw_session(
        addr,
        &[
            "ARTICLE 1",
            "NEXT",
            "GROUP nope",
            "GROUP hub.example.b",
            "ARTICLE 1",
            "ARTICLE <nobody@x>",
            "POST",
            "IHAVE <a@b>",
            "FROB",
            "LIST FROB",
            "LISTGROUP",
            "NEWNEWS * 2026 1",
            "NEWGROUPS aé1234 000000",
            "LIST ACTIVE ****************************************************************x",
        ],
    )
    .await;
    let codes: Vec<&str> = text.lines().map(|l| &l[..l.len().min(3)]).collect();
    assert_eq!(
        codes,
        [
            "201", "412", "412", "411", "211", "423", "430", "440", "435", "500", "501", "211",
            ".", "501", "501", "215", ".", "205"
        ],
        "{text}"
    );
    assert!(text.contains(&format!("mail b@{DOMAIN} to post")), "{text}");
    // Two sessions at once from 127.0.0.1 are allowed; a third is refused.
    let a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut ra = BufReader::new(a);
    let mut rb = BufReader::new(b);
    for r in [&mut ra, &mut rb] {
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        assert!(l.starts_with("201"), "{l}");
    }
    let c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut rc = BufReader::new(c);
    let mut l = String::new();
    rc.read_line(&mut l).await.unwrap();
    assert!(
        l.starts_with("400") && l.contains("max_connections_per_client"),
        "{l}"
    );
}

#[tokio::test]
async fn a_topic_the_hub_does_not_host_is_a_group_of_what_the_hub_receives_once_opted_in() {
    let publisher = Publisher::start().await;
    let topic = publisher.topic("/feed");
    let hub = spawn_hub_with(&format!(
        "[hosted]\nenabled = true\n[nntp]\nenabled = true\nlisten = \"127.0.0.1:0\"\ngroup_prefix = \"hub.example\"\npath_host = \"news.example\"\n[[nntp.groups]]\nname = \"blog\"\ntopic = \"{topic}\"\n"
    ))
    .await;
    // The hub fetches the topic for its subscriber; the group keeps what it gets.
    let sub = Subscriber::start().await;
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    publisher.set(
        "/feed",
        "application/atom+xml",
        atom(&[("urn:e1", "One"), ("urn:e2", "Two")]),
    );
    assert_eq!(hub.publish(&topic).await.status(), 202);
    sub.wait_deliveries(1).await;
    let addr = hub.running().nntp_addr.unwrap();
    let text = poll_until("the group to hold both entries", PATIENCE, || async {
        let t = raw_session(addr, &["GROUP hub.example.blog", "XOVER 1-"]).await;
        t.contains("211 2 1 2 hub.example.blog").then_some(t)
    })
    .await;
    assert!(
        text.contains("\tOne\t") && text.contains("\tTwo\t"),
        "{text}"
    );
    // A new entry and an unchanged one: one more article.
    publisher.set(
        "/feed",
        "application/atom+xml",
        atom(&[("urn:e1", "One"), ("urn:e2", "Two"), ("urn:e3", "Three")]),
    );
    assert_eq!(hub.publish(&topic).await.status(), 202);
    poll_until("the third entry", PATIENCE, || async {
        let t = raw_session(addr, &["GROUP hub.example.blog"]).await;
        t.contains("211 3 1 3 hub.example.blog").then_some(())
    })
    .await;
    let t = raw_session(addr, &["LIST ACTIVE hub.example.*"]).await;
    assert!(t.contains("hub.example.blog 3 1 n"), "{t}");
    // Nobody posts to it here.
    let r = hub
        .client
        .post(format!("{}t/blog", hub.url))
        .bearer_auth(TOKEN)
        .form(&[("content", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("mirrors"));
}
