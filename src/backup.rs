//! Backups: the whole store as JSON lines, one record a line, through the storage traits only,
//! so a backup taken from one backend restores into any other (the migration path between
//! backends). The first line is a header naming the format and its version. Bodies (events, fat
//! pings) are base64. A backup holds subscription secrets: treat the file as a secret.
//!
//! Restoring goes into an empty store only, and the whole file is checked ([`check`]) before
//! anything is written ([`import`]), so a malformed backup changes nothing.

use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::storage::{
    DeadLetter, Event, FatContent, Intent, Job, Ping, Retry, Storage, StorageError, Subscription,
    TopicState,
};

pub const FORMAT: &str = "hubcast-backup";
pub const VERSION: u32 = 1;
/// Records read from storage per call.
const PAGE: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot write the backup: {0}")]
    Write(std::io::Error),
    #[error("cannot read the backup: {0}")]
    Read(std::io::Error),
    #[error("line {line}: {message}")]
    Malformed { line: usize, message: String },
    #[error("the target store is not empty ({0}); restore into an empty data directory")]
    NotEmpty(&'static str),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Header {
        format: String,
        version: u32,
        created_ms: u64,
    },
    Subscription(Subscription),
    Intent(Intent),
    Ping {
        id: u64,
        topic: String,
        received_ms: u64,
        content_type: Option<String>,
        body_base64: Option<String>,
    },
    TopicState {
        topic: String,
        state: TopicState,
    },
    Event {
        seq: u64,
        topic: String,
        #[serde(default)]
        topic_seq: u64,
        #[serde(default)]
        origin: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        origin_seq: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
        content_type: String,
        created_ms: u64,
        body_base64: String,
        /// A delivery document (merged for a lagging destination, or kept for pending
        /// deliveries after the log pruned it), not a log entry.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        document: bool,
    },
    Job(Job),
    Retry(Retry),
    DeadLetter(DeadLetter),
    /// A hosted topic (its owner's token included).
    HostedTopic(crate::storage::hosted::HostedTopic),
    /// An entry of a hosted topic's history.
    HostedEntry {
        name: String,
        entry: crate::storage::hosted::HostedEntry,
    },
    /// A hosted topic's last number (after its entries).
    HostedLast {
        name: String,
        last: u64,
    },
    /// The store's signing key (hex): mailed links and bounce tags keep working.
    HubKey {
        hex: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many records of each kind were written or read.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub subscriptions: u64,
    pub intents: u64,
    pub pings: u64,
    pub topic_states: u64,
    pub events: u64,
    pub jobs: u64,
    pub retries: u64,
    pub dead_letters: u64,
    pub hosted_topics: u64,
    pub hosted_entries: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} subscriptions, {} pending verifications, {} pings, {} topic states, {} events, \
             {} jobs, {} retries, {} dead letters, {} hosted topics, {} hosted entries",
            self.subscriptions,
            self.intents,
            self.pings,
            self.topic_states,
            self.events,
            self.jobs,
            self.retries,
            self.dead_letters,
            self.hosted_topics,
            self.hosted_entries
        )
    }
}

fn line<W: Write>(out: &mut W, r: &Record) -> Result<(), BackupError> {
    serde_json::to_writer(&mut *out, r)
        .map_err(|e| BackupError::Write(std::io::Error::other(e)))?;
    out.write_all(b"\n").map_err(BackupError::Write)
}

/// Writes every record of `store` to `out`.
pub async fn export<W: Write>(
    store: &Storage,
    out: &mut W,
    now_ms: u64,
    progress: &mut Progress,
) -> Result<Counts, BackupError> {
    let mut n = Counts::default();
    let (_, total_subs) = store.subs.totals().await?;
    progress.set_total(total_subs);
    line(
        out,
        &Record::Header {
            format: FORMAT.into(),
            version: VERSION,
            created_ms: now_ms,
        },
    )?;
    let mut after: Option<(String, String)> = None;
    loop {
        let page = store
            .subs
            .scan(
                None,
                after.as_ref().map(|(t, c)| (t.as_str(), c.as_str())),
                PAGE,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.topic.clone(), last.callback.clone()));
        for s in page {
            line(out, &Record::Subscription(s))?;
            n.subscriptions += 1;
            progress.inc(1);
        }
    }
    for i in store.subs.intents().await? {
        line(out, &Record::Intent(i))?;
        n.intents += 1;
    }
    for p in store.publish.pings().await? {
        let (content_type, body_base64) = match p.fat {
            Some(f) => (Some(f.content_type), Some(B64.encode(&f.body))),
            None => (None, None),
        };
        line(
            out,
            &Record::Ping {
                id: p.id,
                topic: p.topic,
                received_ms: p.received_ms,
                content_type,
                body_base64,
            },
        )?;
        n.pings += 1;
    }
    let mut after: Option<String> = None;
    loop {
        let page = store.publish.topic_states(after.as_deref(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (topic, state) in page {
            line(out, &Record::TopicState { topic, state })?;
            n.topic_states += 1;
        }
    }
    for document in [false, true] {
        let mut after = 0;
        loop {
            let page = if document {
                store.log.documents(after, PAGE).await?
            } else {
                store.log.read(after + 1, u64::MAX, PAGE).await?
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in page {
                line(
                    out,
                    &Record::Event {
                        seq: e.seq,
                        topic: e.topic,
                        topic_seq: e.topic_seq,
                        origin: e.origin,
                        origin_seq: e.origin_seq,
                        path: e.path,
                        content_type: e.content_type,
                        created_ms: e.created_ms,
                        body_base64: B64.encode(&e.body),
                        document,
                    },
                )?;
                n.events += 1;
            }
        }
    }
    for j in store.delivery.jobs().await? {
        line(out, &Record::Job(j))?;
        n.jobs += 1;
    }
    for r in store.delivery.retries(usize::MAX).await? {
        line(out, &Record::Retry(r))?;
        n.retries += 1;
    }
    for d in store.delivery.dead_letters(usize::MAX).await? {
        line(out, &Record::DeadLetter(d))?;
        n.dead_letters += 1;
    }
    let mut after_topic: Option<String> = None;
    loop {
        let topics = store
            .hosted
            .hosted_topics(after_topic.as_deref(), PAGE)
            .await?;
        let Some(last) = topics.last() else { break };
        after_topic = Some(last.name.clone());
        for t in topics {
            let name = t.name.clone();
            line(out, &Record::HostedTopic(t))?;
            n.hosted_topics += 1;
            let last = store.hosted.hosted_last(&name).await?;
            let mut after = 0;
            loop {
                let range = crate::storage::hosted::EntryRange::After(after);
                let page = store.hosted.hosted_entries(&name, range, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for entry in page {
                    let name = name.clone();
                    line(out, &Record::HostedEntry { name, entry })?;
                    n.hosted_entries += 1;
                }
            }
            line(out, &Record::HostedLast { name, last })?;
        }
    }
    let hex = hex::encode(store.log.hub_key());
    line(out, &Record::HubKey { hex })?;
    out.flush().map_err(BackupError::Write)?;
    progress.finish();
    Ok(n)
}

/// Is there anything at all in `store`? Names the first kind of record found.
async fn first_content(store: &Storage) -> Result<Option<&'static str>, StorageError> {
    Ok(if store.subs.totals().await?.1 > 0 {
        Some("subscriptions")
    } else if !store.subs.intents().await?.is_empty() {
        Some("pending verifications")
    } else if !store.publish.pings().await?.is_empty() {
        Some("pings")
    } else if !store.publish.topic_states(None, 1).await?.is_empty() {
        Some("topic states")
    } else if store.log.bounds().await?.lead > 0 || !store.log.documents(0, 1).await?.is_empty() {
        Some("events")
    } else if !store.delivery.jobs().await?.is_empty() {
        Some("jobs")
    } else if !store.delivery.retries(1).await?.is_empty() {
        Some("retries")
    } else if !store.delivery.dead_letters(1).await?.is_empty() {
        Some("dead letters")
    } else if !store.hosted.hosted_topics(None, 1).await?.is_empty() {
        Some("hosted topics")
    } else {
        None
    })
}

fn malformed(line: usize, message: impl Into<String>) -> BackupError {
    BackupError::Malformed {
        line,
        message: message.into(),
    }
}

fn body(line: usize, b64: &str) -> Result<bytes::Bytes, BackupError> {
    B64.decode(b64)
        .map(bytes::Bytes::from)
        .map_err(|e| malformed(line, format!("body is not base64: {e}")))
}

/// Parses and checks line `n` of a backup; `first`: no record came before it.
/// The record, with its body (events, fat pings) decoded once here.
fn parse_line(
    n: usize,
    l: &str,
    first: bool,
) -> Result<(Record, Option<bytes::Bytes>), BackupError> {
    let r: Record = serde_json::from_str(l).map_err(|e| malformed(n, e.to_string()))?;
    let mut decoded = None;
    match (&r, first) {
        (
            Record::Header {
                format, version, ..
            },
            true,
        ) if format != FORMAT || *version != VERSION => {
            return Err(malformed(
                n,
                format!(
                    "format {format:?} version {version}; this hubcast reads {FORMAT:?} version {VERSION}"
                ),
            ));
        }
        (Record::Header { .. }, true) => {}
        (_, true) => return Err(malformed(n, "the first line must be the backup header")),
        (Record::Header { .. }, false) => return Err(malformed(n, "a second header")),
        (Record::Event { body_base64, .. }, _) => {
            decoded = Some(body(n, body_base64)?);
        }
        (Record::HubKey { hex }, _) if hex::decode(hex).map_or(true, |k| k.len() < 16) => {
            return Err(malformed(n, "hub_key is not hex of 16 bytes or more"));
        }
        (
            Record::Ping {
                content_type,
                body_base64,
                ..
            },
            _,
        ) => {
            if content_type.is_some() != body_base64.is_some() {
                return Err(malformed(
                    n,
                    "a fat ping needs both content_type and body_base64",
                ));
            }
            if let Some(b) = body_base64 {
                decoded = Some(body(n, b)?);
            }
        }
        (Record::Subscription(s), _)
            if crate::storage::destination_of(&s.callback) != s.destination =>
        {
            return Err(malformed(
                n,
                "subscription destination does not match its callback",
            ));
        }
        _ => {}
    }
    Ok((r, decoded))
}

/// The checked records of a backup, line by line, each with its decoded body; an empty backup
/// is an error.
fn records<R: BufRead>(
    input: R,
) -> impl Iterator<Item = Result<(Record, Option<bytes::Bytes>), BackupError>> {
    let mut seen = 0u64;
    let mut lines = input.lines().enumerate();
    std::iter::from_fn(move || {
        for (i, l) in lines.by_ref() {
            let l = match l {
                Ok(l) => l,
                Err(e) => return Some(Err(BackupError::Read(e))),
            };
            if l.trim().is_empty() {
                continue;
            }
            seen += 1;
            return Some(parse_line(i + 1, &l, seen == 1));
        }
        if seen == 0 {
            seen = 1; // report it once
            return Some(Err(malformed(1, "empty backup: no header")));
        }
        None
    })
}

/// Checks a whole backup without writing anything; returns how many records it holds.
pub fn check<R: BufRead>(input: R) -> Result<u64, BackupError> {
    let mut count = 0;
    for r in records(input) {
        r?;
        count += 1;
    }
    Ok(count)
}

/// Writes the records of a backup (checked before with [`check`]) into an empty store, one by
/// one as they are read, then makes later ids follow the restored ones.
pub async fn import<R: BufRead>(
    store: &Storage,
    input: R,
    total: u64,
    progress: &mut Progress,
) -> Result<Counts, BackupError> {
    if let Some(what) = first_content(store).await? {
        return Err(BackupError::NotEmpty(what));
    }
    progress.set_total(total);
    let mut n = Counts::default();
    let mut max_id = 0u64;
    for r in records(input) {
        let (record, body) = r?;
        restore(store, record, body, &mut n, &mut max_id).await?;
        progress.inc(1);
    }
    store.advance_ids_past(max_id).await?;
    store.flush().await?;
    progress.finish();
    Ok(n)
}

/// Writes one checked record; `body` is its decoded body, if it has one.
async fn restore(
    store: &Storage,
    r: Record,
    body: Option<bytes::Bytes>,
    n: &mut Counts,
    max_id: &mut u64,
) -> Result<(), BackupError> {
    match r {
        Record::Header { .. } => {}
        Record::Subscription(s) => {
            store.subs.upsert(s).await?;
            n.subscriptions += 1;
        }
        Record::Intent(intent) => {
            *max_id = (*max_id).max(intent.id);
            store.subs.put_intent(intent).await?;
            n.intents += 1;
        }
        Record::Ping {
            id,
            topic,
            received_ms,
            content_type,
            ..
        } => {
            *max_id = (*max_id).max(id);
            let fat = match (content_type, body) {
                (Some(content_type), Some(body)) => Some(FatContent {
                    content_type,
                    body: body.to_vec(),
                }),
                _ => None,
            };
            let ping = Ping {
                id,
                topic,
                fat,
                received_ms,
            };
            store.publish.put_pings(vec![ping]).await?;
            n.pings += 1;
        }
        Record::TopicState { topic, state } => {
            store.publish.put_topic_state(&topic, state).await?;
            n.topic_states += 1;
        }
        Record::Event {
            seq,
            topic,
            topic_seq,
            origin,
            origin_seq,
            path,
            content_type,
            created_ms,
            document,
            ..
        } => {
            if document {
                // Merged documents are numbered from the id counter.
                *max_id = (*max_id).max(seq & !crate::storage::DELIVERY_DOC);
            }
            let event = Event {
                seq,
                topic,
                topic_seq,
                origin,
                origin_seq,
                path,
                content_type,
                body: body.unwrap_or_default(),
                created_ms,
            };
            store.log.restore(event, document).await?;
            n.events += 1;
        }
        Record::Job(j) => {
            store.delivery.put_job(j).await?;
            n.jobs += 1;
        }
        Record::Retry(r) => {
            store.delivery.put_retry(r).await?;
            n.retries += 1;
        }
        Record::DeadLetter(d) => {
            *max_id = (*max_id).max(d.id);
            store.delivery.put_dead_letter(d).await?;
            n.dead_letters += 1;
        }
        Record::HostedTopic(t) => {
            store.hosted.create_hosted(t).await?;
            n.hosted_topics += 1;
        }
        Record::HostedEntry { name, entry } => {
            store.hosted.restore_hosted_entry(&name, entry).await?;
            n.hosted_entries += 1;
        }
        Record::HostedLast { name, last } => {
            store.hosted.restore_hosted_last(&name, last).await?;
        }
        Record::HubKey { hex } => {
            // Checked in `check`: valid hex.
            let key = hex::decode(hex).unwrap_or_default();
            if !key.is_empty() {
                store.log.restore_hub_key(key).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use std::sync::Arc;

    fn store() -> Storage {
        Storage::new(Arc::new(MemoryStore::new()))
    }

    #[tokio::test]
    async fn a_backup_restores_into_another_store() {
        let a = store();
        a.subs
            .upsert(Subscription {
                topic: "http://t.example/feed".into(),
                callback: "http://c.example/cb".into(),
                destination: "http://c.example:80".into(),
                secret: Some("s3cret".into()),
                lease_seconds: 60,
                expires_ms: 99,
                created_ms: 1,
            })
            .await
            .unwrap();
        a.log
            .restore(
                Event {
                    seq: 40,
                    topic: "http://t.example/feed".into(),
                    topic_seq: 3,
                    origin: "0123456789abcdef".into(),
                    content_type: "application/octet-stream".into(),
                    body: bytes::Bytes::from_static(&[0, 255, 10]),
                    created_ms: 5,
                    origin_seq: 9,
                    path: vec!["0123456789abcdef".into(), "fedcba9876543210".into()],
                },
                false,
            )
            .await
            .unwrap();
        let hosted = crate::storage::hosted::HostedTopic {
            name: "b".into(),
            token: "owner-token-0123456789".into(),
            title: "B".into(),
            created_ms: 1,
            max_entries: 10,
            max_age_ms: 0,
            trail: 2,
            policy: crate::storage::hosted::PostingPolicy::AllowList,
            allow: vec!["a@example.org".into()],
            mirror_of: None,
        };
        a.hosted.create_hosted(hosted.clone()).await.unwrap();
        let entry = crate::storage::hosted::HostedEntry {
            key: "k".into(),
            seq: 7,
            id: "urn:k".into(),
            title: "t".into(),
            ..Default::default()
        };
        a.hosted
            .restore_hosted_entry("b", entry.clone())
            .await
            .unwrap();
        // Entries 8 and 9 were deleted: their numbers are not given again after a restore.
        a.hosted.restore_hosted_last("b", 9).await.unwrap();
        let mut out = Vec::new();
        let counts = export(&a, &mut out, 7, &mut Progress::hidden())
            .await
            .unwrap();
        assert_eq!((counts.subscriptions, counts.events), (1, 1));
        assert_eq!((counts.hosted_topics, counts.hosted_entries), (1, 1));

        let b = store();
        let total = check(out.as_slice()).unwrap();
        let restored = import(&b, out.as_slice(), total, &mut Progress::hidden())
            .await
            .unwrap();
        assert_eq!(restored, counts);
        assert_eq!(
            b.subs
                .get("http://t.example/feed", "http://c.example/cb")
                .await
                .unwrap(),
            a.subs
                .get("http://t.example/feed", "http://c.example/cb")
                .await
                .unwrap()
        );
        assert_eq!(
            b.log.event(40).await.unwrap(),
            a.log.event(40).await.unwrap()
        );
        assert_eq!(
            b.log.bounds().await.unwrap().lead,
            40,
            "the lead follows restored events"
        );
        assert_eq!(b.hosted.hosted("b").await.unwrap(), Some(hosted));
        assert_eq!(
            b.log.hub_key(),
            a.log.hub_key(),
            "mailed links keep working"
        );
        assert_eq!(b.hosted.hosted_last("b").await.unwrap(), 9);
        assert_eq!(
            b.hosted.hosted_entry_by_id("b", "urn:k").await.unwrap(),
            Some(entry)
        );

        // Not into a store that has content.
        let err = import(&b, out.as_slice(), total, &mut Progress::hidden())
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackupError::NotEmpty("subscriptions")),
            "{err}"
        );
    }

    #[test]
    fn malformed_backups_name_the_line() {
        let err = check("{\"kind\":\"job\"}\n".as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("line 1:"), "{err}");
        let good = format!(
            "{{\"kind\":\"header\",\"format\":\"{FORMAT}\",\"version\":{VERSION},\"created_ms\":0}}\n"
        );
        let bad = format!(
            "{good}{{\"kind\":\"event\",\"seq\":1,\"topic\":\"t\",\"content_type\":\"x\",\"created_ms\":0,\"body_base64\":\"!!\"}}\n"
        );
        let err = check(bad.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("line 2: body"), "{err}");
        let err = check("".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("empty backup"), "{err}");
        assert_eq!(check(good.as_bytes()).unwrap(), 1);
    }
}
