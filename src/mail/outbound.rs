//! Mail out: a topic's update as one mail per entry (built with lettre), and the confirmation
//! mail of a mail subscription. List headers per RFC 2369 (`List-Unsubscribe`, `List-Archive`),
//! RFC 2919 (`List-Id`) and RFC 8058 (one-click unsubscribe); a stable Message-ID derived from
//! topic and entry, so a resend dedupes in the reader's mailbox; threading from
//! `thr:in-reply-to`; `From` the list address with the author in `Reply-To` (DMARC-safe).

use std::str::FromStr;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use sha2::{Digest, Sha256};

/// An entry as mail carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailEntry {
    pub id: String,
    pub title: String,
    pub text: String,
    pub html: Option<String>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub in_reply_to: Option<String>,
    pub link: Option<String>,
}

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

/// The entries of an update: Atom entries, RSS items, JSON Feed items, or the whole content as
/// one.
pub fn entries_of(content_type: &str, body: &[u8]) -> (Option<String>, Vec<MailEntry>) {
    let essence = crate::feed::essence(content_type);
    if (essence.contains("atom") || essence.ends_with("xml"))
        && let Ok(feed) = atom_syndication::Feed::read_from(body)
    {
        {
            let entries = feed
                .entries
                .iter()
                .map(|e| {
                    let (html, text) = match &e.content {
                        Some(c) if matches!(c.content_type.as_deref(), Some("html" | "xhtml")) => {
                            let h = c.value.clone().unwrap_or_default();
                            let t = e
                                .summary
                                .as_ref()
                                .map(|s| s.value.clone())
                                .unwrap_or_else(|| html_to_text(&h));
                            (Some(h), t)
                        }
                        Some(c) => (None, c.value.clone().unwrap_or_default()),
                        None => (
                            None,
                            e.summary
                                .as_ref()
                                .map(|s| s.value.clone())
                                .unwrap_or_default(),
                        ),
                    };
                    MailEntry {
                        id: e.id.clone(),
                        title: e.title.value.clone(),
                        text,
                        html,
                        author_name: e.authors.first().map(|a| a.name.clone()),
                        author_email: e.authors.first().and_then(|a| a.email.clone()),
                        in_reply_to: e
                            .extensions
                            .values()
                            .flat_map(|m| m.values())
                            .flatten()
                            .find(|x| x.name.ends_with("in-reply-to"))
                            .and_then(|x| x.attrs.get("ref").cloned()),
                        link: e
                            .links
                            .iter()
                            .find(|l| l.rel == "alternate")
                            .map(|l| l.href.clone()),
                    }
                })
                .collect();
            return (Some(feed.title.value.clone()), entries);
        }
    }
    if (essence.contains("rss") || essence.ends_with("xml"))
        && let Some(found) = super::rss::items(body)
    {
        return found;
    }
    if essence.contains("json")
        && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(items) = doc["items"].as_array()
    {
        let entries = items
            .iter()
            .filter(|i| i["_hubcast"]["deleted"] != true)
            .map(|i| {
                let html = i["content_html"].as_str().map(str::to_owned);
                let text = i["content_text"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| html.as_deref().map(html_to_text))
                    .unwrap_or_default();
                MailEntry {
                    id: i["id"].as_str().unwrap_or_default().to_owned(),
                    title: i["title"].as_str().unwrap_or_default().to_owned(),
                    text,
                    html,
                    author_name: i["authors"][0]["name"].as_str().map(str::to_owned),
                    author_email: None,
                    in_reply_to: i["_hubcast"]["in_reply_to"].as_str().map(str::to_owned),
                    link: i["url"].as_str().map(str::to_owned),
                }
            })
            .collect();
        return (doc["title"].as_str().map(str::to_owned), entries);
    }
    // Anything else: the update itself, as text when it is text.
    let text = if essence.starts_with("text/") {
        String::from_utf8_lossy(body).into_owned()
    } else {
        format!("The topic was updated ({essence}, {} bytes).", body.len())
    };
    let id = hex::encode(&Sha256::digest(body)[..16]);
    (
        None,
        vec![MailEntry {
            id,
            text,
            ..MailEntry::default()
        }],
    )
}

fn html_to_text(html: &str) -> String {
    html2text::from_read(html.as_bytes(), 78).unwrap_or_default()
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn subject_of(e: &MailEntry) -> String {
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
pub fn entry_mail(list: &List, e: &MailEntry, to: &str) -> Result<Vec<u8>, String> {
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
        let e = MailEntry {
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
        let (_, e) = entries_of("text/plain", b"plain update");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].text, "plain update");
    }
}
