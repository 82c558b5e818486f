//! What to deliver from a new version of a topic: only new or changed entries of Atom and RSS
//! feeds (and, as an opt-in, JSON Feed items); other content whole, when it changed.

pub mod entries;
pub mod rss;
pub mod xml;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::DiffConfig;
use crate::storage::TopicState;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("not well-formed XML: {0}")]
    Malformed(String),
    #[error("not an Atom or RSS document")]
    NotAFeed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Atom or RSS, by media type.
    XmlFeed,
    JsonFeed,
    Other,
}

/// The media type without parameters, lower-cased.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn format_of(content_type: &str, body: &[u8]) -> Format {
    match essence(content_type).as_str() {
        "application/atom+xml"
        | "application/rss+xml"
        | "application/rdf+xml"
        | "application/xml"
        | "text/xml" => Format::XmlFeed,
        "application/feed+json" => Format::JsonFeed,
        "application/json" if looks_like_json_feed(body) => Format::JsonFeed,
        _ => Format::Other,
    }
}

fn looks_like_json_feed(body: &[u8]) -> bool {
    // Cheap check: the version URL appears near the top of every JSON Feed.
    let head = &body[..body.len().min(512)];
    head.windows(26).any(|w| w == b"https://jsonfeed.org/versi")
}

/// The result of comparing new content with what the topic had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// What to distribute; `None` when nothing new.
    pub deliver: Option<Bytes>,
    /// The topic state to keep (hash and entry fingerprints of this version).
    pub content_hash: String,
    pub entries: Vec<String>,
    /// How the decision was made, for logs and operators.
    pub note: String,
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// Decides what of `body` to deliver, given the topic's previous state.
///
/// - Unchanged bytes: nothing.
/// - Atom/RSS: the document with only the entries whose fingerprint (identity + content hash)
///   was not in the previous version; nothing when no entry is new or changed. With no previous
///   state (the topic's first fetch) the whole feed.
/// - JSON Feed: whole (W3C WebSub 7), or only new items when `json_feed_items` is on.
/// - Anything else, or a feed that cannot be split: whole.
/// - Atom/RSS with entity declarations: refused, nothing delivered.
pub fn diff(
    cfg: &DiffConfig,
    content_type: &str,
    body: &Bytes,
    prev: Option<&TopicState>,
) -> Result<Diff, FeedError> {
    let content_hash = hex_sha256(&[body]);
    let whole = |entries: Vec<String>, note: &str| Diff {
        deliver: Some(body.clone()),
        content_hash: content_hash.clone(),
        entries,
        note: note.to_owned(),
    };
    if prev.and_then(|p| p.content_hash.as_deref()) == Some(content_hash.as_str()) {
        return Ok(Diff {
            deliver: None,
            content_hash,
            entries: prev.map(|p| p.entries.clone()).unwrap_or_default(),
            note: "unchanged".into(),
        });
    }
    match format_of(content_type, body) {
        Format::XmlFeed => {
            let Ok(doc) = std::str::from_utf8(body) else {
                return Ok(whole(Vec::new(), "not UTF-8: delivered whole"));
            };
            let feed = match xml::split(doc) {
                Ok(f) => f,
                Err(e @ FeedError::Refused(_)) => return Err(e),
                Err(e) => return Ok(whole(Vec::new(), &format!("{e}: delivered whole"))),
            };
            if feed.entries.len() > cfg.max_entries {
                return Ok(whole(
                    Vec::new(),
                    "too many entries to diff: delivered whole",
                ));
            }
            let fps: Vec<String> = feed
                .entries
                .iter()
                .map(|e| {
                    let id = e.id.as_deref().unwrap_or("");
                    hex_sha256(&[id.as_bytes(), b"\0", doc[e.span.clone()].as_bytes()])
                })
                .collect();
            select(prev, fps, body, content_hash, |keep| {
                Bytes::from(xml::without_entries(doc, &feed.entries, keep))
            })
        }
        Format::JsonFeed if cfg.json_feed_items => json_items(body, prev, content_hash),
        Format::JsonFeed => Ok(whole(Vec::new(), "JSON Feed delivered whole")),
        Format::Other => Ok(whole(Vec::new(), "changed")),
    }
}

/// One delivery that carries several events of a topic (oldest first), for a destination that
/// fell behind: Atom/RSS and item-diffed JSON Feed get the union of the entries; content that is
/// delivered whole gets the newest version. `None` when they cannot be merged (their media
/// types differ, or a feed cannot be parsed), in which case they are delivered one by one.
pub fn coalesce(cfg: &DiffConfig, events: &[(&str, &Bytes)]) -> Option<(String, Bytes)> {
    let (newest_type, newest_body) = *events.last()?;
    let kind = essence(newest_type);
    if events.iter().any(|(ct, _)| essence(ct) != kind) {
        return None;
    }
    match format_of(newest_type, newest_body) {
        Format::XmlFeed => {
            let docs: Vec<&str> = events
                .iter()
                .map(|(_, b)| std::str::from_utf8(b).ok())
                .collect::<Option<_>>()?;
            let merged = xml::merge(&docs)?;
            Some((newest_type.to_owned(), Bytes::from(merged)))
        }
        Format::JsonFeed if cfg.json_feed_items => {
            let mut docs: Vec<serde_json::Value> = events
                .iter()
                .map(|(_, b)| serde_json::from_slice(b).ok())
                .collect::<Option<_>>()?;
            let mut newest = docs.pop()?;
            let mut items = newest.get("items")?.as_array()?.clone();
            let mut seen: std::collections::HashSet<String> = items
                .iter()
                .filter_map(|i| i.get("id"))
                .map(|v| v.to_string())
                .collect();
            for doc in docs.iter().rev() {
                for item in doc.get("items")?.as_array()? {
                    let fresh = item.get("id").is_none_or(|id| seen.insert(id.to_string()));
                    if fresh {
                        items.push(item.clone());
                    }
                }
            }
            newest["items"] = serde_json::Value::Array(items);
            Some((
                newest_type.to_owned(),
                Bytes::from(serde_json::to_vec(&newest).ok()?),
            ))
        }
        // Whole content: the newest version says everything the older ones did.
        _ => Some((newest_type.to_owned(), newest_body.clone())),
    }
}

/// Keeps the entries whose fingerprint is new; `build` makes the document from the choice.
fn select(
    prev: Option<&TopicState>,
    fps: Vec<String>,
    body: &Bytes,
    content_hash: String,
    build: impl FnOnce(&[bool]) -> Bytes,
) -> Result<Diff, FeedError> {
    let Some(prev) = prev.filter(|p| p.content_hash.is_some()) else {
        return Ok(Diff {
            deliver: Some(body.clone()),
            content_hash,
            entries: fps,
            note: "first version seen: whole feed".into(),
        });
    };
    let seen: std::collections::HashSet<&str> = prev.entries.iter().map(String::as_str).collect();
    let keep: Vec<bool> = fps.iter().map(|f| !seen.contains(f.as_str())).collect();
    let new = keep.iter().filter(|k| **k).count();
    let deliver = if new == 0 {
        None
    } else if new == keep.len() {
        Some(body.clone())
    } else {
        Some(build(&keep))
    };
    Ok(Diff {
        deliver,
        content_hash,
        entries: fps,
        note: format!("{new} new or changed of {} entries", keep.len()),
    })
}

fn json_items(
    body: &Bytes,
    prev: Option<&TopicState>,
    content_hash: String,
) -> Result<Diff, FeedError> {
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(Diff {
            deliver: Some(body.clone()),
            content_hash,
            entries: Vec::new(),
            note: "invalid JSON: delivered whole".into(),
        });
    };
    let items: Vec<serde_json::Value> = doc
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .unwrap_or_default();
    let fps: Vec<String> = items
        .iter()
        .map(|item| {
            let id = item.get("id").map(|v| v.to_string()).unwrap_or_default();
            hex_sha256(&[id.as_bytes(), b"\0", item.to_string().as_bytes()])
        })
        .collect();
    select(prev, fps, body, content_hash, |keep| {
        let kept: Vec<serde_json::Value> = items
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(v, _)| v.clone())
            .collect();
        doc["items"] = serde_json::Value::Array(kept);
        Bytes::from(serde_json::to_vec(&doc).expect("JSON values serialise"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json_items: bool) -> DiffConfig {
        DiffConfig {
            json_feed_items: json_items,
            max_entries: 100,
        }
    }

    fn state(d: &Diff) -> TopicState {
        TopicState {
            content_hash: Some(d.content_hash.clone()),
            entries: d.entries.clone(),
            ..Default::default()
        }
    }

    fn atom(entries: &[(&str, &str)]) -> Bytes {
        let mut s = String::from("<feed xmlns=\"http://www.w3.org/2005/Atom\"><id>urn:f</id>\n");
        for (id, t) in entries {
            s.push_str(&format!("<entry><id>{id}</id><title>{t}</title></entry>\n"));
        }
        s.push_str("</feed>");
        Bytes::from(s)
    }

    #[test]
    fn atom_only_new_and_changed() {
        let c = cfg(false);
        let v1 = atom(&[("a", "A"), ("b", "B")]);
        let d1 = diff(&c, "application/atom+xml", &v1, None).unwrap();
        assert_eq!(
            d1.deliver.as_ref(),
            Some(&v1),
            "first version is delivered whole"
        );
        let same = diff(&c, "application/atom+xml", &v1, Some(&state(&d1))).unwrap();
        assert_eq!(same.deliver, None);
        let v2 = atom(&[("c", "C"), ("a", "A"), ("b", "B2")]);
        let d2 = diff(&c, "application/atom+xml", &v2, Some(&state(&d1))).unwrap();
        let out = String::from_utf8(d2.deliver.unwrap().to_vec()).unwrap();
        assert!(out.contains("<id>c</id>") && out.contains("B2"), "{out}");
        assert!(!out.contains("<id>a</id>"), "{out}");
        assert!(out.starts_with("<feed xmlns=\"http://www.w3.org/2005/Atom\"><id>urn:f</id>"));
    }

    #[test]
    fn reordering_alone_delivers_nothing() {
        let c = cfg(false);
        let v1 = atom(&[("a", "A"), ("b", "B")]);
        let d1 = diff(&c, "application/atom+xml", &v1, None).unwrap();
        let v2 = atom(&[("b", "B"), ("a", "A")]);
        let d2 = diff(&c, "application/atom+xml", &v2, Some(&state(&d1))).unwrap();
        assert_eq!(d2.deliver, None);
    }

    #[test]
    fn json_feed_whole_by_default_items_opt_in() {
        let v1 = Bytes::from_static(br#"{"version":"https://jsonfeed.org/version/1.1","title":"t","items":[{"id":"1","content_text":"a"}]}"#);
        let v2 = Bytes::from_static(br#"{"version":"https://jsonfeed.org/version/1.1","title":"t","items":[{"id":"2","content_text":"b"},{"id":"1","content_text":"a"}]}"#);
        let whole = cfg(false);
        let d1 = diff(&whole, "application/feed+json", &v1, None).unwrap();
        let d2 = diff(&whole, "application/feed+json", &v2, Some(&state(&d1))).unwrap();
        assert_eq!(d2.deliver.as_ref(), Some(&v2));
        let items = cfg(true);
        let d1 = diff(&items, "application/json", &v1, None).unwrap();
        let d2 = diff(&items, "application/json", &v2, Some(&state(&d1))).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&d2.deliver.unwrap()).unwrap();
        assert_eq!(out["items"].as_array().unwrap().len(), 1);
        assert_eq!(out["items"][0]["id"], "2");
        assert_eq!(out["title"], "t");
    }

    #[test]
    fn other_types_whole_when_changed() {
        let c = cfg(false);
        let a = Bytes::from_static(b"hello");
        let d = diff(&c, "text/plain", &a, None).unwrap();
        assert_eq!(d.deliver.as_ref(), Some(&a));
        assert_eq!(
            diff(&c, "text/plain", &a, Some(&state(&d)))
                .unwrap()
                .deliver,
            None
        );
    }

    #[test]
    fn entity_bombs_are_refused() {
        let bomb = Bytes::from_static(b"<?xml version=\"1.0\"?><!DOCTYPE f [<!ENTITY a \"aaaa\">]><feed><title>&a;</title></feed>");
        assert!(diff(&cfg(false), "application/atom+xml", &bomb, None).is_err());
    }

    #[test]
    fn broken_xml_is_delivered_whole() {
        let b = Bytes::from_static(b"<feed><entry></feed>");
        let d = diff(&cfg(false), "application/atom+xml", &b, None).unwrap();
        assert_eq!(d.deliver.as_ref(), Some(&b));
    }

    #[test]
    fn coalescing_unions_feeds_and_keeps_the_newest_whole_content() {
        let c = cfg(false);
        let a = atom(&[("a", "A")]);
        let b = atom(&[("b", "B")]);
        let (ct, m) = coalesce(
            &c,
            &[("application/atom+xml", &a), ("application/atom+xml", &b)],
        )
        .unwrap();
        assert_eq!(ct, "application/atom+xml");
        let m = String::from_utf8(m.to_vec()).unwrap();
        assert!(
            m.find("<id>b</id>").unwrap() < m.find("<id>a</id>").unwrap(),
            "{m}"
        );
        let t1 = Bytes::from_static(b"one");
        let t2 = Bytes::from_static(b"two");
        assert_eq!(
            coalesce(&c, &[("text/plain", &t1), ("text/plain", &t2)])
                .unwrap()
                .1,
            t2
        );
        assert_eq!(
            coalesce(&c, &[("text/plain", &t1), ("text/html", &t2)]),
            None
        );
        let j1 = Bytes::from_static(
            br#"{"version":"https://jsonfeed.org/version/1.1","items":[{"id":"1"}]}"#,
        );
        let j2 = Bytes::from_static(
            br#"{"version":"https://jsonfeed.org/version/1.1","items":[{"id":"2"}]}"#,
        );
        let whole = coalesce(
            &c,
            &[
                ("application/feed+json", &j1),
                ("application/feed+json", &j2),
            ],
        );
        assert_eq!(
            whole.unwrap().1,
            j2,
            "a whole JSON Feed is its newest version"
        );
        let items = coalesce(
            &cfg(true),
            &[
                ("application/feed+json", &j1),
                ("application/feed+json", &j2),
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&items.unwrap().1).unwrap();
        assert_eq!(v["items"][0]["id"], "2");
        assert_eq!(v["items"][1]["id"], "1");
    }
}
