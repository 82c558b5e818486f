//! What an owner posts, from any of the three forms (an Atom entry, a JSON Feed item, form
//! fields), checked and made into a stored entry. HTML is sanitised here, once, so every
//! document and page built from the entry can carry it as it is.

use crate::storage::hosted::{Author, ContentKind, EntrySource, HostedEntry};

/// An entry as posted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryInput {
    /// The poster's own id for it (an Atom `<id>`, a JSON Feed `id`): a later post with the
    /// same id is a new version of the entry.
    pub id: Option<String>,
    pub title: String,
    pub content: String,
    pub kind: ContentKind,
    pub author: Option<Author>,
    pub in_reply_to: Option<String>,
    pub link: Option<String>,
    pub published_ms: Option<u64>,
    /// A plain-text rendering of HTML content (mail).
    pub text: Option<String>,
    /// The Message-ID of the mail it came from, and the ones it answers.
    pub message_id: Option<String>,
    pub references: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Invalid(String),
    #[error("the entry is larger than hosted.max_entry_bytes ({0} bytes)")]
    TooLarge(usize),
    #[error(
        "media type {0:?} is not taken: post an Atom entry (application/atom+xml), a JSON Feed item (application/json) or form fields (application/x-www-form-urlencoded)"
    )]
    MediaType(String),
}

/// Longest title kept.
const MAX_TITLE: usize = 1024;
/// Longest id, link or reference.
const MAX_REF: usize = 2048;

/// The form fields of a short message: `title`, `content`, `in_reply_to`.
pub fn from_form(pairs: &[(String, String)]) -> Result<EntryInput, InputError> {
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    for (k, _) in pairs {
        if !["title", "content", "in_reply_to"].contains(&k.as_str()) {
            return Err(InputError::Invalid(format!(
                "unknown field {k:?} (title, content, in_reply_to)"
            )));
        }
    }
    Ok(EntryInput {
        title: field("title").unwrap_or_default(),
        content: field("content").unwrap_or_default(),
        in_reply_to: field("in_reply_to").filter(|v| !v.trim().is_empty()),
        ..EntryInput::default()
    })
}

/// Removes what may not appear in XML 1.0 (C0 controls but tab and line ends, and the
/// non-characters), which mail and posts sometimes carry.
fn xml_safe(s: &str) -> String {
    s.chars()
        .filter(|c| {
            !matches!(*c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
        })
        .collect()
}

/// A header-safe value: control characters (line ends included) removed, trimmed.
fn single_line(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

impl EntryInput {
    /// Checks it and makes it an entry of the topic (`id` and `key` given by the caller).
    pub fn into_entry(
        self,
        key: String,
        id: String,
        now_ms: u64,
        max_bytes: usize,
        source: EntrySource,
    ) -> Result<HostedEntry, InputError> {
        let size = self.title.len()
            + self.content.len()
            + self.link.as_ref().map_or(0, String::len)
            + self.in_reply_to.as_ref().map_or(0, String::len);
        if size > max_bytes {
            return Err(InputError::TooLarge(max_bytes));
        }
        let title = single_line(&self.title);
        let content = xml_safe(&self.content);
        if title.is_empty() && content.trim().is_empty() {
            return Err(InputError::Invalid(
                "the entry has neither a title nor content".into(),
            ));
        }
        if title.chars().count() > MAX_TITLE {
            return Err(InputError::Invalid(format!(
                "the title is longer than {MAX_TITLE} characters"
            )));
        }
        for (what, v) in [
            ("id", Some(&id)),
            ("in_reply_to", self.in_reply_to.as_ref()),
            ("link", self.link.as_ref()),
        ] {
            if v.is_some_and(|v| v.len() > MAX_REF || v.chars().any(char::is_control)) {
                return Err(InputError::Invalid(format!(
                    "{what} is longer than {MAX_REF} bytes or holds control characters"
                )));
            }
        }
        if let Some(link) = &self.link
            && crate::urls::HttpUrl::parse(link).is_err()
        {
            return Err(InputError::Invalid(format!(
                "link {link:?} is not an http(s) URL"
            )));
        }
        let content = match self.kind {
            ContentKind::Text => content,
            ContentKind::Html => ammonia::clean(&content),
        };
        let published = self.published_ms.unwrap_or(now_ms);
        let mut e = HostedEntry {
            key,
            seq: 0,
            id,
            title,
            content,
            kind: self.kind,
            text: self.text.map(|t| xml_safe(&t)),
            author: self.author.map(|a| Author {
                name: single_line(&a.name),
                email: a
                    .email
                    .map(|e| single_line(&e))
                    .filter(|e| e.contains('@') && !e.contains(['<', '>', ' '])),
                uri: a.uri.filter(|u| crate::urls::HttpUrl::parse(u).is_ok()),
            }),
            published_ms: published,
            updated_ms: now_ms,
            in_reply_to: self.in_reply_to.map(|r| single_line(&r)),
            link: self.link,
            message_id: self.message_id.map(|m| single_line(&m)),
            references: self.references.iter().map(|r| single_line(r)).collect(),
            digest: String::new(),
            source,
        };
        e.digest = super::digest(&e);
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_short_message_from_form_fields() {
        let i = from_form(&pairs(&[("content", "hello"), ("in_reply_to", "urn:x")])).unwrap();
        assert_eq!(i.content, "hello");
        assert_eq!(i.in_reply_to.as_deref(), Some("urn:x"));
        let e = i
            .into_entry("k".into(), "id".into(), 5, 1000, EntrySource::Post)
            .unwrap();
        assert_eq!((e.published_ms, e.updated_ms), (5, 5));
        assert!(!e.digest.is_empty());
    }

    #[test]
    fn unknown_fields_empty_and_oversized_entries_are_refused() {
        assert!(from_form(&pairs(&[("body", "x")])).is_err());
        let empty = from_form(&pairs(&[("content", "  ")])).unwrap();
        assert!(
            empty
                .into_entry("k".into(), "i".into(), 0, 100, EntrySource::Post)
                .is_err()
        );
        let big = from_form(&pairs(&[("content", &"x".repeat(101))])).unwrap();
        assert_eq!(
            big.into_entry("k".into(), "i".into(), 0, 100, EntrySource::Post),
            Err(InputError::TooLarge(100))
        );
    }

    #[test]
    fn html_is_sanitised_and_control_characters_removed() {
        let i = EntryInput {
            title: "a\u{1}b".into(),
            content: r#"<p onclick="x()">hi<script>alert(1)</script></p>"#.into(),
            kind: ContentKind::Html,
            ..EntryInput::default()
        };
        let e = i
            .into_entry("k".into(), "i".into(), 0, 1000, EntrySource::Post)
            .unwrap();
        assert_eq!(e.title, "ab");
        assert_eq!(e.content, "<p>hi</p>");
    }
}
