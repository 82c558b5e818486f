//! RSS 2.0 items as entries (`title`, `link`, `description`, `guid`, `author` or
//! `dc:creator`), read with quick-xml: mail subscribers and mirrored newsgroups of RSS topics
//! get the items, not a notice that the topic changed. A document type declaration is refused,
//! as everywhere the hub reads XML.

use quick_xml::Reader;
use quick_xml::events::Event;

use super::entries::FeedEntry;

/// Items read at most.
const MAX_ITEMS: usize = 10_000;

/// The channel title and items of an RSS document; `None` when it is not one.
pub fn items(body: &[u8]) -> Option<(Option<String>, Vec<FeedEntry>)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut path: Vec<String> = Vec::new();
    let mut channel_title = None;
    let mut items = Vec::new();
    let mut item: Option<FeedEntry> = None;
    let mut saw_rss = false;
    // The text of the element being read (entity references arrive as events of their own).
    let mut buf = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::DocType(_) => return None,
            Event::Start(e) => {
                let name = e.name();
                let name: &str = name.as_ref();
                if name == "rss" || name == "rdf:RDF" {
                    saw_rss = true;
                }
                if name == "item" {
                    item = Some(FeedEntry::default());
                }
                path.push(name.to_owned());
                buf.clear();
            }
            Event::End(_) => {
                let value = std::mem::take(&mut buf).trim().to_owned();
                if !value.is_empty() {
                    set(&path, &mut item, &mut channel_title, value);
                }
                if path.last().map(String::as_str) == Some("item")
                    && let Some(mut it) = item.take()
                    && items.len() < MAX_ITEMS
                {
                    if it.id.is_empty() {
                        it.id = it.link.clone().unwrap_or_else(|| it.title.clone());
                    }
                    items.push(it);
                }
                path.pop();
            }
            Event::Text(t) => buf.push_str(&t),
            Event::CData(c) => buf.push_str(&c),
            Event::GeneralRef(r) => {
                let name: &str = &r;
                let ch = match name {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    n => n
                        .strip_prefix("#x")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .or_else(|| n.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32),
                };
                if let Some(c) = ch {
                    buf.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    saw_rss.then_some((channel_title, items))
}

fn set(path: &[String], item: &mut Option<FeedEntry>, title: &mut Option<String>, value: String) {
    let Some(field) = path.last().map(String::as_str) else {
        return;
    };
    match item {
        Some(it) => match field {
            "title" => it.title = value,
            "link" => it.link = Some(value),
            "guid" => it.id = value,
            // Descriptions are HTML by convention; the fuller content:encoded wins.
            "description" | "content:encoded"
                if it.html.is_none() || field == "content:encoded" =>
            {
                it.text = html2text::from_read(value.as_bytes(), 78).unwrap_or_default();
                it.html = Some(value);
            }
            "author" | "dc:creator" => it.author_name = Some(value),
            _ => {}
        },
        None if field == "title" && path.len() == 3 => *title = Some(value),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_items_become_entries() {
        let doc = br#"<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Blog</title>
<item><title>One &amp; two</title><link>https://b.example/1</link><guid>urn:1</guid><description><![CDATA[<p>Hi <b>there</b></p>]]></description><dc:creator>Ann</dc:creator></item>
<item><title>No guid</title><link>https://b.example/2</link></item></channel></rss>"#;
        let (title, items) = items(doc).unwrap();
        assert_eq!(title.as_deref(), Some("Blog"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].title, "One & two");
        assert_eq!(items[0].id, "urn:1");
        assert_eq!(items[0].html.as_deref(), Some("<p>Hi <b>there</b></p>"));
        assert!(items[0].text.contains("Hi"));
        assert_eq!(items[0].author_name.as_deref(), Some("Ann"));
        assert_eq!(items[1].id, "https://b.example/2");
        assert!(super::items(b"<feed/>").is_none());
        assert!(super::items(b"<!DOCTYPE x [<!ENTITY a 'b'>]><rss/>").is_none());
    }
}
