//! Hosted topics: what they are named, where they live, and their documents. The hub is the
//! publisher of `/t/{name}` (Atom) and `/t/{name}.json` (JSON Feed); the owner posts entries,
//! which fan out like any update and stay in the topic's history.

pub mod atom;
pub mod input;
pub mod json_feed;

use sha2::{Digest, Sha256};

use crate::storage::hosted::{HostedEntry, HostedTopic};

/// Longest name.
const MAX_NAME: usize = 64;

/// Whether `name` can name a hosted topic: `[a-z0-9][a-z0-9_-]*`, at most 64 characters, so it
/// is at once a path segment, a mail local part and the last part of a newsgroup name.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a topic name: 1 to {MAX_NAME} lowercase letters, digits, '-' or '_', \
             starting with a letter or digit"
        ))
    }
}

/// Whether `token` is the owner's (constant time).
pub fn token_matches(topic: &HostedTopic, token: &str) -> bool {
    crate::signature::constant_time_eq(token.as_bytes(), topic.token.as_bytes())
}

/// A token the owner must keep secret: at least 16 characters, printable ASCII.
pub fn valid_token(token: &str) -> Result<(), String> {
    if token.len() < 16 || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be 16 to 256 printable ASCII characters".into());
    }
    Ok(())
}

/// Where a hosted topic's documents are, from the hub's URL.
#[derive(Debug, Clone)]
pub struct Urls {
    base: String,
}

impl Urls {
    pub fn new(hub_url: &str) -> Urls {
        Urls {
            base: hub_url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn hub(&self) -> String {
        format!("{}/", self.base)
    }

    /// The topic (Atom).
    pub fn atom(&self, name: &str) -> String {
        format!("{}/t/{name}", self.base)
    }

    /// The topic (JSON Feed).
    pub fn json(&self, name: &str) -> String {
        format!("{}/t/{name}.json", self.base)
    }

    /// An entry's page.
    pub fn entry(&self, name: &str, key: &str) -> String {
        format!("{}/t/{name}/{key}", self.base)
    }

    /// The profile page.
    pub fn profile(&self, name: &str) -> String {
        format!("{}/@{name}", self.base)
    }

    /// An archive page (RFC 5005) of the Atom or JSON document.
    pub fn page(&self, name: &str, json: bool, page: u64) -> String {
        let ext = if json { ".json" } else { "" };
        format!("{}/t/{name}{ext}?page={page}", self.base)
    }

    /// The hosted topic a topic URL names, and whether it is the JSON Feed one.
    pub fn topic_of<'a>(&self, topic: &'a str) -> Option<(&'a str, bool)> {
        let rest = topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix("/t/")?;
        let (name, json) = match rest.strip_suffix(".json") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        valid_name(name).ok()?;
        Some((name, json))
    }
}

/// What makes an entry this entry: a resend with the same digest is the same entry.
pub fn digest(e: &HostedEntry) -> String {
    let mut h = Sha256::new();
    for part in [
        e.title.as_str(),
        e.content.as_str(),
        e.in_reply_to.as_deref().unwrap_or(""),
        e.link.as_deref().unwrap_or(""),
        e.author.as_ref().map_or("", |a| a.name.as_str()),
        e.author
            .as_ref()
            .and_then(|a| a.email.as_deref())
            .unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update([e.kind as u8]);
    hex::encode(h.finalize())
}

/// A new entry key: 16 hex digits.
pub fn new_key() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// RFC 3339 from milliseconds since the epoch.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Milliseconds since the epoch from RFC 3339.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_path_segments_mail_local_parts_and_newsgroup_parts() {
        for ok in ["b", "brad", "a-b_c9", "0x"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "B", "a.b", "-a", "a b", "a+b", "a/b", &"x".repeat(65)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_urls_name_their_topic_and_format() {
        let u = Urls::new("http://hub.example/");
        assert_eq!(u.atom("b"), "http://hub.example/t/b");
        assert_eq!(u.topic_of("http://hub.example/t/b"), Some(("b", false)));
        assert_eq!(u.topic_of("http://hub.example/t/b.json"), Some(("b", true)));
        assert_eq!(u.topic_of("http://hub.example/t/B"), None);
        assert_eq!(u.topic_of("http://other.example/t/b"), None);
        assert_eq!(u.topic_of("http://hub.example/t/b/x"), None);
    }

    #[test]
    fn dates_go_both_ways() {
        let ms = 1_790_000_000_000;
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(parse_rfc3339("not a date"), None);
    }
}
