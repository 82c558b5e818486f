//! Entry splitter for Atom and RSS: one streaming pass with quick-xml that records the byte span
//! and identity of each top-level entry, so a diff can copy the document byte for byte and leave
//! out the entries already delivered. Nothing is re-serialised: feed-level metadata, namespace
//! declarations and extension elements survive as the publisher wrote them.

use std::ops::Range;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::FeedError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlFeedKind {
    Atom,
    /// RSS 2.0 (`rss/channel/item`) and RSS 0.9x/1.0 (`rdf:RDF/item`).
    Rss,
}

/// One entry (`atom:entry` or `item`) of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpan {
    /// Byte range of the element in the document, start tag to end tag.
    pub span: Range<usize>,
    /// Its identity: atom:id, else guid, else link; `None` when it has none.
    pub id: Option<String>,
}

#[derive(Debug)]
pub struct SplitFeed {
    pub kind: XmlFeedKind,
    pub entries: Vec<EntrySpan>,
}

/// Children of an entry whose text names it, in order of preference.
const ID_ELEMENTS: [&str; 3] = ["id", "guid", "link"];

/// Finds the root kind and the entries. Refuses DTDs that declare entities (no XML bombs, no
/// external entities) and documents that are not well formed.
pub fn split(doc: &str) -> Result<SplitFeed, FeedError> {
    let mut reader = Reader::from_str(doc);
    reader.config_mut().trim_text(false);
    let mut kind = None;
    let mut depth = 0usize;
    // Depth at which entries sit: 1 for Atom and RSS 1.0, 2 for RSS 2.0 (rss/channel/item).
    let mut entry_depth = usize::MAX;
    let mut entries = Vec::new();
    let mut current: Option<(usize, [Option<String>; 3])> = None;
    let mut capturing: Option<(usize, String)> = None; // (index in ID_ELEMENTS, text)

    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| FeedError::Malformed(e.to_string()))?;
        match event {
            Event::DocType(d) if (d.contains("<!ENTITY") || d.contains("<!entity")) => {
                return Err(FeedError::Refused(
                    "the document declares entities in its DTD",
                ));
            }
            Event::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if depth == 0 {
                    kind = Some(match name {
                        "feed" => XmlFeedKind::Atom,
                        "rss" | "RDF" => XmlFeedKind::Rss,
                        _ => return Err(FeedError::NotAFeed),
                    });
                    entry_depth = if name == "rss" { 2 } else { 1 };
                } else if depth == entry_depth && current.is_none() && is_entry(kind, name) {
                    current = Some((before, Default::default()));
                } else if let Some((_, ids)) = &current
                    && depth == entry_depth + 1
                    && let Some(i) = ID_ELEMENTS.iter().position(|n| *n == name)
                    && ids[i].is_none()
                {
                    capturing = Some((i, String::new()));
                }
                depth += 1;
            }
            Event::Empty(e) => {
                let name = e.local_name();
                if depth == entry_depth && current.is_none() && is_entry(kind, name.as_ref()) {
                    let end = reader.buffer_position() as usize;
                    entries.push(EntrySpan {
                        span: before..end,
                        id: None,
                    });
                } else if let Some((_, ids)) = &mut current
                    && depth == entry_depth + 1
                    && name.as_ref() == "link"
                    && ids[2].is_none()
                {
                    // Atom links are empty elements: <link href="…"/>.
                    if let Some(href) = e
                        .try_get_attribute("href")
                        .ok()
                        .flatten()
                        .map(|a| a.value.into_owned())
                    {
                        ids[2] = Some(href);
                    }
                }
            }
            Event::Text(t) => {
                if let Some((_, text)) = &mut capturing {
                    text.push_str(&t);
                }
            }
            Event::CData(t) => {
                if let Some((_, text)) = &mut capturing {
                    text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, text)) = &mut capturing {
                    text.push('&');
                    text.push_str(&r);
                    text.push(';');
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if let Some((i, text)) = capturing.take_if(|_| depth == entry_depth + 1)
                    && let Some((_, ids)) = &mut current
                {
                    ids[i] = Some(text.trim().to_owned());
                }
                if depth == entry_depth
                    && let Some((start, ids)) = current.take()
                {
                    let end = reader.buffer_position() as usize;
                    let id = ids.into_iter().flatten().find(|s| !s.is_empty());
                    entries.push(EntrySpan {
                        span: start..end,
                        id,
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let kind = kind.ok_or(FeedError::NotAFeed)?;
    if depth != 0 {
        return Err(FeedError::Malformed("unexpected end of document".into()));
    }
    Ok(SplitFeed { kind, entries })
}

fn is_entry(kind: Option<XmlFeedKind>, name: &str) -> bool {
    match kind {
        Some(XmlFeedKind::Atom) => name == "entry",
        Some(XmlFeedKind::Rss) => name == "item",
        None => false,
    }
}

/// The document with the entries not in `keep` cut out; everything else byte for byte.
pub fn without_entries(doc: &str, entries: &[EntrySpan], keep: &[bool]) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut pos = 0;
    for (entry, keep) in entries.iter().zip(keep) {
        if !keep {
            out.push_str(&doc[pos..entry.span.start]);
            pos = entry.span.end;
            // Drop the line break and indentation that followed the removed entry.
            let rest = &doc[pos..];
            let ws = rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
            pos += ws;
        }
    }
    out.push_str(&doc[pos..]);
    out
}

/// One document with the entries of several versions of a feed (oldest first): the newest
/// document byte for byte, with the entries of older ones that it does not carry (by identity)
/// added after its own, newest first. `None` when they cannot be merged (not all feeds of one
/// kind, or the newest has no entry to place the others after).
pub fn merge(docs: &[&str]) -> Option<String> {
    let (newest, older) = docs.split_last()?;
    let split_newest = split(newest).ok()?;
    let last = split_newest.entries.last()?;
    let mut seen: std::collections::HashSet<String> = split_newest
        .entries
        .iter()
        .filter_map(|e| e.id.clone())
        .collect();
    // Added entries are indented like the newest document's last entry.
    let line_start = newest[..last.span.start].rsplit('\n').next().unwrap_or("");
    let indent = if line_start.trim().is_empty() {
        line_start
    } else {
        ""
    };
    let mut extra = String::new();
    for doc in older.iter().rev() {
        let f = split(doc).ok()?;
        if f.kind != split_newest.kind {
            return None;
        }
        for e in &f.entries {
            if e.id.as_ref().is_none_or(|id| seen.insert(id.clone())) {
                extra.push('\n');
                extra.push_str(indent);
                extra.push_str(&doc[e.span.clone()]);
            }
        }
    }
    let mut out = String::with_capacity(newest.len() + extra.len());
    out.push_str(&newest[..last.span.end]);
    out.push_str(&extra);
    out.push_str(&newest[last.span.end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:ex="urn:ex">
  <title>T &amp; co</title>
  <id>urn:feed</id>
  <ex:thing>kept</ex:thing>
  <entry><id>urn:1</id><title>one</title><source><id>urn:other</id></source></entry>
  <entry>
    <title>two</title>
    <link href="http://x/2"/>
  </entry>
  <entry/>
</feed>
"#;

    #[test]
    fn atom_entries_and_ids() {
        let f = split(ATOM).unwrap();
        assert_eq!(f.kind, XmlFeedKind::Atom);
        assert_eq!(f.entries.len(), 3);
        assert_eq!(f.entries[0].id.as_deref(), Some("urn:1"));
        assert_eq!(f.entries[1].id.as_deref(), Some("http://x/2"));
        assert_eq!(f.entries[2].id, None);
        assert!(ATOM[f.entries[0].span.clone()].starts_with("<entry><id>urn:1"));
        assert!(ATOM[f.entries[0].span.clone()].ends_with("</entry>"));
    }

    #[test]
    fn cutting_keeps_everything_else() {
        let f = split(ATOM).unwrap();
        let out = without_entries(ATOM, &f.entries, &[false, true, false]);
        assert!(out.contains("xmlns:ex=\"urn:ex\""));
        assert!(out.contains("<ex:thing>kept</ex:thing>"));
        assert!(out.contains("<title>T &amp; co</title>"));
        assert!(!out.contains("urn:1"));
        assert!(out.contains("http://x/2"));
        let again = split(&out).unwrap();
        assert_eq!(again.entries.len(), 1);
    }

    #[test]
    fn rss_items() {
        let rss = r#"<rss version="2.0"><channel><title>c</title>
<item><guid isPermaLink="false">g1</guid><title>a</title></item>
<item><link>http://x/b</link></item>
</channel></rss>"#;
        let f = split(rss).unwrap();
        assert_eq!(f.kind, XmlFeedKind::Rss);
        let ids: Vec<_> = f.entries.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(ids, ["g1", "http://x/b"]);
    }

    #[test]
    fn rss1_items() {
        let rdf = r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<channel><title>c</title></channel><item><link>http://x/1</link></item></rdf:RDF>"#;
        let f = split(rdf).unwrap();
        assert_eq!(f.entries.len(), 1);
        assert_eq!(f.entries[0].id.as_deref(), Some("http://x/1"));
    }

    #[test]
    fn refuses_entity_declarations_and_garbage() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><feed xmlns="http://www.w3.org/2005/Atom"><title>&lol2;</title></feed>"#;
        assert!(matches!(split(bomb), Err(FeedError::Refused(_))));
        assert!(matches!(
            split("<html><body/></html>"),
            Err(FeedError::NotAFeed)
        ));
        assert!(matches!(
            split("<feed><entry></feed>"),
            Err(FeedError::Malformed(_))
        ));
        assert!(split("").is_err());
    }

    #[test]
    fn merge_keeps_the_newest_frame_and_the_union_of_entries() {
        let v1 = "<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>old</title>\n<entry><id>a</id><title>A</title></entry>\n<entry><id>b</id><title>B</title></entry>\n</feed>";
        let v2 = "<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>new</title>\n<entry><id>c</id><title>C</title></entry>\n<entry><id>b</id><title>B2</title></entry>\n</feed>";
        let m = merge(&[v1, v2]).unwrap();
        let f = split(&m).unwrap();
        let ids: Vec<_> = f.entries.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert!(m.contains("<title>new</title>") && !m.contains("<title>old</title>"));
        assert!(m.contains("B2") && !m.contains("<title>B</title>"), "{m}");
        // Different kinds, or a newest document without entries, do not merge.
        let rss = "<rss><channel><item><guid>x</guid></item></channel></rss>";
        assert_eq!(merge(&[rss, v2]), None);
        assert_eq!(
            merge(&[v1, "<feed xmlns=\"http://www.w3.org/2005/Atom\"></feed>"]),
            None
        );
        assert_eq!(merge(&[v1]).as_deref(), Some(v1));
    }
}
