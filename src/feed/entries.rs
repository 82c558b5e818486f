//! The entries of an update, whatever its format: Atom entries (atom_syndication), RSS items
//! ([`super::rss`]), JSON Feed items, or the whole content as one. Mail to subscribers and the
//! history of mirrored topics are made of them.

use sha2::{Digest, Sha256};

/// An entry of an update, as mail, news and mirrored history carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedEntry {
    pub id: String,
    pub title: String,
    pub text: String,
    pub html: Option<String>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub in_reply_to: Option<String>,
    pub link: Option<String>,
}

/// The entries of an update: Atom entries, RSS items, JSON Feed items, or the whole content as
/// one.
pub fn entries_of(content_type: &str, body: &[u8]) -> (Option<String>, Vec<FeedEntry>) {
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
                    FeedEntry {
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
                FeedEntry {
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
        vec![FeedEntry {
            id,
            text,
            ..FeedEntry::default()
        }],
    )
}

fn html_to_text(html: &str) -> String {
    html2text::from_read(html.as_bytes(), 78).unwrap_or_default()
}
