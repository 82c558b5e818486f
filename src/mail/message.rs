//! A mail message as a hosted topic's entry (parsed with mail-parser): subject → title, From →
//! author, the text part (or an HTML part, sanitised, with a text rendering) → content, the
//! Message-ID → the entry's identity, `In-Reply-To`/`References` → threading.
//!
//! Identity: the entry id is `urn:uuid:` made from the SHA-1 of the Message-ID (so a reply's
//! `thr:in-reply-to` names its parent's entry), the key its first 16 hex digits. A different
//! message that reuses a Message-ID is kept apart under the identity made from the Message-ID
//! and its own content hash.

use mail_parser::{HeaderValue, MessageParser};
use sha1::{Digest, Sha1};

use crate::engine::hosted::Identity;
use crate::hosted::input::EntryInput;
use crate::storage::hosted::{Author, ContentKind};

/// Longest Message-ID taken (public-inbox's limit).
const MAX_MESSAGE_ID: usize = 244;
/// Width of the text rendering of HTML mail.
const TEXT_WIDTH: usize = 78;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the message has no Message-ID header")]
    NoMessageId,
    #[error("the Message-ID is longer than {MAX_MESSAGE_ID} characters or malformed")]
    BadMessageId,
    #[error("the message cannot be parsed")]
    Unparsable,
}

/// A message read.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Without angle brackets.
    pub message_id: String,
    /// The From address, lowercase.
    pub from: Option<String>,
    pub input: EntryInput,
    /// Over what makes the message this message (public-inbox's field set: subject, from,
    /// date, references, in-reply-to, text).
    pub content_hash: String,
    /// Its `List-Id` header, if any (loop detection).
    pub list_id: Option<String>,
    /// Its `Auto-Submitted` header, lowercase, if any and not `no` (RFC 3834).
    pub auto_submitted: Option<String>,
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    v.as_text_list()
        .map(|l| {
            l.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `urn:uuid:` from the SHA-1 of `message_id` (a name-based UUID, version 5 layout).
pub fn entry_id(message_id: &str) -> String {
    let h = Sha1::digest(message_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The identity of the message with this Message-ID.
pub fn identity(message_id: &str) -> Identity {
    Identity {
        key: hex::encode(&Sha1::digest(message_id.as_bytes())[..8]),
        id: entry_id(message_id),
    }
}

/// The identity of a different message reusing `message_id`.
pub fn apart(message_id: &str, content_hash: &str) -> Identity {
    identity(&format!("{message_id}\0{content_hash}"))
}

/// Reads a message (headers and body, as delivered).
pub fn read(raw: &[u8]) -> Result<Incoming, MessageError> {
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(MessageError::Unparsable)?;
    let message_id = msg
        .message_id()
        .ok_or(MessageError::NoMessageId)?
        .trim()
        .to_owned();
    if message_id.is_empty()
        || message_id.len() > MAX_MESSAGE_ID
        || message_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err(MessageError::BadMessageId);
    }
    let subject = msg.subject().unwrap_or_default().trim().to_owned();
    let from = msg.from().and_then(|a| a.first());
    let author = from.map(|a| Author {
        name: a
            .name()
            .map(str::to_owned)
            .or_else(|| {
                a.address()
                    .map(|s| s.split('@').next().unwrap_or(s).to_owned())
            })
            .unwrap_or_default(),
        email: a.address().map(str::to_owned),
        uri: None,
    });
    let from_address = from.and_then(|a| a.address()).map(str::to_ascii_lowercase);
    let in_reply_to = ids(msg.in_reply_to());
    let mut references = ids(msg.references());
    for parent in &in_reply_to {
        if !references.contains(parent) {
            references.push(parent.clone());
        }
    }
    let html = msg
        .html_part(0)
        .filter(|p| p.is_text_html())
        .and_then(|_| msg.body_html(0));
    let (content, kind, text) = match html {
        Some(h) => {
            let rendered = html2text::from_read(h.as_bytes(), TEXT_WIDTH).unwrap_or_default();
            let text = match msg.text_part(0).filter(|p| !p.is_text_html()) {
                Some(_) => msg.body_text(0).map(|t| t.into_owned()).unwrap_or(rendered),
                None => rendered,
            };
            (h.into_owned(), ContentKind::Html, Some(text))
        }
        None => (
            msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
            ContentKind::Text,
            None,
        ),
    };
    let published_ms = msg
        .date()
        .and_then(|d| u64::try_from(d.to_timestamp()).ok())
        .map(|s| s * 1000);
    let mut h = sha2::Sha256::new();
    for part in [
        subject.as_str(),
        from_address.as_deref().unwrap_or(""),
        msg.header_raw("Date").unwrap_or("").trim(),
        &references.join(" "),
        &content,
    ] {
        sha2::Digest::update(&mut h, (part.len() as u64).to_be_bytes());
        sha2::Digest::update(&mut h, part.as_bytes());
    }
    let content_hash = hex::encode(sha2::Digest::finalize(h));
    let input = EntryInput {
        id: None,
        title: subject,
        content,
        kind,
        text,
        author,
        in_reply_to: in_reply_to.first().map(|p| entry_id(p)),
        link: None,
        published_ms,
        message_id: Some(message_id.clone()),
        references,
    };
    let list_id = msg.header_raw("List-Id").map(|v| v.trim().to_owned());
    let auto_submitted = msg
        .header_raw("Auto-Submitted")
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.starts_with("no"));
    Ok(Incoming {
        message_id,
        from: from_address,
        input,
        content_hash,
        list_id,
        auto_submitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "From: Ann Example <Ann@Example.org>\r\nTo: list@lists.example\r\nSubject: Hello list\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <abc@example.org>\r\nIn-Reply-To: <parent@example.org>\r\nReferences: <root@example.org> <parent@example.org>\r\n\r\nFirst line\r\nsecond line\r\n";

    #[test]
    fn a_plain_message_becomes_a_threaded_text_entry() {
        let m = read(PLAIN.as_bytes()).unwrap();
        assert_eq!(m.message_id, "abc@example.org");
        assert_eq!(m.from.as_deref(), Some("ann@example.org"));
        assert_eq!(m.input.title, "Hello list");
        assert_eq!(m.input.kind, ContentKind::Text);
        assert!(m.input.content.starts_with("First line"));
        assert_eq!(m.input.in_reply_to, Some(entry_id("parent@example.org")));
        assert_eq!(
            m.input.references,
            ["root@example.org", "parent@example.org"]
        );
        assert_eq!(m.input.author.unwrap().name, "Ann Example");
        assert_eq!(m.input.published_ms, Some(1_796_119_200_000));
    }

    #[test]
    fn html_mail_keeps_the_html_and_a_text_rendering() {
        let raw = "From: a@example.org\r\nSubject: s\r\nMessage-ID: <h@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>there</b></p>\r\n";
        let m = read(raw.as_bytes()).unwrap();
        assert_eq!(m.input.kind, ContentKind::Html);
        assert!(m.input.content.contains("<b>there</b>"));
        assert!(m.input.text.unwrap().contains("Hello"));
    }

    #[test]
    fn identities_are_stable_and_a_reused_message_id_is_kept_apart() {
        assert_eq!(identity("a@b").id, entry_id("a@b"));
        assert_eq!(identity("a@b").key.len(), 16);
        assert!(entry_id("a@b").starts_with("urn:uuid:"));
        assert_eq!(&entry_id("a@b")[23..24], "5", "a version 5 layout");
        assert_ne!(apart("a@b", "x").key, identity("a@b").key);
        assert_eq!(
            read(b"Subject: x\r\n\r\nbody").unwrap_err(),
            MessageError::NoMessageId
        );
    }
}
