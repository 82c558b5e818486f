//! Topics out to mail: a real SMTP server (Python's aiosmtpd) as the smarthost. A mail
//! subscription is confirmed by the link in its confirmation mail (double opt-in); each entry
//! posted — over HTTP or by mail — reaches the subscriber as a mail with the list headers; the
//! one-click unsubscribe link ends it; hard bounces through the LMTP door end it too.

use std::process::Stdio;

use hubcast::config::gateways::LmtpListen;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout};

use crate::helpers::*;
use crate::mail_in::{SEND, message, send_with_python};

const TOKEN: &str = "owner-token-0123456789";
const ADMIN: &str = "admin-token-for-tests";
const DOMAIN: &str = "lists.example";

/// An SMTP server printing each message it takes as a JSON line.
const SINK: &str = r#"
import asyncio, email, email.policy, json, sys
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        print(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                          "data": envelope.content.decode("utf-8", "replace"),
                          "text": text}), flush=True)
        return "250 2.0.0 queued"
import socket
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
print("port %d" % port, flush=True)
sys.stdin.read()
c.stop()
"#;

struct SmtpSink {
    _child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let mut child = python3()
            .args(["-c", SINK])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiosmtpd runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let port = first.strip_prefix("port ").unwrap().parse().unwrap();
        SmtpSink {
            _child: child,
            lines,
            port,
        }
    }

    /// The next mail taken: (envelope from, recipients, message as sent, then its text part
    /// decoded).
    async fn next(&mut self) -> (String, Vec<String>, String) {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("a mail arrives")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        (
            v["from"].as_str().unwrap().to_owned(),
            v["to"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
            format!(
                "{}\r\n\r\n=== text part ===\r\n{}",
                v["data"].as_str().unwrap(),
                v["text"].as_str().unwrap()
            ),
        )
    }
}

/// A header's value (unfolded).
fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\r\n\r\n").next().unwrap_or(mail);
    let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The first link in a mail starting with `prefix`.
fn link(mail: &str, prefix: &str) -> String {
    let mail = mail.rsplit("=== text part ===").next().unwrap();
    let at = mail
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in {mail}"));
    mail[at..]
        .split(|c: char| c.is_whitespace() || c == '>')
        .next()
        .unwrap()
        .to_owned()
}

async fn mail_hub(sink: &SmtpSink) -> TestHub {
    spawn_hub_with(&format!(
        "[hosted]\nenabled = true\n[lmtp]\nenabled = true\nlisten = \"127.0.0.1:0\"\ndomain = \"{DOMAIN}\"\n[smtp]\nenabled = true\nsmarthost = \"smtp://127.0.0.1:{}\"\ntimeout = \"5s\"\nmax_bounces = 2\n[admin]\ntoken = \"{ADMIN}\"\n",
        sink.port
    ))
    .await
}

fn lmtp_target(hub: &TestHub) -> String {
    match hub.running().lmtp_listen.clone() {
        Some(LmtpListen::Tcp(a)) => a.to_string(),
        other => panic!("{other:?}"),
    }
}

/// Confirms the link of a confirmation mail the way a reader does: open it, press the button.
async fn press_confirm(hub: &TestHub, mail: &str) -> String {
    let url = link(mail, &format!("{}mail/confirm?t=", hub.url));
    let page = hub
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<button>Confirm</button>"), "{page}");
    let token = url.split_once("t=").unwrap().1.to_owned();
    let r = hub
        .client
        .post(format!("{}mail/confirm", hub.url))
        .form(&[("t", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn a_confirmed_mail_subscriber_gets_each_entry_with_list_headers_and_leaves_in_one_click() {
    let mut sink = SmtpSink::start().await;
    let hub = mail_hub(&sink).await;
    hub.create_hosted_topic(
        ADMIN,
        serde_json::json!({"name": "list", "token": TOKEN, "title": "The list"}),
    )
    .await;
    let topic = format!("{}t/list", hub.url);
    let reader = "mailto:reader@example.org";
    let r = hub.subscribe(&topic, reader).await;
    assert_eq!(r.status(), 202);

    // The confirmation mail; nothing is subscribed before its link is followed.
    let (_, to, confirmation) = sink.next().await;
    assert_eq!(to, ["reader@example.org"]);
    assert!(!hub.is_subscribed(&topic, reader).await);
    let done = press_confirm(&hub, &confirmation).await;
    assert!(done.contains("Subscribed"), "{done}");
    assert!(hub.is_subscribed(&topic, reader).await);

    // A post over HTTP becomes a mail from the list.
    let r = hub
        .client
        .post(&topic)
        .bearer_auth(TOKEN)
        .form(&[("title", "First news"), ("content", "Hello, readers.")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (envelope_from, to, mail) = sink.next().await;
    assert_eq!(to, ["reader@example.org"]);
    assert!(
        envelope_from.starts_with("list-bounces+")
            && envelope_from.ends_with(&format!("@{DOMAIN}")),
        "{envelope_from}"
    );
    assert_eq!(header(&mail, "Subject").as_deref(), Some("First news"));
    assert!(
        header(&mail, "From")
            .unwrap()
            .contains(&format!("<list@{DOMAIN}>"))
    );
    assert_eq!(
        header(&mail, "List-Id").as_deref(),
        Some(&*format!("The list <list.{DOMAIN}>"))
    );
    assert_eq!(
        header(&mail, "List-Archive").as_deref(),
        Some(&*format!("<{topic}>"))
    );
    assert_eq!(
        header(&mail, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let unsubscribe = header(&mail, "List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with(&format!(
            "<mailto:list+unsubscribe@{DOMAIN}>, <{}mail/unsubscribe?t=",
            hub.url
        )),
        "{unsubscribe}"
    );
    assert_eq!(
        header(&mail, "Message-ID").unwrap(),
        hubcast::mail::outbound::message_id(&topic, &id, DOMAIN),
        "stable: a resend dedupes in the mailbox"
    );
    assert!(mail.contains("Hello, readers."));

    // Mail into the list reaches the mail subscriber too, threaded.
    let target = lmtp_target(&hub);
    let first = message("root@example.org", "A question", "Who is there?", "");
    let reply = message(
        "reply@example.org",
        "Re: A question",
        "Me.",
        "In-Reply-To: <root@example.org>\r\n",
    );
    let answers = send_with_python(&target, &format!("list@{DOMAIN}"), &[first, reply]).await;
    assert_eq!(answers, ["ok", "ok"]);
    let (_, _, question) = sink.next().await;
    let (_, _, answer) = sink.next().await;
    assert_eq!(header(&question, "Subject").as_deref(), Some("A question"));
    assert_eq!(
        header(&answer, "In-Reply-To"),
        header(&question, "Message-ID")
    );
    assert!(
        header(&answer, "From")
            .unwrap()
            .starts_with("\"Ann Example via The list\"")
            || header(&answer, "From")
                .unwrap()
                .starts_with("Ann Example via The list"),
        "{answer}"
    );
    assert_eq!(
        header(&answer, "Reply-To").as_deref(),
        Some("\"Ann Example\" <ann@example.org>")
    );

    // A list's own mail coming back (a subscriber forwarding it, a list subscribed to itself)
    // is not posted again; nor is a robot's.
    let mut looped = mail.replace("\r\n=== text part ===", "");
    looped = looped.replacen("Message-ID:", "X-Old-Message-ID:", 1);
    // (Without its Auto-Submitted header: the List-Id alone is enough.)
    looped = looped.replace("Auto-Submitted: auto-generated\r\n", "");
    assert!(looped.contains("List-Id:"));
    let looped = format!("Message-ID: <looped@example.org>\r\n{looped}");
    let robot = message(
        "robot@example.org",
        "Out of office",
        "Away.",
        "Auto-Submitted: auto-replied\r\n",
    );
    let answers = send_with_python(&target, &format!("list@{DOMAIN}"), &[looped, robot]).await;
    assert_eq!(answers, ["data 550", "data 550"], "loops refused");

    // One click (RFC 8058) ends it.
    let one_click = link(&unsubscribe, &format!("{}mail/unsubscribe?t=", hub.url));
    let r = hub
        .client
        .post(&one_click)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!hub.is_subscribed(&topic, reader).await);
    // A forged or damaged link does nothing.
    let r = hub
        .client
        .post(format!(
            "{}mail/unsubscribe?t=e30.AAAAAAAAAAAAAAAAAAAAAA",
            hub.url
        ))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn subscribing_by_mail_and_hard_bounces_through_the_lmtp_door() {
    let mut sink = SmtpSink::start().await;
    let hub = mail_hub(&sink).await;
    hub.create_hosted_topic(ADMIN, serde_json::json!({"name": "list", "token": TOKEN}))
        .await;
    let topic = format!("{}t/list", hub.url);
    let target = lmtp_target(&hub);
    // A mail to list+subscribe@ from the reader: a confirmation mail goes back.
    let ask = message("ask@example.org", "subscribe", "", "")
        .replace("ann@example.org", "bouncy@example.org");
    let answers = send_with_python(&target, &format!("list+subscribe@{DOMAIN}"), &[ask]).await;
    assert_eq!(answers, ["ok"]);
    let (_, to, confirmation) = sink.next().await;
    assert_eq!(to, ["bouncy@example.org"]);
    press_confirm(&hub, &confirmation).await;
    let callback = "mailto:bouncy@example.org";
    assert!(hub.is_subscribed(&topic, callback).await);

    let r = hub
        .client
        .post(&topic)
        .bearer_auth(TOKEN)
        .form(&[("content", "one")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (bounce_to, _, _) = sink.next().await;
    // Two hard bounces (smtp.max_bounces = 2) to the address the mail came from.
    let dsn = |n: u32| {
        format!(
            "From: MAILER-DAEMON@example.org\r\nTo: {bounce_to}\r\nSubject: Undelivered Mail\r\nMessage-ID: <dsn-{n}@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; bouncy@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n--x--\r\n"
        )
    };
    let answers = send_with_python(&target, &bounce_to, &[dsn(1)]).await;
    assert_eq!(answers, ["ok"]);
    assert!(
        hub.is_subscribed(&topic, callback).await,
        "one bounce is not enough"
    );
    let answers = send_with_python(&target, &bounce_to, &[dsn(2)]).await;
    assert_eq!(answers, ["ok"]);
    assert!(
        !hub.is_subscribed(&topic, callback).await,
        "ended after smtp.max_bounces"
    );
    // Nobody else's tag works: a made-up one is taken and changes nothing.
    let answers = send_with_python(
        &target,
        &format!("list-bounces+0000000000000000@{DOMAIN}"),
        &[dsn(3)],
    )
    .await;
    assert_eq!(answers, ["ok"]);

    // A topic the hub does not host: its mail's bounces name the subscriber too.
    let publisher = Publisher::start().await;
    let feed = publisher.topic("/feed");
    let r = hub.subscribe(&feed, "mailto:far@example.org").await;
    assert_eq!(r.status(), 202);
    let (_, _, confirmation) = sink.next().await;
    press_confirm(&hub, &confirmation).await;
    assert!(hub.is_subscribed(&feed, "mailto:far@example.org").await);
    publisher.set(
        "/feed",
        "application/atom+xml",
        atom(&[("urn:f1", "Far news")]),
    );
    assert_eq!(hub.publish(&feed).await.status(), 202);
    let (far_bounce_to, _, far_mail) = sink.next().await;
    assert_eq!(header(&far_mail, "Subject").as_deref(), Some("Far news"));
    assert!(far_bounce_to.starts_with("hub-bounces+"), "{far_bounce_to}");
    for n in [4, 5] {
        let answers = send_with_python(&target, &far_bounce_to, &[dsn(n)]).await;
        assert_eq!(answers, ["ok"]);
    }
    assert!(!hub.is_subscribed(&feed, "mailto:far@example.org").await);
    let _ = SEND;
}

#[tokio::test]
async fn mailto_callbacks_are_refused_with_the_reason_when_the_hub_sends_no_mail() {
    let hub = spawn_hub().await;
    let r = hub
        .subscribe("http://127.0.0.1:1/feed", "mailto:someone@example.org")
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("smtp.enabled"));
    let r = hub
        .subscribe("http://127.0.0.1:1/feed", "mailto:not an address")
        .await;
    assert_eq!(r.status(), 400);
}
