//! An NNTP session (RFC 3977), read-only: CAPABILITIES, MODE READER, LIST ACTIVE / NEWSGROUPS /
//! OVERVIEW.FMT, GROUP, LISTGROUP, ARTICLE / HEAD / BODY / STAT by number or Message-ID, NEXT /
//! LAST, OVER and XOVER, HDR and XHDR, NEWGROUPS, NEWNEWS, DATE, HELP, QUIT; POST answers 440
//! naming the list's address, IHAVE 435. Long answers are read from the store a page at a time
//! and cover a bounded range; a session idle past `nntp.idle_timeout` is closed.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::article::{self, Article};
use super::server::Server;
use crate::storage::StorageError;
use crate::storage::hosted::{EntryRange, HostedEntry, HostedTopic};

/// Longest command line taken.
const MAX_LINE: usize = 512;
/// Entries read from the store at a time for long answers.
const PAGE: usize = 500;
/// Groups listed at most.
const MAX_GROUPS: usize = 100_000;
/// Articles one OVER, HDR, LISTGROUP or NEWNEWS answer covers at most: a reader asking for
/// more gets the first ones and asks again from the next number (as for any large group).
const MAX_RANGE: usize = 2_000;

/// What overview and header answers need of an article: its headers, and its size and line
/// count as the pseudo-headers `:bytes` and `:lines`; not its body.
fn summarised(mut a: Article) -> Article {
    let (bytes, lines) = (a.bytes(), a.body.len());
    a.body = Vec::new();
    a.headers.push((":bytes", bytes.to_string()));
    a.headers.push((":lines", lines.to_string()));
    a
}

pub(super) struct Session<'a> {
    s: &'a Server,
    /// The selected group's topic, and the current article number.
    group: Option<HostedTopic>,
    current: Option<u64>,
}

/// A reply: lines, the first the status line; multi-line replies end with `.`.
type Reply = Vec<String>;

fn status(line: impl Into<String>) -> Reply {
    vec![line.into()]
}

fn storage_failed(e: &StorageError) -> Reply {
    tracing::warn!(error = %e, "NNTP storage read failed");
    status("403 internal fault: storage unavailable, try again later")
}

/// `n`, `n-`, `n-m` (RFC 3977 §6.1.1.2 forms).
fn parse_range(r: &str) -> Option<(u64, u64)> {
    match r.split_once('-') {
        None => r.parse().ok().map(|n| (n, n)),
        Some((a, "")) => Some((a.parse().ok()?, u64::MAX)),
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
    }
}

/// `yyyymmdd hhmmss` or `yymmdd hhmmss` → ms since the epoch (UTC).
fn parse_date(date: &str, time: &str) -> Option<u64> {
    if !date.bytes().chain(time.bytes()).all(|b| b.is_ascii_digit()) || time.len() != 6 {
        return None;
    }
    let date = match date.len() {
        8 => date.to_owned(),
        6 => {
            let yy: u32 = date[..2].parse().ok()?;
            let century = if yy <= 69 { "20" } else { "19" };
            format!("{century}{date}")
        }
        _ => return None,
    };
    let t = chrono::NaiveDateTime::parse_from_str(&format!("{date}{time}"), "%Y%m%d%H%M%S").ok()?;
    u64::try_from(t.and_utc().timestamp_millis()).ok()
}

impl<'a> Session<'a> {
    pub(super) fn new(s: &'a Server) -> Session<'a> {
        Session {
            s,
            group: None,
            current: None,
        }
    }

    pub(super) async fn run(mut self, stream: TcpStream, stop: &CancellationToken) {
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r).take(u64::MAX);
        let greeting = format!("201 {} hubcast NNTP, reading only\r\n", self.s.site.host);
        if w.write_all(greeting.as_bytes()).await.is_err() {
            return;
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            r.set_limit(MAX_LINE as u64 + 2);
            let read = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = w.write_all(b"400 the server is stopping\r\n").await;
                    return;
                }
                r = tokio::time::timeout(self.s.cfg.idle_timeout, r.read_until(b'\n', &mut line)) => r,
            };
            match read {
                Err(_) => {
                    let _ = w
                        .write_all(b"400 idle too long (nntp.idle_timeout)\r\n")
                        .await;
                    return;
                }
                Ok(Err(_)) | Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
            }
            if line.last() != Some(&b'\n') {
                let _ = w.write_all(b"501 line too long\r\n").await;
                return;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let (reply, quit) = self.command(text).await;
            let mut out = Vec::new();
            for (i, l) in reply.iter().enumerate() {
                // Dot-stuffing of the lines of a multi-line answer.
                if i > 0 && l.starts_with('.') && l != "." {
                    out.push(b'.');
                }
                out.extend_from_slice(l.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            if w.write_all(&out).await.is_err() || quit {
                return;
            }
        }
    }

    async fn command(&mut self, line: &str) -> (Reply, bool) {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        let reply = match verb.as_str() {
            "CAPABILITIES" => vec![
                "101 capability list follows".into(),
                "VERSION 2".into(),
                "READER".into(),
                "NEWNEWS".into(),
                "LIST ACTIVE NEWSGROUPS OVERVIEW.FMT".into(),
                "OVER".into(),
                "HDR".into(),
                "IMPLEMENTATION hubcast".into(),
                ".".into(),
            ],
            "MODE"
                if args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case("READER")) =>
            {
                status("201 reading only: posting prohibited")
            }
            "QUIT" => return (status("205 bye"), true),
            "DATE" => status(format!(
                "111 {}",
                chrono::DateTime::from_timestamp_millis(self.s.clock.now_ms() as i64)
                    .unwrap_or_default()
                    .format("%Y%m%d%H%M%S")
            )),
            "HELP" => vec![
                "100 help text follows".into(),
                "  ARTICLE|HEAD|BODY|STAT [n|<message-id>]".into(),
                "  CAPABILITIES  DATE  HELP  QUIT  MODE READER".into(),
                "  GROUP group  LISTGROUP [group [range]]  NEXT  LAST".into(),
                "  LIST [ACTIVE|NEWSGROUPS [wildmat]]  LIST OVERVIEW.FMT".into(),
                "  OVER|XOVER [range|<message-id>]  HDR|XHDR field [range|<message-id>]".into(),
                "  NEWGROUPS yyyymmdd hhmmss [GMT]  NEWNEWS wildmat yyyymmdd hhmmss [GMT]".into(),
                "  POST (refused: mail the list instead)".into(),
                ".".into(),
            ],
            "POST" => status(match (&self.group, &self.s.lmtp_domain) {
                (Some(t), Some(d)) => {
                    format!("440 posting not permitted: mail {}@{d} to post", t.name)
                }
                (None, Some(d)) => {
                    format!("440 posting not permitted: mail the list's address (NAME@{d}) to post")
                }
                _ => "440 posting not permitted".to_owned(),
            }),
            "IHAVE" => status("435 article not wanted: this server takes no articles"),
            "LIST" => self.list(&args).await,
            "GROUP" => match args.first() {
                Some(g) => self.group(g, None).await,
                None => status("501 GROUP needs a group name"),
            },
            "LISTGROUP" => match args.first() {
                Some(g) => self.group(g, Some(args.get(1).copied())).await,
                None => match self.group.clone() {
                    Some(t) => self.group(&self.s.site.group(&t.name), Some(None)).await,
                    None => status("412 no newsgroup selected"),
                },
            },
            "ARTICLE" | "HEAD" | "BODY" | "STAT" => {
                self.article(&verb, args.first().copied()).await
            }
            "NEXT" | "LAST" => self.step(verb == "NEXT").await,
            "OVER" | "XOVER" => self.over(args.first().copied()).await,
            "HDR" | "XHDR" => match args.first() {
                Some(field) => self.hdr(&verb, field, args.get(1).copied()).await,
                None => status("501 HDR needs a header name"),
            },
            "NEWGROUPS" => self.newgroups(&args).await,
            "NEWNEWS" => self.newnews(&args).await,
            "" => status("500 empty command"),
            _ => status(format!("500 unknown command {verb}")),
        };
        (reply, false)
    }

    async fn topics(&self) -> Result<Vec<HostedTopic>, StorageError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        while all.len() < MAX_GROUPS {
            let page = self
                .s
                .store
                .hosted
                .hosted_topics(after.as_deref(), 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            all.extend(page);
        }
        Ok(all)
    }

    /// (count, low, high) of a group; an empty group has low = high + 1.
    async fn marks(&self, t: &HostedTopic) -> Result<(u64, u64, u64), StorageError> {
        let (count, _) = self.s.store.hosted.hosted_count(&t.name).await?;
        // The high water mark never goes down (RFC 3977 §6.1.1.2), also after deletions.
        let high = self.s.store.hosted.hosted_last(&t.name).await?;
        let low = self
            .s
            .store
            .hosted
            .hosted_entries(&t.name, EntryRange::After(0), 1)
            .await?
            .first()
            .map_or(high + 1, |e| e.seq);
        Ok((count, low, high))
    }

    async fn list(&self, args: &[&str]) -> Reply {
        let what = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_else(|| "ACTIVE".into());
        let pattern = args.get(1).copied().unwrap_or("*");
        match what.as_str() {
            "OVERVIEW.FMT" => vec![
                "215 order of fields in overview database".into(),
                "Subject:".into(),
                "From:".into(),
                "Date:".into(),
                "Message-ID:".into(),
                "References:".into(),
                ":bytes".into(),
                ":lines".into(),
                "Xref:full".into(),
                ".".into(),
            ],
            "ACTIVE" | "NEWSGROUPS" => {
                let topics = match self.topics().await {
                    Ok(t) => t,
                    Err(e) => return storage_failed(&e),
                };
                let mut reply = vec![if what == "ACTIVE" {
                    "215 list of newsgroups follows".to_owned()
                } else {
                    "215 descriptions follow".to_owned()
                }];
                for t in topics {
                    let group = self.s.site.group(&t.name);
                    if !super::wildmat::matches(pattern, &group) {
                        continue;
                    }
                    if what == "ACTIVE" {
                        match self.marks(&t).await {
                            Ok((_, low, high)) => reply.push(format!("{group} {high} {low} n")),
                            Err(e) => return storage_failed(&e),
                        }
                    } else {
                        reply.push(format!(
                            "{group}\t{}",
                            t.title.replace(['\r', '\n', '\t'], " ")
                        ));
                    }
                }
                reply.push(".".into());
                reply
            }
            other => status(format!(
                "501 LIST {other} is not offered (ACTIVE, NEWSGROUPS, OVERVIEW.FMT)"
            )),
        }
    }

    async fn topic_of_group(&self, group: &str) -> Result<Option<HostedTopic>, StorageError> {
        match self.s.site.name_of(group) {
            Some(name) => self.s.store.hosted.hosted(name).await,
            None => Ok(None),
        }
    }

    /// GROUP, or LISTGROUP with `Some(range)`.
    async fn group(&mut self, group: &str, listgroup: Option<Option<&str>>) -> Reply {
        let topic = match self.topic_of_group(group).await {
            Ok(Some(t)) => t,
            Ok(None) => return status(format!("411 no such newsgroup {group}")),
            Err(e) => return storage_failed(&e),
        };
        let (count, low, high) = match self.marks(&topic).await {
            Ok(m) => m,
            Err(e) => return storage_failed(&e),
        };
        self.current = (count > 0).then_some(low);
        self.group = Some(topic.clone());
        let head = format!("211 {count} {low} {high} {group}");
        let Some(range) = listgroup else {
            return status(head);
        };
        let (from, to) = match range {
            None => (low, high),
            Some(r) => match parse_range(r) {
                Some(r) => r,
                None => return status("501 bad range"),
            },
        };
        let mut reply = vec![format!("{head} list follows")];
        match self.entries(&topic, from, to).await {
            Ok(entries) => reply.extend(entries.iter().map(|e| e.seq.to_string())),
            Err(e) => return storage_failed(&e),
        }
        reply.push(".".into());
        reply
    }

    /// Entries numbered `from..=to`, read a page at a time.
    async fn entries(
        &self,
        t: &HostedTopic,
        from: u64,
        to: u64,
    ) -> Result<Vec<HostedEntry>, StorageError> {
        let mut out = Vec::new();
        let mut after = from.saturating_sub(1);
        loop {
            // Never more than the range asks for (one article reads one entry).
            let want = to.saturating_sub(after).min(PAGE as u64) as usize;
            if want == 0 {
                break;
            }
            let page = self
                .s
                .store
                .hosted
                .hosted_entries(&t.name, EntryRange::After(after), want)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let done = page.len() < want || after >= to;
            out.extend(page.into_iter().filter(|e| e.seq <= to));
            if done || out.len() >= MAX_RANGE {
                out.truncate(MAX_RANGE);
                break;
            }
        }
        Ok(out)
    }

    async fn article_of(&self, t: &HostedTopic, e: &HostedEntry) -> Article {
        let parent = match (&e.in_reply_to, e.references.is_empty()) {
            (Some(id), true) => self
                .s
                .store
                .hosted
                .hosted_entry_by_id(&t.name, id)
                .await
                .ok()
                .flatten()
                .map(|p| self.s.site.message_id(&t.name, &p)),
            _ => None,
        };
        article::of(&self.s.site, t, e, parent.as_deref())
    }

    /// The entry a Message-ID names, in any group.
    async fn by_message_id(
        &self,
        mid: &str,
    ) -> Result<Option<(HostedTopic, HostedEntry)>, StorageError> {
        if let Some((name, key)) = self.s.site.parse_own(mid)
            && let Some(t) = self.s.store.hosted.hosted(&name).await?
            && let Some(e) = self.s.store.hosted.hosted_entry(&name, &key).await?
        {
            return Ok(Some((t, e)));
        }
        let inner = mid.trim_start_matches('<').trim_end_matches('>');
        let id = crate::mail::message::entry_id(inner);
        for t in self.topics().await? {
            if let Some(e) = self.s.store.hosted.hosted_entry_by_id(&t.name, &id).await? {
                return Ok(Some((t, e)));
            }
        }
        Ok(None)
    }

    async fn article(&mut self, verb: &str, arg: Option<&str>) -> Reply {
        let (t, e, number) = match arg {
            Some(mid) if mid.starts_with('<') => match self.by_message_id(mid).await {
                Ok(Some((t, e))) => (t, e, 0),
                Ok(None) => return status("430 no article with that message-id"),
                Err(e) => return storage_failed(&e),
            },
            other => {
                let Some(t) = self.group.clone() else {
                    return status("412 no newsgroup selected");
                };
                let n = match other {
                    Some(n) => match n.parse::<u64>() {
                        Ok(n) => n,
                        Err(_) => return status("501 not an article number or message-id"),
                    },
                    None => match self.current {
                        Some(n) => n,
                        None => return status("420 current article number is invalid"),
                    },
                };
                match self.entries(&t, n, n).await {
                    Ok(v) if !v.is_empty() => {
                        let e = v.into_iter().next().unwrap_or_default();
                        self.current = Some(n);
                        (t, e, n)
                    }
                    Ok(_) => return status(format!("423 no article numbered {n} in this group")),
                    Err(e) => return storage_failed(&e),
                }
            }
        };
        let a = self.article_of(&t, &e).await;
        let (code, head, body) = match verb {
            "ARTICLE" => (220, true, true),
            "HEAD" => (221, true, false),
            "BODY" => (222, false, true),
            _ => (223, false, false),
        };
        let mut reply = vec![format!("{code} {number} {}", a.message_id)];
        if head {
            reply.extend(a.headers.iter().map(|(k, v)| format!("{k}: {v}")));
        }
        if head && body {
            reply.push(String::new());
        }
        if body {
            reply.extend(a.body.iter().cloned());
        }
        if head || body {
            reply.push(".".into());
        }
        reply
    }

    async fn step(&mut self, next: bool) -> Reply {
        let Some(t) = self.group.clone() else {
            return status("412 no newsgroup selected");
        };
        let Some(cur) = self.current else {
            return status("420 current article number is invalid");
        };
        let found = if next {
            self.s
                .store
                .hosted
                .hosted_entries(&t.name, EntryRange::After(cur), 1)
                .await
        } else {
            self.s
                .store
                .hosted
                .hosted_entries(&t.name, EntryRange::Before(cur), 1)
                .await
        };
        match found {
            Ok(v) => match v.first() {
                Some(e) => {
                    self.current = Some(e.seq);
                    status(format!(
                        "223 {} {}",
                        e.seq,
                        self.s.site.message_id(&t.name, e)
                    ))
                }
                None if next => status("421 no next article in this group"),
                None => status("422 no previous article in this group"),
            },
            Err(e) => storage_failed(&e),
        }
    }

    /// The articles a range or Message-ID argument names (with their numbers; 0 for a
    /// Message-ID).
    async fn selected(&self, arg: Option<&str>) -> Result<Vec<(u64, Article)>, Reply> {
        match arg {
            Some(mid) if mid.starts_with('<') => match self.by_message_id(mid).await {
                Ok(Some((t, e))) => Ok(vec![(0, summarised(self.article_of(&t, &e).await))]),
                Ok(None) => Err(status("430 no article with that message-id")),
                Err(e) => Err(storage_failed(&e)),
            },
            other => {
                let Some(t) = self.group.clone() else {
                    return Err(status("412 no newsgroup selected"));
                };
                let (from, to) = match other {
                    Some(r) => parse_range(r).ok_or_else(|| status("501 bad range"))?,
                    None => match self.current {
                        Some(n) => (n, n),
                        None => return Err(status("420 current article number is invalid")),
                    },
                };
                let entries = self
                    .entries(&t, from, to)
                    .await
                    .map_err(|e| storage_failed(&e))?;
                if entries.is_empty() {
                    return Err(status("423 no articles in that range"));
                }
                let mut out = Vec::with_capacity(entries.len());
                for e in &entries {
                    out.push((e.seq, summarised(self.article_of(&t, e).await)));
                }
                Ok(out)
            }
        }
    }

    async fn over(&self, arg: Option<&str>) -> Reply {
        let articles = match self.selected(arg).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let mut reply = vec!["224 overview information follows".to_owned()];
        for (n, a) in articles {
            let h = |k: &str| a.header(k).unwrap_or("").replace('\t', " ");
            reply.push(format!(
                "{n}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\tXref: {}",
                h("Subject"),
                h("From"),
                h("Date"),
                h("Message-ID"),
                h("References"),
                h(":bytes"),
                h(":lines"),
                h("Xref")
            ));
        }
        reply.push(".".into());
        reply
    }

    async fn hdr(&self, verb: &str, field: &str, arg: Option<&str>) -> Reply {
        let articles = match self.selected(arg).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let mut reply = vec![if verb == "HDR" {
            "225 headers follow".to_owned()
        } else {
            "221 headers follow".to_owned()
        }];
        for (n, a) in articles {
            let value = match field.to_ascii_lowercase().as_str() {
                f @ (":bytes" | ":lines") => a.header(f).unwrap_or("").to_owned(),
                f => a.header(f.trim_end_matches(':')).unwrap_or("").to_owned(),
            };
            reply.push(format!("{n} {value}"));
        }
        reply.push(".".into());
        reply
    }

    async fn newgroups(&self, args: &[&str]) -> Reply {
        let (Some(date), Some(time)) = (args.first(), args.get(1)) else {
            return status("501 NEWGROUPS needs a date and a time");
        };
        let Some(since) = parse_date(date, time) else {
            return status("501 bad date or time");
        };
        let topics = match self.topics().await {
            Ok(t) => t,
            Err(e) => return storage_failed(&e),
        };
        let mut reply = vec!["231 list of new newsgroups follows".to_owned()];
        for t in topics.iter().filter(|t| t.created_ms >= since) {
            match self.marks(t).await {
                Ok((_, low, high)) => {
                    reply.push(format!("{} {high} {low} n", self.s.site.group(&t.name)))
                }
                Err(e) => return storage_failed(&e),
            }
        }
        reply.push(".".into());
        reply
    }

    async fn newnews(&self, args: &[&str]) -> Reply {
        let (Some(pattern), Some(date), Some(time)) = (args.first(), args.get(1), args.get(2))
        else {
            return status("501 NEWNEWS needs a wildmat, a date and a time");
        };
        let Some(since) = parse_date(date, time) else {
            return status("501 bad date or time");
        };
        let topics = match self.topics().await {
            Ok(t) => t,
            Err(e) => return storage_failed(&e),
        };
        let mut reply = vec!["230 list of new articles follows".to_owned()];
        for t in topics {
            if !super::wildmat::matches(pattern, &self.s.site.group(&t.name)) {
                continue;
            }
            match self.entries(&t, 1, u64::MAX).await {
                Ok(entries) => reply.extend(
                    entries
                        .iter()
                        .filter(|e| e.updated_ms >= since)
                        .map(|e| self.s.site.message_id(&t.name, e)),
                ),
                Err(e) => return storage_failed(&e),
            }
        }
        reply.push(".".into());
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_dates_of_rfc_3977() {
        assert_eq!(parse_range("5"), Some((5, 5)));
        assert_eq!(parse_range("5-"), Some((5, u64::MAX)));
        assert_eq!(parse_range("5-9"), Some((5, 9)));
        assert_eq!(parse_range("x"), None);
        assert_eq!(parse_date("20261201", "100000"), Some(1_796_119_200_000));
        assert_eq!(parse_date("261201", "100000"), Some(1_796_119_200_000));
        assert_eq!(parse_date("2026", "100000"), None);
    }
}
