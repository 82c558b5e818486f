//! Hosted topics' JSON Feed 1.1 documents, and posted JSON Feed items. Threading and
//! deletions, which JSON Feed has no words for, go in a `_hubcast` extension object
//! (`in_reply_to`, `seq`; `deleted` on an item that only announces a deletion).

use serde::Deserialize;
use serde_json::{Value, json};

use super::input::{EntryInput, InputError};
use super::{Urls, parse_rfc3339, rfc3339};
use crate::storage::hosted::{Author, ContentKind, HostedEntry, HostedTopic};

pub const MEDIA_TYPE: &str = "application/feed+json";

fn item(urls: &Urls, topic: &HostedTopic, e: &HostedEntry) -> Value {
    let page = urls.entry(&topic.name, &e.key);
    let mut v = json!({
        "id": e.id,
        "url": e.link.as_deref().unwrap_or(&page),
        "date_published": rfc3339(e.published_ms),
        "date_modified": rfc3339(e.updated_ms),
        "_hubcast": { "seq": e.seq, "key": e.key },
    });
    if !e.title.is_empty() {
        v["title"] = json!(e.title);
    }
    match e.kind {
        ContentKind::Text => v["content_text"] = json!(e.content),
        ContentKind::Html => {
            v["content_html"] = json!(e.content);
            if let Some(t) = &e.text {
                v["content_text"] = json!(t);
            }
        }
    }
    if let Some(a) = &e.author {
        let mut author = json!({ "name": a.name });
        if let Some(u) = &a.uri {
            author["url"] = json!(u);
        }
        v["authors"] = json!([author]);
    }
    if let Some(parent) = &e.in_reply_to {
        v["_hubcast"]["in_reply_to"] = json!(parent);
    }
    v
}

/// A JSON Feed of the topic with `entries` (newest first), the deletions announced, and the
/// URL of the next (older) page.
pub fn feed(
    urls: &Urls,
    topic: &HostedTopic,
    entries: &[HostedEntry],
    deleted: &[super::atom::Deleted],
    self_url: Option<&str>,
    next_url: Option<&str>,
) -> Vec<u8> {
    let mut items: Vec<Value> = deleted
        .iter()
        .map(|d| json!({ "id": d.id, "date_modified": rfc3339(d.when_ms), "_hubcast": { "deleted": true } }))
        .collect();
    items.extend(entries.iter().map(|e| item(urls, topic, e)));
    let mut doc = json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": topic.title,
        "home_page_url": urls.profile(&topic.name),
        "feed_url": self_url.map(str::to_owned).unwrap_or_else(|| urls.json(&topic.name)),
        "hubs": [{ "type": "WebSub", "url": urls.hub() }],
        "items": items,
    });
    if let Some(next) = next_url {
        doc["next_url"] = json!(next);
    }
    serde_json::to_vec(&doc).expect("JSON values serialise")
}

#[derive(Deserialize)]
struct PostedItem {
    id: Option<Value>,
    #[serde(default)]
    title: String,
    content_text: Option<String>,
    content_html: Option<String>,
    url: Option<String>,
    date_published: Option<String>,
    #[serde(default)]
    authors: Vec<PostedAuthor>,
    #[serde(default, rename = "_hubcast")]
    hubcast: Option<PostedExtension>,
}

#[derive(Deserialize)]
struct PostedAuthor {
    #[serde(default)]
    name: String,
    url: Option<String>,
}

#[derive(Deserialize)]
struct PostedExtension {
    in_reply_to: Option<String>,
}

/// A posted JSON Feed item.
pub fn parse_item(body: &[u8]) -> Result<EntryInput, InputError> {
    let item: PostedItem = serde_json::from_slice(body)
        .map_err(|e| InputError::Invalid(format!("not a JSON Feed item: {e}")))?;
    let (content, kind) = match (item.content_html, item.content_text) {
        (Some(h), _) => (h, ContentKind::Html),
        (None, Some(t)) => (t, ContentKind::Text),
        (None, None) => (String::new(), ContentKind::Text),
    };
    let id = match item.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(InputError::Invalid("id must be a string".into())),
    };
    let published_ms = match item.date_published {
        Some(d) => Some(parse_rfc3339(&d).ok_or_else(|| {
            InputError::Invalid(format!("date_published {d:?} is not an RFC 3339 date"))
        })?),
        None => None,
    };
    Ok(EntryInput {
        id,
        title: item.title,
        content,
        kind,
        author: item.authors.into_iter().next().map(|a| Author {
            name: a.name,
            email: None,
            uri: a.url,
        }),
        in_reply_to: item.hubcast.and_then(|h| h.in_reply_to),
        link: item.url,
        published_ms,
        ..EntryInput::default()
    })
}
