//! Topic prefixes in the config (`publishers[].topics`, `subscriptions.allowed_topics`),
//! matched on URL boundaries rather than as plain strings: the scheme and host exactly, the
//! port when the prefix names one, then whole path segments. `http://127.0.0.1` covers
//! `http://127.0.0.1:8080/a` but neither `http://127.0.0.10/` nor
//! `http://127.0.0.1.evil.example/`; `http://a/blog` covers `/blog` and `/blog/x`, not
//! `/blogger`; `http://a/blog/` covers what is under `/blog/`.

use std::fmt;

use url::Url;

use crate::urls::HttpUrl;

/// A parsed topic prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicPrefix {
    written: String,
    scheme: String,
    host: String,
    /// Set when the prefix names a port (the default one included).
    port: Option<u16>,
    /// Normalised as topics are; `/` covers every path.
    path: String,
}

impl TopicPrefix {
    /// Parses a prefix: an http(s) URL with a host, without query, fragment or credentials.
    pub fn parse(raw: &str) -> Result<TopicPrefix, String> {
        let normal = HttpUrl::parse(raw).map_err(|e| format!("{raw:?} {e}"))?;
        let url = Url::parse(normal.as_str()).map_err(|e| format!("{raw:?}: {e}"))?;
        if url.query().is_some() {
            return Err(format!("{raw:?} must not have a query (?…)"));
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        Ok(TopicPrefix {
            written: raw.trim().to_owned(),
            scheme: url.scheme().to_owned(),
            port: names_port(raw)
                .then(|| url.port_or_known_default())
                .flatten(),
            host,
            path: url.path().to_owned(),
        })
    }

    /// Does the prefix cover `topic` (a normalised topic URL)?
    pub fn covers(&self, topic: &str) -> bool {
        let Ok(url) = Url::parse(topic) else {
            return false;
        };
        if url.scheme() != self.scheme || url.host_str() != Some(self.host.as_str()) {
            return false;
        }
        if self.port.is_some() && url.port_or_known_default() != self.port {
            return false;
        }
        let path = url.path();
        if self.path == "/" || self.path.ends_with('/') {
            return path.starts_with(&self.path);
        }
        path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl fmt::Debug for TopicPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.written)
    }
}

impl fmt::Display for TopicPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Does the URL as written name a port (`host:port`, `[v6]:port`)?
fn names_port(raw: &str) -> bool {
    let Some((_, rest)) = raw.trim().split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let after_host = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    after_host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(prefix: &str, topic: &str) -> bool {
        let topic = HttpUrl::parse(topic).unwrap();
        TopicPrefix::parse(prefix).unwrap().covers(topic.as_str())
    }

    #[test]
    fn hosts_match_exactly() {
        assert!(covers("http://127.0.0.1", "http://127.0.0.1:8080/a"));
        assert!(covers("http://127.0.0.1", "http://127.0.0.1/"));
        assert!(!covers("http://127.0.0.1", "http://127.0.0.10/"));
        assert!(!covers(
            "http://127.0.0.1",
            "http://127.0.0.1.evil.example/"
        ));
        assert!(!covers("http://127.0.0.1", "https://127.0.0.1/"));
        assert!(covers("HTTP://Blog.Example", "http://blog.example/feed"));
        assert!(!covers(
            "http://blog.example",
            "http://evil.blog.example/feed"
        ));
    }

    #[test]
    fn a_named_port_must_match() {
        assert!(covers("http://127.0.0.1:1/j/", "http://127.0.0.1:1/j/news"));
        assert!(!covers(
            "http://127.0.0.1:1/j/",
            "http://127.0.0.1:2/j/news"
        ));
        assert!(
            covers("http://a:80/", "http://a/x"),
            "the default port, written"
        );
        assert!(!covers("http://a:80/", "http://a:8080/x"));
        assert!(covers("http://[::1]:8080/", "http://[::1]:8080/x"));
        assert!(!covers("http://[::1]:8080/", "http://[::1]:9090/x"));
    }

    #[test]
    fn paths_match_whole_segments() {
        assert!(covers("http://a/blog", "http://a/blog"));
        assert!(covers("http://a/blog", "http://a/blog/feed"));
        assert!(!covers("http://a/blog", "http://a/blogger"));
        assert!(covers("http://a/blog/", "http://a/blog/feed"));
        assert!(!covers("http://a/blog/", "http://a/blog"));
        assert!(covers("http://a/blog", "http://a/blog?page=2"));
        assert!(
            covers("http://a/%7Euser/", "http://a/~user/feed"),
            "normalised alike"
        );
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["ftp://a/", "http://", "http://a/?q=1", "http://a/#f", "a/b"] {
            assert!(TopicPrefix::parse(bad).is_err(), "{bad}");
        }
    }
}
