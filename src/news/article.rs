//! A hosted topic's entry as a news article (RFC 5536): headers from the entry (a mail's own
//! Message-ID and References when it came by mail), `Path`, `Newsgroups` and `Xref` added, a
//! plain-text body (the text, or the text rendering of HTML, and the entry's link).

use crate::storage::hosted::{ContentKind, HostedEntry, HostedTopic};

/// What NNTP needs to know about where it serves.
#[derive(Debug, Clone)]
pub struct Site {
    /// The name in `Path` and `Xref`.
    pub host: String,
    pub group_prefix: String,
    /// The lists' mail domain, for `From` when an entry has no author address.
    pub mail_domain: Option<String>,
    pub urls: crate::hosted::Urls,
}

impl Site {
    pub fn group(&self, name: &str) -> String {
        format!("{}.{name}", self.group_prefix)
    }

    /// The topic name a group names.
    pub fn name_of<'a>(&self, group: &'a str) -> Option<&'a str> {
        let name = group.strip_prefix(&self.group_prefix)?.strip_prefix('.')?;
        crate::hosted::valid_name(name).ok().map(|_| name)
    }

    /// An entry's Message-ID, with angle brackets: the mail's own, or `<KEY.NAME@host>`.
    pub fn message_id(&self, name: &str, e: &HostedEntry) -> String {
        match &e.message_id {
            Some(m) => format!("<{m}>"),
            None => format!("<{}.{name}@{}>", e.key, self.host),
        }
    }

    /// The topic name and key of a Message-ID made by [`Site::message_id`] for an entry that
    /// did not come by mail.
    pub fn parse_own(&self, mid: &str) -> Option<(String, String)> {
        let inner = mid.strip_prefix('<')?.strip_suffix('>')?;
        let (local, host) = inner.rsplit_once('@')?;
        if !host.eq_ignore_ascii_case(&self.host) {
            return None;
        }
        let (key, name) = local.split_once('.')?;
        Some((name.to_owned(), key.to_owned()))
    }
}

/// Header and body of one article.
#[derive(Debug, Clone)]
pub struct Article {
    pub number: u64,
    pub message_id: String,
    /// (name, value), in order.
    pub headers: Vec<(&'static str, String)>,
    /// Lines without line ends (dot-stuffing is the server's).
    pub body: Vec<String>,
}

impl Article {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Size in octets as sent (CRLF line ends).
    pub fn bytes(&self) -> usize {
        self.headers
            .iter()
            .map(|(k, v)| k.len() + 2 + v.len() + 2)
            .sum::<usize>()
            + 2
            + self.body.iter().map(|l| l.len() + 2).sum::<usize>()
    }
}

/// No CR or LF inside a header.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn rfc2822(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// The article of entry `e`; `parent`: the Message-ID of the entry it answers, when that one
/// did not come by mail (a mail's own `References` are kept).
pub fn of(site: &Site, topic: &HostedTopic, e: &HostedEntry, parent: Option<&str>) -> Article {
    let name = &topic.name;
    let group = site.group(name);
    let message_id = one_line(&site.message_id(name, e));
    let from = match &e.author {
        Some(a) => {
            let address = a.email.as_deref().map(one_line).unwrap_or_else(|| {
                format!(
                    "{name}@{}",
                    site.mail_domain.as_deref().unwrap_or(&site.host)
                )
            });
            if a.name.is_empty() {
                address
            } else {
                format!("\"{}\" <{address}>", one_line(&a.name).replace('"', "'"))
            }
        }
        None => format!(
            "\"{}\" <{name}@{}>",
            one_line(&topic.title).replace('"', "'"),
            site.mail_domain.as_deref().unwrap_or(&site.host)
        ),
    };
    let text = match (e.kind, &e.text) {
        (ContentKind::Html, Some(t)) => t.clone(),
        (ContentKind::Html, None) => {
            html2text::from_read(e.content.as_bytes(), 78).unwrap_or_default()
        }
        (ContentKind::Text, _) => e.content.clone(),
    };
    let subject = if e.title.trim().is_empty() {
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = words.chars().take(60).collect();
        if short.is_empty() {
            "(no subject)".to_owned()
        } else {
            short
        }
    } else {
        one_line(&e.title)
    };
    let references: Vec<String> = if !e.references.is_empty() {
        e.references
            .iter()
            .map(|r| format!("<{}>", one_line(r)))
            .collect()
    } else {
        parent.map(str::to_owned).into_iter().collect()
    };
    let mut headers = vec![
        ("Path", format!("{}!not-for-mail", site.host)),
        ("From", from),
        ("Newsgroups", group.clone()),
        ("Subject", subject),
        ("Date", rfc2822(e.published_ms)),
        ("Message-ID", message_id.clone()),
    ];
    if !references.is_empty() {
        headers.push(("References", references.join(" ")));
    }
    headers.extend([
        ("MIME-Version", "1.0".to_owned()),
        ("Content-Type", "text/plain; charset=utf-8".to_owned()),
        ("Content-Transfer-Encoding", "8bit".to_owned()),
        ("Xref", format!("{} {group}:{}", site.host, e.seq)),
    ]);
    let mut body: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    body.push(String::new());
    body.push("-- ".to_owned());
    body.push(
        e.link
            .clone()
            .unwrap_or_else(|| site.urls.entry(name, &e.key)),
    );
    Article {
        number: e.seq,
        message_id,
        headers,
        body,
    }
}
