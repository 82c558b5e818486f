//! Mail into hosted topics: Python's smtplib.LMTP as the sending mail server, a raw LMTP
//! session for the per-recipient answers, `hubcast deliver` for procmail, and kill -9 during a
//! burst of mail after which the mail server resends everything.

use std::process::Stdio;

use atom_syndication::Feed;
use hubcast::config::gateways::LmtpListen;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;
use crate::process::*;

const TOKEN: &str = "owner-token-0123456789";
const ADMIN: &str = "admin-token-for-tests";
const DOMAIN: &str = "lists.example";

fn mail_config() -> String {
    format!(
        "[hosted]\nenabled = true\n[lmtp]\nenabled = true\nlisten = \"127.0.0.1:0\"\ndomain = \"{DOMAIN}\"\nmax_message = \"64KiB\"\n[admin]\ntoken = \"{ADMIN}\"\n"
    )
}

async fn create(hub: &TestHub, body: serde_json::Value) {
    hub.create_hosted_topic(ADMIN, body).await;
}

fn lmtp_addr(hub: &TestHub) -> std::net::SocketAddr {
    match hub.running().lmtp_listen.clone() {
        Some(LmtpListen::Tcp(a)) => a,
        other => panic!("LMTP on TCP expected, got {other:?}"),
    }
}

/// Sends each message with Python's smtplib.LMTP (one session each, as a mail server's LMTP
/// client does); prints one line per message: `ok` or the refusal's code.
pub const SEND: &str = r#"
import smtplib, sys
target, rcpt = sys.argv[1], sys.argv[2]
raw = sys.stdin.buffer.read().split(b"\n=====\n")
for m in raw:
    try:
        if target.startswith("/"):
            s = smtplib.LMTP(target)
        else:
            host, port = target.rsplit(":", 1)
            s = smtplib.LMTP(host, int(port))
        try:
            s.sendmail("sender@example.org", [rcpt], m)
            print("ok", flush=True)
        finally:
            try:
                s.quit()
            except Exception:
                pass
    except smtplib.SMTPRecipientsRefused as e:
        print("refused %s" % list(e.recipients.values())[0][0], flush=True)
    except smtplib.SMTPDataError as e:
        print("data %s" % e.smtp_code, flush=True)
    except Exception as e:
        print("fail %s" % type(e).__name__, flush=True)
"#;

pub async fn send_with_python(target: &str, rcpt: &str, messages: &[String]) -> Vec<String> {
    let mut child = python3()
        .args(["-c", SEND, target, rcpt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(messages.join("\n=====\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn message(id: &str, subject: &str, body: &str, extra: &str) -> String {
    format!(
        "From: Ann Example <ann@example.org>\r\nTo: list@{DOMAIN}\r\nSubject: {subject}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{id}>\r\n{extra}\r\n{body}\r\n"
    )
}

fn atom_of(body: &[u8]) -> Feed {
    std::str::from_utf8(body)
        .unwrap()
        .parse()
        .expect("an Atom feed")
}

#[tokio::test]
async fn mail_becomes_an_entry_that_websub_subscribers_get_once_threaded_and_sanitised() {
    let hub = spawn_hub_with(&mail_config()).await;
    create(
        &hub,
        serde_json::json!({"name": "list", "token": TOKEN, "title": "The list"}),
    )
    .await;
    let sub = Subscriber::start().await;
    let topic = format!("{}t/list", hub.url);
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    let target = lmtp_addr(&hub).to_string();
    let rcpt = format!("list@{DOMAIN}");

    let first = message("m1@example.org", "Hello list", "Plain words.", "");
    let html_reply = message(
        "m2@example.org",
        "Re: Hello list",
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nA reply in text.\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p onclick=\"x()\">A <b>reply</b><script>bad()</script></p>\r\n--b--",
        "In-Reply-To: <m1@example.org>\r\nReferences: <m1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n",
    );
    let reused_id = message(
        "m1@example.org",
        "Something else",
        "Another message, same Message-ID.",
        "",
    );
    let answers = send_with_python(
        &target,
        &rcpt,
        &[first.clone(), html_reply, first.clone(), reused_id],
    )
    .await;
    assert_eq!(answers, ["ok", "ok", "ok", "ok"]);

    // Three entries: the resend was stored once; the reused Message-ID kept apart.
    // Entries across deliveries (a subscriber that is behind may get several in one).
    let entries = |got: &[Recorded]| -> Vec<atom_syndication::Entry> {
        got.iter()
            .filter(|r| r.method == "POST")
            .flat_map(|r| atom_of(&r.body).entries)
            .collect()
    };
    let got = sub
        .wait("three entries delivered", |r| entries(r).len() >= 3)
        .await;
    let delivered = entries(&got);
    let by_title = |t: &str| {
        delivered
            .iter()
            .find(|e| e.title.value == t)
            .unwrap()
            .clone()
    };
    let first_entry = &by_title("Hello list");
    assert_eq!(first_entry.title.value, "Hello list");
    assert_eq!(first_entry.authors[0].name, "Ann Example");
    assert_eq!(
        first_entry.authors[0].email.as_deref(),
        Some("ann@example.org")
    );
    assert_eq!(
        first_entry.id,
        hubcast::mail::message::entry_id("m1@example.org")
    );
    let reply = &by_title("Re: Hello list");
    assert_eq!(
        reply.extensions["thr"]["in-reply-to"][0].attrs["ref"],
        first_entry.id
    );
    let html = reply.content.as_ref().unwrap();
    assert_eq!(html.content_type.as_deref(), Some("html"));
    assert_eq!(
        html.value.as_deref().map(str::trim),
        Some("<p>A <b>reply</b></p>")
    );
    assert!(
        reply
            .summary
            .as_ref()
            .unwrap()
            .value
            .contains("A reply in text.")
    );
    let apart = &by_title("Something else");
    assert_eq!(apart.title.value, "Something else");
    assert_ne!(apart.id, first_entry.id, "kept apart, not over the first");
    // The feed holds the three, the first one unchanged.
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
    assert_eq!(feed.entries.len(), 3);
    assert!(
        feed.entries
            .iter()
            .any(|e| e.id == first_entry.id && e.title.value == "Hello list")
    );
    // The resend made no event of its own: the topic numbered three entries.
    let r = hub
        .client
        .get(format!(
            "{}?hub.mode=retrieve&hub.topic={topic}&format=json",
            hub.url
        ))
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["items"][0]["_hubcast"]["seq"], 3);
    assert_eq!(entries(&sub.requests()).len(), 3, "nothing delivered twice");
}

/// Reads one (possibly multi-line) reply.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).await.unwrap() > 0,
            "connection closed after {text:?}"
        );
        text.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return text;
        }
    }
}

struct Session(BufReader<tokio::net::TcpStream>);

impl Session {
    async fn say(&mut self, line: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.next().await
    }

    async fn next(&mut self) -> String {
        reply(&mut self.0).await
    }
}

#[tokio::test]
async fn lmtp_answers_every_recipient_with_its_own_code_and_reason() {
    let hub = spawn_hub_with(&mail_config()).await;
    create(&hub, serde_json::json!({"name": "list", "token": TOKEN})).await;
    create(
        &hub,
        serde_json::json!({"name": "closed", "token": TOKEN, "policy": "allow-list", "allow": ["Boss@Example.org"]}),
    )
    .await;
    create(
        &hub,
        serde_json::json!({"name": "members", "token": TOKEN, "policy": "subscribers"}),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(lmtp_addr(&hub))
        .await
        .unwrap();
    let mut session = Session(BufReader::new(stream));
    assert!(session.next().await.starts_with("220 "));
    assert!(session.say("EHLO mx").await.starts_with("500 5.5.1"));
    assert!(
        session
            .say("MAIL FROM:<a@example.org>")
            .await
            .starts_with("503"),
        "LHLO first"
    );
    let lhlo = session.say("LHLO mx").await;
    assert!(
        lhlo.contains("250 SIZE 65536") && lhlo.contains("PIPELINING"),
        "{lhlo}"
    );
    assert!(
        session
            .say("MAIL FROM:<ann@example.org>")
            .await
            .starts_with("250")
    );
    assert!(
        session
            .say(&format!("RCPT TO:<list@{DOMAIN}>"))
            .await
            .starts_with("250")
    );
    assert!(
        session
            .say(&format!("RCPT TO:<nobody@{DOMAIN}>"))
            .await
            .starts_with("550 5.1.1")
    );
    assert!(
        session
            .say("RCPT TO:<list@elsewhere.example>")
            .await
            .starts_with("550 5.1.2")
    );
    assert!(
        session
            .say(&format!("RCPT TO:<closed@{DOMAIN}>"))
            .await
            .starts_with("250")
    );
    assert!(
        session
            .say(&format!("RCPT TO:<members@{DOMAIN}>"))
            .await
            .starts_with("250")
    );
    assert!(session.say("DATA").await.starts_with("354"));
    let body = message(
        "multi@example.org",
        "To three lists",
        "..a line that starts with a dot",
        "",
    );
    // One answer per accepted recipient, in order.
    let answers = session.say(&format!("{body}.")).await;
    assert!(
        answers.starts_with("250 2.0.0 <multi@example.org> stored as seq:1"),
        "{answers}"
    );
    let second = session.next().await;
    assert!(second.starts_with("550 5.7.1 closed@"), "{second}");
    let third = session.next().await;
    assert!(third.starts_with("550 5.7.1 members@"), "{third}");
    // The allowed sender gets in (the allow-list is case-blind).
    assert!(
        session
            .say("MAIL FROM:<boss@example.org>")
            .await
            .starts_with("250")
    );
    assert!(
        session
            .say(&format!("RCPT TO:<closed@{DOMAIN}>"))
            .await
            .starts_with("250")
    );
    assert!(session.say("DATA").await.starts_with("354"));
    let boss = message("boss@example.org", "From the boss", "Hi", "")
        .replace("ann@example.org", "boss@example.org");
    assert!(
        session
            .say(&format!("{boss}."))
            .await
            .starts_with("250 2.0.0")
    );
    // No Message-ID: refused for good.
    assert!(
        session
            .say("MAIL FROM:<ann@example.org>")
            .await
            .starts_with("250")
    );
    assert!(
        session
            .say(&format!("RCPT TO:<list@{DOMAIN}>"))
            .await
            .starts_with("250")
    );
    assert!(session.say("DATA").await.starts_with("354"));
    let answer = session
        .say("From: ann@example.org\r\nSubject: no id\r\n\r\nbody\r\n.")
        .await;
    assert!(
        answer.starts_with("550 5.6.0") && answer.contains("Message-ID"),
        "{answer}"
    );
    // Too big, said in MAIL FROM or found in DATA.
    assert!(
        session
            .say("MAIL FROM:<ann@example.org> SIZE=900000")
            .await
            .starts_with("552 5.3.4")
    );
    assert!(
        session
            .say("MAIL FROM:<ann@example.org>")
            .await
            .starts_with("250")
    );
    assert!(
        session
            .say(&format!("RCPT TO:<list@{DOMAIN}>"))
            .await
            .starts_with("250")
    );
    assert!(session.say("DATA").await.starts_with("354"));
    let big = message("big@example.org", "big", &"x".repeat(70_000), "");
    let answer = session.say(&format!("{big}.")).await;
    assert!(
        answer.starts_with("552 5.3.4") && answer.contains("lmtp.max_message"),
        "{answer}"
    );
    assert!(session.say("RSET").await.starts_with("250"));
    assert!(session.say("QUIT").await.starts_with("221"));
    // The dot-stuffed line arrived unstuffed.
    let feed = hub.get_text("t/list").await;
    assert!(
        feed.contains(".a line that starts with a dot") && !feed.contains("..a line"),
        "{feed}"
    );
}

#[tokio::test]
async fn hubcast_deliver_hands_a_message_to_the_running_hub_for_procmail() {
    let hub = spawn_hub_with(&mail_config()).await;
    create(&hub, serde_json::json!({"name": "list", "token": TOKEN})).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("deliver.toml");
    std::fs::write(
        &conf,
        format!("[hosted]\nenabled = true\n[lmtp]\nenabled = true\nlisten = \"{}\"\ndomain = \"{DOMAIN}\"\n", lmtp_addr(&hub)),
    )
    .unwrap();
    let run = async |topic: &str, msg: String| {
        let mut child = tokio::process::Command::from(hubcast_binary())
            .args(["deliver", "--topic", topic, "--config"])
            .arg(&conf)
            .env("SENDER", "ann@example.org")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(msg.as_bytes())
            .await
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, said) = run(
        "list",
        message("proc@example.org", "Via procmail", "hi", "").replace("\r\n", "\n"),
    )
    .await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("stored as seq:1"), "{said}");
    let (code, said) = run("nobody", message("proc2@example.org", "x", "hi", "")).await;
    assert_eq!(code, Some(67), "EX_NOUSER: {said}");
    let (code, said) = run("list", "Subject: no id\n\nbody\n".into()).await;
    assert_eq!(code, Some(65), "EX_DATAERR: {said}");
    let feed = hub.get_text("t/list").await;
    assert!(feed.contains("Via procmail"));
}

#[tokio::test]
async fn kill_9_during_a_burst_of_mail_then_a_full_resend_stores_and_fans_out_each_message_once() {
    const MESSAGES: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lmtp.sock");
    let config = process_config(
        &dir,
        persistent_backend(),
        &format!(
            "[hosted]\nenabled = true\n[lmtp]\nenabled = true\nlisten = \"unix:{}\"\ndomain = \"{DOMAIN}\"\n[admin]\ntoken = \"{ADMIN}\"\n",
            socket.display()
        ),
    );
    let mut hub = start_process(&config).await;
    let r = client()
        .post(format!("{}admin/api/hosted-topics", hub.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "list", "token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let messages: Vec<String> = (0..MESSAGES)
        .map(|i| {
            message(
                &format!("burst-{i}@example.org"),
                &format!("burst {i}"),
                "body",
                "",
            )
        })
        .collect();
    let rcpt = format!("list@{DOMAIN}");
    // The burst, read answer by answer; the hub dies once a third are stored.
    let mut child = python3()
        .args(["-c", SEND, socket.to_str().unwrap(), &rcpt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(messages.join("\n=====\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stored = 0;
    let mut answers = Vec::new();
    while let Some(line) = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        if line == "ok" {
            stored += 1;
            if stored == MESSAGES / 3 {
                hub.child.start_kill().unwrap();
                hub.child.wait().await.unwrap();
            }
        }
        answers.push(line);
    }
    child.wait().await.unwrap();
    assert!(
        (MESSAGES / 3..MESSAGES).contains(&stored),
        "killed midway: {stored} stored"
    );
    assert!(
        answers.iter().any(|a| a.starts_with("fail")),
        "the rest failed: {answers:?}"
    );

    // The mail server sends everything again.
    let hub = start_process(&config).await;
    let answers = send_with_python(socket.to_str().unwrap(), &rcpt, &messages).await;
    assert!(answers.iter().all(|a| a == "ok"), "{answers:?}");
    // Each message is in the history once, and each made one event: the topic's numbers are
    // exactly 1..=MESSAGES.
    let mut seqs = Vec::new();
    let mut titles = std::collections::BTreeSet::new();
    let mut after = 0;
    loop {
        let url = format!(
            "{}?hub.mode=retrieve&hub.topic={}t/list&format=json&count=50&after=seq:{after}",
            hub.url, hub.url
        );
        let doc: serde_json::Value = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = doc["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        for it in &items {
            let seq = it["_hubcast"]["seq"].as_u64().unwrap();
            seqs.push(seq);
            after = after.max(seq);
            assert!(
                titles.insert(it["title"].as_str().unwrap().to_owned()),
                "{it} twice"
            );
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=MESSAGES as u64).collect::<Vec<_>>());
    stop_gracefully(hub).await;
}
