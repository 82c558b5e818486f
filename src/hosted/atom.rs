//! Hosted topics' Atom documents (RFC 4287), built with `atom_syndication`: the feed and its
//! archive pages (RFC 5005), the document each update fans out, one entry; and posted Atom
//! entries read back. Threading is RFC 4685 (`thr:in-reply-to`), deletions RFC 6721
//! (`at:deleted-entry`).

use std::collections::BTreeMap;

use atom_syndication::extension::{Extension, ExtensionMap};
use atom_syndication::{Content, Entry, Feed, FixedDateTime, Link, Person, Text, TextType};

use super::input::{EntryInput, InputError};
use super::{Urls, parse_rfc3339};
use crate::storage::hosted::{Author, ContentKind, HostedEntry, HostedTopic};

pub const MEDIA_TYPE: &str = "application/atom+xml; charset=utf-8";
pub const ENTRY_MEDIA_TYPE: &str = "application/atom+xml; type=entry; charset=utf-8";
const THR: &str = "http://purl.org/syndication/thread/1.0";
const TOMBSTONES: &str = "http://purl.org/atompub/tombstones/1.0";
const HISTORY: &str = "http://purl.org/syndication/history/1.0";

/// The links of a feed document beyond `self` and `hub`.
#[derive(Debug, Default, Clone)]
pub struct Paging {
    /// This document's own URL, when it is not the topic's (an archive page, a retrieve answer).
    pub self_url: Option<String>,
    /// RFC 5005: the document is an archive page (`fh:archive`).
    pub archive: bool,
    pub prev_archive: Option<String>,
    pub next_archive: Option<String>,
    /// The subscription document, from an archive page.
    pub current: Option<String>,
}

/// A deleted entry, announced (RFC 6721).
#[derive(Debug, Clone)]
pub struct Deleted {
    pub id: String,
    pub when_ms: u64,
}

fn date(ms: u64) -> FixedDateTime {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .fixed_offset()
}

fn link(rel: &str, href: &str, mime: Option<&str>) -> Link {
    Link {
        rel: rel.to_owned(),
        href: href.to_owned(),
        mime_type: mime.map(str::to_owned),
        ..Link::default()
    }
}

fn extension(name: &str, attrs: &[(&str, &str)]) -> Extension {
    Extension {
        name: name.to_owned(),
        attrs: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Extension::default()
    }
}

fn add_extension(map: &mut ExtensionMap, prefix: &str, local: &str, ext: Extension) {
    map.entry(prefix.to_owned())
        .or_default()
        .entry(local.to_owned())
        .or_default()
        .push(ext);
}

/// One entry as Atom.
pub fn entry(urls: &Urls, topic: &HostedTopic, e: &HostedEntry) -> Entry {
    let page = urls.entry(&topic.name, &e.key);
    let author = e.author.clone().unwrap_or_else(|| Author {
        name: topic.title.clone(),
        email: None,
        uri: Some(urls.profile(&topic.name)),
    });
    let mut extensions = ExtensionMap::new();
    if let Some(parent) = &e.in_reply_to {
        add_extension(
            &mut extensions,
            "thr",
            "in-reply-to",
            extension("thr:in-reply-to", &[("ref", parent)]),
        );
    }
    let mut links = vec![link(
        "alternate",
        e.link.as_deref().unwrap_or(&page),
        Some("text/html"),
    )];
    if e.link.is_some() {
        links.push(link("related", &page, Some("text/html")));
    }
    Entry {
        id: e.id.clone(),
        title: Text::plain(e.title.clone()),
        updated: date(e.updated_ms),
        published: Some(date(e.published_ms)),
        authors: vec![Person {
            name: author.name,
            email: author.email,
            uri: author.uri,
            ..Person::default()
        }],
        content: Some(Content {
            value: Some(e.content.clone()),
            content_type: Some(
                match e.kind {
                    ContentKind::Text => "text",
                    ContentKind::Html => "html",
                }
                .to_owned(),
            ),
            ..Content::default()
        }),
        summary: e.text.as_ref().map(|t| Text::plain(t.clone())),
        links,
        extensions,
        ..Entry::default()
    }
}

fn namespaces(deleted: bool, archive: bool) -> BTreeMap<String, String> {
    let mut ns = BTreeMap::new();
    ns.insert("thr".to_owned(), THR.to_owned());
    if deleted {
        ns.insert("at".to_owned(), TOMBSTONES.to_owned());
    }
    if archive {
        ns.insert("fh".to_owned(), HISTORY.to_owned());
    }
    ns
}

/// A feed document of the topic with `entries` (newest first) and the deletions announced.
pub fn feed(
    urls: &Urls,
    topic: &HostedTopic,
    entries: &[HostedEntry],
    deleted: &[Deleted],
    paging: &Paging,
) -> Vec<u8> {
    let atom_url = urls.atom(&topic.name);
    let updated = entries
        .iter()
        .map(|e| e.updated_ms)
        .chain(deleted.iter().map(|d| d.when_ms))
        .max()
        .unwrap_or(topic.created_ms);
    let mut links = vec![
        link(
            "self",
            paging.self_url.as_deref().unwrap_or(&atom_url),
            Some("application/atom+xml"),
        ),
        link("hub", &urls.hub(), None),
        link("alternate", &urls.profile(&topic.name), Some("text/html")),
        link(
            "alternate",
            &urls.json(&topic.name),
            Some("application/feed+json"),
        ),
    ];
    if let Some(u) = &paging.current {
        links.push(link("current", u, Some("application/atom+xml")));
    }
    if let Some(u) = &paging.prev_archive {
        links.push(link("prev-archive", u, Some("application/atom+xml")));
    }
    if let Some(u) = &paging.next_archive {
        links.push(link("next-archive", u, Some("application/atom+xml")));
    }
    let mut extensions = ExtensionMap::new();
    if paging.archive {
        add_extension(
            &mut extensions,
            "fh",
            "archive",
            extension("fh:archive", &[]),
        );
    }
    for d in deleted {
        let when = super::rfc3339(d.when_ms);
        add_extension(
            &mut extensions,
            "at",
            "deleted-entry",
            extension("at:deleted-entry", &[("ref", &d.id), ("when", &when)]),
        );
    }
    let feed = Feed {
        id: atom_url,
        title: Text::plain(topic.title.clone()),
        updated: date(updated),
        links,
        entries: entries.iter().map(|e| entry(urls, topic, e)).collect(),
        namespaces: namespaces(!deleted.is_empty(), paging.archive),
        extensions,
        ..Feed::default()
    };
    feed.write_to(Vec::new())
        .expect("writing to memory cannot fail")
}

/// One entry as an Atom entry document.
pub fn entry_document(urls: &Urls, topic: &HostedTopic, e: &HostedEntry) -> Vec<u8> {
    let mut entry = entry(urls, topic, e);
    entry.namespaces = namespaces(false, false);
    let mut out = br#"<?xml version="1.0" encoding="utf-8"?>"#.to_vec();
    entry
        .write_to(&mut out)
        .expect("writing to memory cannot fail");
    out
}

/// A posted Atom entry document.
pub fn parse_entry(body: &[u8]) -> Result<EntryInput, InputError> {
    let e = Entry::read_from(body)
        .map_err(|e| InputError::Invalid(format!("not an Atom entry: {e}")))?;
    let (content, kind) = match (&e.content, &e.summary) {
        (Some(c), _) if c.src.is_some() => {
            return Err(InputError::Invalid(
                "content with src (out-of-line content) is not taken".into(),
            ));
        }
        (Some(c), _) => {
            let kind = match c.content_type.as_deref().unwrap_or("text") {
                "text" | "text/plain" => ContentKind::Text,
                "html" | "xhtml" | "text/html" | "application/xhtml+xml" => ContentKind::Html,
                other => {
                    return Err(InputError::Invalid(format!(
                        "content of type {other:?} is not taken (text, html or xhtml)"
                    )));
                }
            };
            (c.value.clone().unwrap_or_default(), kind)
        }
        (None, Some(s)) => (
            s.value.clone(),
            match s.r#type {
                TextType::Text => ContentKind::Text,
                _ => ContentKind::Html,
            },
        ),
        (None, None) => (String::new(), ContentKind::Text),
    };
    let in_reply_to = e
        .extensions
        .values()
        .flat_map(|m| m.values())
        .flatten()
        .find(|x| x.name.ends_with(":in-reply-to") || x.name == "in-reply-to")
        .and_then(|x| x.attrs.get("ref").cloned());
    let link = e
        .links
        .iter()
        .find(|l| l.rel == "alternate")
        .map(|l| l.href.clone());
    let author = e.authors.first().map(|p| Author {
        name: p.name.clone(),
        email: p.email.clone(),
        uri: p.uri.clone(),
    });
    let published_ms = e
        .published
        .map(|d| d.to_rfc3339())
        .and_then(|d| parse_rfc3339(&d));
    let id = Some(e.id.trim().to_owned()).filter(|i| !i.is_empty());
    Ok(EntryInput {
        id,
        title: e.title.value.clone(),
        content,
        kind,
        author,
        in_reply_to,
        link,
        published_ms,
        ..EntryInput::default()
    })
}
