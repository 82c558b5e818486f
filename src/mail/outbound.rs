//! Mail out: a topic's update as one mail per entry (built with lettre), and the confirmation
//! mail of a mail subscription. List headers per RFC 2369 (`List-Unsubscribe`, `List-Archive`),
//! RFC 2919 (`List-Id`) and RFC 8058 (one-click unsubscribe); a stable Message-ID derived from
//! topic and entry, so a resend dedupes in the reader's mailbox; threading from
//! `thr:in-reply-to`; `From` the list address with the author in `Reply-To` (DMARC-safe).

use std::str::FromStr;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use sha2::{Digest, Sha256};

use crate::feed::entries::FeedEntry;

/// The list a mail comes from.
#[derive(Debug, Clone)]
pub struct List {
    pub topic: String,
    pub title: String,
    /// `NAME@from_domain` (or `hub@from_domain` for topics the hub does not host).
    pub address: String,
    /// `NAME.from_domain`.
    pub list_id: String,
    pub unsubscribe_mailto: Option<String>,
    pub unsubscribe_https: String,
    pub from_domain: String,
}

/// `<…@from_domain>`: the same topic and entry always give the same Message-ID.
pub fn message_id(topic: &str, entry_id: &str, domain: &str) -> String {
    let h = Sha256::digest(format!("{topic}\0{entry_id}").as_bytes());
    format!("<{}@{domain}>", &hex::encode(h)[..32])
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn subject_of(e: &FeedEntry) -> String {
    if !e.title.trim().is_empty() {
        return e.title.trim().to_owned();
    }
    let first: String = e.text.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = first.chars().take(60).collect();
    if short.is_empty() {
        "(no subject)".into()
    } else if first.chars().count() > 60 {
        format!("{short}…")
    } else {
        short
    }
}

/// One entry as a mail to `to`.
pub fn entry_mail(list: &List, e: &FeedEntry, to: &str) -> Result<Vec<u8>, String> {
    let display = match &e.author_name {
        Some(a) if !a.trim().is_empty() => format!("{} via {}", a.trim(), list.title),
        _ => list.title.clone(),
    };
    let from = Mailbox::new(
        Some(display),
        list.address
            .parse()
            .map_err(|e| format!("list address: {e}"))?,
    );
    let mut b = lettre::Message::builder()
        .from(from)
        .to(Mailbox::from_str(to).map_err(|e| format!("subscriber {to:?}: {e}"))?)
        .subject(subject_of(e))
        .message_id(Some(message_id(&list.topic, &e.id, &list.from_domain)));
    if let Some(addr) = e.author_email.as_deref().and_then(|a| a.parse().ok()) {
        b = b.reply_to(Mailbox::new(e.author_name.clone(), addr));
    }
    if let Some(parent) = &e.in_reply_to {
        let parent = message_id(&list.topic, parent, &list.from_domain);
        b = b.in_reply_to(parent.clone()).references(parent);
    }
    let mut unsubscribe = Vec::new();
    if let Some(m) = &list.unsubscribe_mailto {
        unsubscribe.push(format!("<mailto:{m}>"));
    }
    unsubscribe.push(format!("<{}>", list.unsubscribe_https));
    b = b
        .raw_header(header(
            "List-Id",
            format!("{} <{}>", list.title, list.list_id),
        ))
        .raw_header(header("List-Unsubscribe", unsubscribe.join(", ")))
        .raw_header(header(
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click".into(),
        ))
        .raw_header(header("List-Archive", format!("<{}>", list.topic)))
        .raw_header(header("List-Post", "NO".into()))
        .raw_header(header("Precedence", "list".into()))
        .raw_header(header("Auto-Submitted", "auto-generated".into()))
        .raw_header(header("X-WebSub-Topic", list.topic.clone()));
    let mut text = e.text.clone();
    if let Some(link) = &e.link {
        text.push_str(&format!("\n\n{link}\n"));
    }
    text.push_str(&format!(
        "\n-- \n{} · {}\nUnsubscribe: {}\n",
        list.title, list.topic, list.unsubscribe_https
    ));
    let message = match &e.html {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(text, html.clone())),
        None => b.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        ),
    }
    .map_err(|e| e.to_string())?;
    Ok(message.formatted())
}

/// The confirmation of a mail subscription (or its end): the link does it.
pub fn confirmation(
    from: &str,
    to: &str,
    topic: &str,
    subscribe: bool,
    link: &str,
) -> Result<Vec<u8>, String> {
    let (what, subject) = if subscribe {
        (
            "receive its updates by mail",
            format!("Confirm: updates of {topic} by mail"),
        )
    } else {
        (
            "stop receiving its updates by mail",
            format!("Confirm: no more mail from {topic}"),
        )
    };
    let body = format!(
        "Someone, probably you, asked to {what}:\n\n  {topic}\n\nTo confirm, open this link and press the button:\n\n  {link}\n\nIf you did not ask, ignore this mail: nothing changes without the link.\n"
    );
    let m = lettre::Message::builder()
        .from(from.parse().map_err(|e| format!("from {from:?}: {e}"))?)
        .to(Mailbox::from_str(to).map_err(|e| format!("to {to:?}: {e}"))?)
        .subject(subject)
        .raw_header(header("Auto-Submitted", "auto-replied".into()))
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(body),
        )
        .map_err(|e| e.to_string())?;
    Ok(m.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> List {
        List {
            topic: "https://hub.example/t/b".into(),
            title: "B's notes".into(),
            address: "b@lists.example".into(),
            list_id: "b.lists.example".into(),
            unsubscribe_mailto: Some("b+unsubscribe@lists.example".into()),
            unsubscribe_https: "https://hub.example/mail/unsubscribe?t=x".into(),
            from_domain: "lists.example".into(),
        }
    }

    #[test]
    fn an_entry_mail_carries_the_list_headers_and_a_stable_message_id() {
        let e = FeedEntry {
            id: "urn:1".into(),
            title: "Hello".into(),
            text: "hi".into(),
            html: Some("<p>hi</p>".into()),
            author_name: Some("Ann".into()),
            author_email: Some("ann@example.org".into()),
            in_reply_to: Some("urn:0".into()),
            link: None,
        };
        let m = String::from_utf8(entry_mail(&list(), &e, "sub@example.org").unwrap())
            .unwrap()
            .replace("\r\n ", " ");
        for h in [
            "List-Id: B's notes <b.lists.example>",
            "List-Unsubscribe: <mailto:b+unsubscribe@lists.example>, <https://hub.example/mail/unsubscribe?t=x>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "List-Archive: <https://hub.example/t/b>",
            "Reply-To: Ann <ann@example.org>",
            "multipart/alternative",
        ] {
            assert!(m.contains(h), "{h} in {m}");
        }
        let id = message_id("https://hub.example/t/b", "urn:1", "lists.example");
        assert!(m.contains(&format!("Message-ID: {id}")), "{m}");
        let parent = message_id("https://hub.example/t/b", "urn:0", "lists.example");
        assert!(m.contains(&format!("In-Reply-To: {parent}")), "{m}");
        assert!(
            m.contains("<b@lists.example>\r\nTo: sub@example.org"),
            "{m}"
        );
    }

    #[test]
    fn updates_that_are_not_feeds_become_one_mail() {
        let (_, e) = crate::feed::entries::entries_of("text/plain", b"plain update");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].text, "plain update");
    }
}
